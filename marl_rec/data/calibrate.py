"""Fit the ``calibrated`` scenario's parameters on the training part of an interaction log.

``calibrate(log, out, options)`` splits the log in time (the first ``train_fraction`` of
interactions train; the rest is held out for ``marl-rec validate``), fits on the training part

- item content embeddings: the item text through a sentence encoder, the genres, or a
  factorisation of the interactions (with content for the items it has not seen), the one
  that ranks best on a validation slice (``embedding: auto``);
- item popularity (standardised log interactions) and quality (smoothed mean rating);
- users' interest (weighted mean of what they consumed), activity (interactions) and leaving;
- the MNL choice model's affinity scale and popularity weight by maximum likelihood on
  impressions built from the log, and its no-click logit from an assumed click-through rate;
- engagement (watch fraction) from the ratings; topics by k-means; catalogue growth;

and writes ``<out>/simulator.npz`` (read by ``marl_rec.envs.parts.calibrated``) and
``<out>/calibration.json`` (the options, the fitted scalars, figures and the log's paths).
docs/calibration.md states the assumptions.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from marl_rec import cache_root
from marl_rec.data.offline_metrics import (interaction_weights, interests_before, rank_of_positive,
                                           ranking_metrics, sample_negatives)
from marl_rec.data.logs import InteractionLog
from marl_rec.data.text import project
from marl_rec.envs.config import ConfigError
from marl_rec.envs.parts.calibrated import ARRAYS, SIMULATOR_FILE

PARAMS_FILE = "calibration.json"
USERS_FILE = "users.npz"  # every user's fitted popularity weight, by user id (marl-rec validate reads it)
NEW_ITEM_POPULARITY = 0.0
EMBEDDINGS = ("auto", "text", "genres", "mf")
DEFAULT_CACHE = cache_root() / "text"  # text embeddings, beside the compiled simulator's numba/


@dataclass
class CalibrationOptions:
    """What ``marl-rec calibrate`` fits and how (each field is a command-line flag)."""

    train_fraction: float = 0.8  # the first share of interactions (by time) to fit on
    embedding: str = "auto"  # content embedding: auto (best on validation), text, genres, mf
    dim: int = 16  # content dimensions; the simulator's embedding_dim is dim + 1 (popularity)
    num_topics: int = 16  # k-means topics of the content embeddings (fatigue, creators' topics)
    target_ctr: float = 0.5  # assumed share of impressions that get a click (sets the no-click logit)
    slate_size: int = 3  # items per constructed impression
    negatives: int = 9  # random items per constructed impression in the likelihood fit
    max_fit_events: int = 30000  # interactions used to fit the choice model (a random subset)
    validation_events: int = 4000  # held-back training interactions that choose the embedding (auto)
    use_text: bool = True  # encode item text when the log has titles or tags (--no-text: never)
    text_model: str | None = None  # a local transformers model directory (default: all-MiniLM-L6-v2)
    cache_dir: str = str(DEFAULT_CACHE)
    seed: int = 0
    log_path: str = ""
    items_path: str | None = None
    tags_path: str | None = None
    figures: dict = field(default_factory=dict)


def train_mask(log: InteractionLog, fraction: float) -> tuple[np.ndarray, float]:
    split = log.split_time(fraction)
    return log.timestamp <= split, split


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 1e-9, x / np.maximum(norm, 1e-9), 0.0)


def factorisation(log: InteractionLog, mask: np.ndarray, dim: int, content: np.ndarray | None) -> np.ndarray:
    """Item factors of a truncated SVD of the training user x item matrix (1 per interaction,
    rows normalised), unit rows; items without training interactions get the factors a ridge
    regression predicts from their content (zero without content)."""
    users, items = log.user[mask], log.item[mask]
    matrix = np.zeros((log.num_users, log.num_items), np.float32)
    np.add.at(matrix, (users, items), 1.0)
    matrix /= np.maximum(np.sqrt((matrix ** 2).sum(1, keepdims=True)), 1e-9)
    _, s, vt = np.linalg.svd(matrix, full_matrices=False)
    factors = (vt[:dim].T * np.sqrt(s[:dim])).astype(np.float64)
    seen = np.zeros(log.num_items, bool)
    seen[items] = True
    if content is not None and (~seen).any() and seen.sum() > 1:
        x = np.concatenate([content, np.ones((len(content), 1))], axis=1)
        xs = x[seen]
        coef = np.linalg.solve(xs.T @ xs + 1.0 * np.eye(x.shape[1]), xs.T @ factors[seen])
        factors[~seen] = x[~seen] @ coef
    elif (~seen).any():
        factors[~seen] = 0.0
    return _unit(factors)


def popularity_column(log: InteractionLog, mask: np.ndarray) -> np.ndarray:
    """(N,) standardised log(1 + training interactions) over the items seen in training; an
    item first seen later gets the mean, 0 (a new film is not assumed unpopular: it has had no
    time to be watched, and new items take a share of the held-out interactions)."""
    count = np.bincount(log.item[mask], minlength=log.num_items).astype(np.float64)
    raw = np.log1p(count)
    seen = count > 0
    z = (raw - raw[seen].mean()) / max(raw[seen].std(), 1e-9)
    return np.where(seen, z, NEW_ITEM_POPULARITY)


def quality_column(log: InteractionLog, mask: np.ndarray, prior: float = 5.0) -> np.ndarray:
    """(N,) standardised mean rating, shrunk toward the global mean by ``prior`` pseudo-ratings."""
    rating, items = log.rating[mask], log.item[mask]
    total = np.bincount(items, weights=rating, minlength=log.num_items)
    count = np.bincount(items, minlength=log.num_items)
    mean = (total + prior * rating.mean()) / (count + prior)
    seen = count > 0
    z = (mean - mean[seen].mean()) / max(mean[seen].std(), 1e-9)
    return np.where(seen, z, 0.0)


def constructed_slates(log: InteractionLog, events: np.ndarray, size: int, rng) -> np.ndarray:
    """(n, size) item slates: each event's consumed item first, then random items that existed
    and that its user never consumed (the impressions the log does not record)."""
    negatives = sample_negatives(log, events, size - 1, rng)
    return np.concatenate([log.item[events, None], negatives], axis=1)


def fit_choice(affinity: np.ndarray, popularity: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Maximum likelihood (Newton) of the conditional logit P(column 0) with logit a·affinity +
    b·popularity over each constructed slate's valid columns. Returns (a, b)."""
    theta = np.zeros(2)
    x = np.stack([affinity, popularity], axis=-1)  # (n, S, 2)
    for _ in range(50):
        z = np.where(valid, x @ theta, -np.inf)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        mean_x = (p[..., None] * x).sum(1)
        grad = (x[:, 0] - mean_x).sum(0)
        centred = x - mean_x[:, None]
        hess = -np.einsum("ns,nsi,nsj->ij", p, centred, centred) - 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    return float(theta[0]), float(theta[1])


def no_click_logit(logits: np.ndarray, valid: np.ndarray, target_ctr: float) -> float:
    """The no-click logit at which the mean click probability over these slates is ``target_ctr``."""
    lse = np.log(np.where(valid, np.exp(logits - logits.max(1, keepdims=True)), 0).sum(1)) + logits.max(1)
    low, high = -50.0, 50.0
    for _ in range(100):  # the click rate falls as the no-click logit rises
        mid = (low + high) / 2
        ctr = np.mean(1.0 / (1.0 + np.exp(mid - lse)))
        low, high = (mid, high) if ctr > target_ctr else (low, mid)
    return float((low + high) / 2)


def fit_engagement(affinity: np.ndarray, quality: np.ndarray, rating: np.ndarray) -> tuple[float, float, float]:
    """Least squares of logit(rating as a share of the scale) on affinity, quality and 1:
    (engagement_affinity, engagement_quality, engagement_bias); slopes kept >= 0 (the config's range)."""
    share = rating_share(rating, rating.min(), rating.max())
    target = np.log(share / (1 - share))
    x = np.stack([affinity, quality, np.ones(len(rating))], axis=1)
    coef = np.linalg.lstsq(x, target, rcond=None)[0]
    return max(float(coef[0]), 0.0), max(float(coef[1]), 0.0), float(np.clip(coef[2], -10, 10))


def rating_share(rating: np.ndarray, lowest: float, highest: float) -> np.ndarray:
    """A rating as a share of the scale [lowest, highest], clipped to [0.02, 0.98]: the watch
    fraction (engagement) the calibrated users' watch time is fitted to (0.5 on a one-value scale)."""
    if highest <= lowest:
        return np.full(len(rating), 0.5)
    return np.clip((np.asarray(rating, np.float64) - lowest) / (highest - lowest), 0.02, 0.98)


def kmeans(x: np.ndarray, k: int, rng, iterations: int = 25) -> tuple[np.ndarray, np.ndarray]:
    k = max(1, min(k, len(x)))
    centres = x[rng.choice(len(x), size=k, replace=False)]
    for _ in range(iterations):
        label = np.argmax(x @ centres.T, axis=1)  # unit rows: nearest = largest cosine
        for j in range(k):
            members = x[label == j]
            if len(members):
                centres[j] = members.mean(0)
        centres = _unit(centres)
    return np.argmax(x @ centres.T, axis=1), centres


@dataclass
class Fit:
    """What the simulator needs, fitted on the rows of ``mask``."""

    content: np.ndarray  # (N, k)
    popularity: np.ndarray  # (N,)
    quality: np.ndarray  # (N,)
    scalars: dict  # affinity_scale, popularity_weight, no_click_logit, engagement_*
    liked: float  # rating at or above which an interaction counts fully toward interest
    user_popularity: np.ndarray  # (num_users,) each user's popularity weight (the shared one without training rows)


def fit(log: InteractionLog, mask: np.ndarray, content: np.ndarray, options: CalibrationOptions, rng) -> Fit:
    # unit item embeddings [sqrt(1 - q^2) · content, q]: q is the standardised log popularity
    # scaled into [-1/2, 1/2], so the content part keeps at least 87% of its length and the
    # simulator's cosine-based measures (intra-list diversity) stay meaningful
    z = popularity_column(log, mask)
    popularity = z / (2.0 * max(np.abs(z).max(), 1e-9))
    content = content * np.sqrt(1.0 - popularity ** 2)[:, None]
    quality = quality_column(log, mask)
    liked = float(np.median(log.rating[mask]))
    weights = interaction_weights(log.rating, liked)
    rows = np.nonzero(mask)[0]
    events = rng.choice(rows, size=min(options.max_fit_events, len(rows)), replace=False)
    interest = interests_before(log, content, weights)[events]  # (n, k), before each event
    has_history = np.linalg.norm(interest, axis=1) > 0
    events, interest = events[has_history], interest[has_history]
    slates = constructed_slates(log, events, 1 + options.negatives, rng)
    valid = slates >= 0
    affinity = np.einsum("nk,nsk->ns", interest, content[np.maximum(slates, 0)])
    a, b = fit_choice(affinity, popularity[np.maximum(slates, 0)], valid)
    a = max(a, 1e-3)
    user_popularity = per_user_popularity(log, events, a * affinity, b, popularity[np.maximum(slates, 0)], valid) / a
    shown = slice(0, options.slate_size)
    logits = a * affinity[:, shown] + b * popularity[np.maximum(slates[:, shown], 0)]
    n0 = no_click_logit(logits, valid[:, shown], options.target_ctr)
    e_aff, e_q, e_b = fit_engagement(affinity[:, 0] + (b / a) * popularity[slates[:, 0]], quality[slates[:, 0]],
                                     log.rating[events])
    scalars = {"affinity_scale": a, "popularity_weight": b / a, "no_click_logit": float(np.clip(n0, -20, 20)),
               "engagement_affinity": e_aff, "engagement_quality": e_q, "engagement_bias": e_b}
    return Fit(content, popularity, quality, scalars, liked, user_popularity)


def per_user_popularity(log, events, content_logit, b, popularity, valid, prior_events: float = 5.0) -> np.ndarray:
    """(num_users,) each user's popularity logit weight: one Newton step of the user's own
    conditional-logit likelihood from the shared weight ``b``, shrunk toward it by a prior worth
    ``prior_events`` events (users differ in how mainstream they are; a niche user's weight is
    low). Users without fitting events keep ``b``."""
    z = np.where(valid, content_logit + b * popularity, -np.inf)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mean = (p * np.where(valid, popularity, 0)).sum(1)
    var = (p * np.where(valid, popularity, 0) ** 2).sum(1) - mean ** 2
    users = log.user[events]
    grad = np.bincount(users, weights=popularity[:, 0] - mean, minlength=log.num_users)
    curvature = np.bincount(users, weights=var, minlength=log.num_users)
    return b + grad / (curvature + prior_events * max(var.mean(), 1e-6))


def next_item_scores(fit_: Fit, interest: np.ndarray, candidates: np.ndarray, users: np.ndarray) -> np.ndarray:
    """The choice model's logit of each candidate (the simulator's user model) for ``users``: (n, C)."""
    items = np.maximum(candidates, 0)
    weight = fit_.user_popularity[users][:, None]
    return fit_.scalars["affinity_scale"] * (np.einsum("nk,nck->nc", interest, fit_.content[items])
                                             + weight * fit_.popularity[items])


def quick_hit_rate(log: InteractionLog, mask: np.ndarray, events: np.ndarray, fit_: Fit, rng) -> float:
    """Hit rate@10 of the fitted user model on ``events`` against 99 sampled negatives."""
    interest = interests_before(log, fit_.content, interaction_weights(log.rating, fit_.liked))[events]
    candidates = constructed_slates(log, events, 100, rng)
    rank = rank_of_positive(next_item_scores(fit_, interest, candidates, log.user[events]), candidates >= 0, rng)
    return float(ranking_metrics(rank)[0].mean())


def content_embeddings(log: InteractionLog, mask: np.ndarray, options: CalibrationOptions, say=print) -> dict:
    """The candidate content embeddings (N, dim), by name: text and genres (when the log has
    them) and mf (the factorisation of ``mask``'s interactions; items it has not seen get what a
    ridge regression predicts from their text and genres)."""
    out, features = {}, []
    wanted = EMBEDDINGS[1:] if options.embedding == "auto" else (options.embedding,)
    skipped = "skipped" in (options.figures.get("text") or {})  # an earlier call found no encoder: said once
    if options.use_text and not skipped and ("text" in wanted or "mf" in wanted) and (any(log.title) or any(log.tags)):
        from marl_rec.data.text import encode_items, item_text

        texts = [item_text(*x) for x in zip(log.title, log.genres, log.tags)]
        try:
            raw, summary = encode_items(texts, Path(options.cache_dir).expanduser(), options.text_model, log=say)
            options.figures.setdefault("text", summary)  # the first call: the one that encoded
            out["text"] = project(raw, options.dim)
            features.append(out["text"])
        except ConfigError as err:
            if options.embedding == "text" or options.text_model:
                raise
            options.figures["text"] = {"skipped": str(err)}  # calibration.json's "text" says why
            say(f"text: skipped ({err})")
    if log.genre_names():
        genres = log.genre_matrix()
        out["genres"] = project(genres, options.dim)
        features.append(genres / np.maximum(np.sqrt(genres.sum(1, keepdims=True)), 1.0))
    if "mf" in wanted:
        out["mf"] = factorisation(log, mask, options.dim, np.concatenate(features, 1) if features else None)
    out = {name: v for name, v in out.items() if name in wanted}
    if options.embedding not in ("auto", *out):
        raise ConfigError(f"--embedding {options.embedding}: the log has no {options.embedding} "
                          "(text needs --items with titles or --tags, and the text encoder; genres needs --items "
                          "with genres)")
    return out


def calibrate(log: InteractionLog, out, options: CalibrationOptions | None = None, say=print) -> dict:
    """Fit on the first ``train_fraction`` of ``log`` and write ``out``/simulator.npz and
    calibration.json; returns the JSON's content."""
    options = _replace(options or CalibrationOptions(), log_path=log.source, items_path=log.items_source,
                       tags_path=log.tags_source)
    if options.embedding not in EMBEDDINGS:
        raise ConfigError(f"--embedding {options.embedding!r}; allowed values: {', '.join(EMBEDDINGS)}")
    if len(log) < 10:
        raise ConfigError(f"{log.source}: {len(log)} interactions are too few to calibrate on (at least 10)")
    start = time.perf_counter()
    rng = np.random.default_rng(options.seed)
    mask, split = train_mask(log, options.train_fraction)
    say(f"log: {len(log)} interactions, {log.num_users} users, {log.num_items} items; training: the first "
        f"{int(mask.sum())} (to time {split:.0f}), held out: {int((~mask).sum())}")

    choice = {}
    if options.embedding == "auto":
        # choose on the last slice of the training period, fitted on what precedes it
        inner, inner_split = train_mask(log, options.train_fraction * 0.875)
        slice_rows = np.nonzero(mask & ~inner)[0]
        events = rng.choice(slice_rows, size=min(options.validation_events, len(slice_rows)), replace=False)
        candidates = content_embeddings(log, inner, options, say)
        for name, content in candidates.items():
            choice[name] = quick_hit_rate(log, inner, events, fit(log, inner, content, options, rng), rng)
        best = max(choice, key=choice.get)
        say("embedding: validation hit rate@10 " + ", ".join(f"{k} {v:.3f}" for k, v in choice.items())
            + f" -> {best}")
        options = _replace(options, embedding=best)
    content = content_embeddings(log, mask, _replace(options, embedding=options.embedding), say)[options.embedding]
    fitted = fit(log, mask, content, options, rng)
    arrays = simulator_arrays(log, mask, split, fitted, options, rng)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / SIMULATOR_FILE, **arrays)
    train_users = np.unique(log.user[mask])
    params = {
        **{k: v for k, v in asdict(options).items() if k != "figures"},
        "embedding_dim": int(arrays["item_embedding"].shape[1]),
        "split_time": split, "end_time": float(log.timestamp[-1]),
        "liked_rating": fitted.liked, "fitted": fitted.scalars, "embedding_validation_hit_rate": choice,
        "items": int(log.num_items), "users": int(len(train_users)), "interactions_train": int(mask.sum()),
        "interactions_held_out": int((~mask).sum()), "text": options.figures.get("text"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    np.savez(out / USERS_FILE, user_ids=log.user_ids, popularity_weight=fitted.user_popularity)
    (out / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")
    s = fitted.scalars
    say(f"fitted: affinity_scale {s['affinity_scale']:.3f}, popularity weight {s['popularity_weight']:.3f}, "
        f"no_click_logit {s['no_click_logit']:.3f} (target CTR {options.target_ctr}), engagement "
        f"{s['engagement_affinity']:.3f}·affinity + {s['engagement_quality']:.3f}·quality + {s['engagement_bias']:.3f}")
    say(f"wrote {out / SIMULATOR_FILE} and {out / PARAMS_FILE} in {params['seconds']} s")
    return params


def _replace(options: CalibrationOptions, **changes) -> CalibrationOptions:
    values = asdict(options)
    values.update(changes)
    values["figures"] = options.figures  # shared: the text summary is recorded once
    return CalibrationOptions(**values)


def simulator_arrays(log: InteractionLog, mask: np.ndarray, split: float, fitted: Fit, options, rng) -> dict:
    """The arrays of simulator.npz (``marl_rec.envs.parts.calibrated.ARRAYS``)."""
    s = fitted.scalars
    embedding = np.concatenate([fitted.content, fitted.popularity[:, None]], axis=1).astype(np.float32)
    has_content = np.linalg.norm(fitted.content, axis=1) > 0
    topic = np.zeros(log.num_items, np.int64)
    label, centres = kmeans(fitted.content[has_content], options.num_topics, rng)
    topic[has_content] = label
    mean_pop = np.array([fitted.popularity[topic == t].mean() if (topic == t).any() else 0.0
                         for t in range(len(centres))])
    users = np.unique(log.user[mask])
    train = InteractionLog(log.user[mask], log.item[mask], log.rating[mask], log.timestamp[mask], log.user_ids,
                           log.item_ids)
    weights = interaction_weights(train.rating, fitted.liked)
    total = np.zeros((log.num_users, fitted.content.shape[1]))
    np.add.at(total, train.user, fitted.content[train.item] * weights[:, None])
    interest = _unit(total[users])
    activity = np.bincount(train.user, minlength=log.num_users)[users].astype(np.float64)
    end = float(log.timestamp[-1])
    arrival = (log.first_seen() - split) / max(end - split, 1e-9)
    arrays = {
        "item_embedding": embedding,
        "item_topic": topic,
        "item_quality": fitted.quality.astype(np.float32),
        "item_arrival": arrival,
        "topic_centres": np.concatenate([centres, mean_pop[:, None]], axis=1).astype(np.float32),
        "user_interest": np.concatenate([interest, fitted.user_popularity[users, None]], 1).astype(np.float32),
        "user_activity": activity,
        **{name: np.float64(s[name]) for name in ("affinity_scale", "no_click_logit", "engagement_affinity",
                                                  "engagement_quality", "engagement_bias")},
    }
    assert set(arrays) == set(ARRAYS)
    return arrays
