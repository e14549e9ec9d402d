"""The compiled round's kernels on hand-written inputs, and their on-disk cache."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from marl_rec.envs import compiled
from marl_rec.envs._observation_kernels import ITEM_COLUMNS_AT, item_features
from marl_rec.envs._round_kernels import update_popular
from marl_rec.envs.features import ITEM_COLUMNS
from marl_rec.envs.parts._sampler_kernels import sample_mixed
from marl_rec.envs.parts._slate_kernels import random_slates
from marl_rec.envs.views import CatalogueView, CreatorsView


def test_a_stratum_made_only_of_popular_picks_sends_the_draw_to_an_item_the_user_lacks():
    """head 100: offset o is slot 99 − o. 32 live items, window 4; one fresh, ten popular and
    four random older candidates. The pool is ten items, so every one is picked; seven of them
    fill the first older stratum, offsets [4, 11), which then holds nothing the user lacks."""
    head, capacity, count, window = 100, 100, 32, 4
    pool = np.array([95, 94, 93, 92, 91, 90, 89, 88, 81, 74], np.int64)  # offsets 4..11, 18, 25
    candidates = np.empty((1, 15), np.int64)
    position_of = np.full(capacity, -1, np.int64)
    sample_mixed(np.zeros((1, 15)), (head, count, capacity), (window, 1, 10, 14), pool, position_of, candidates)
    # fresh: offset 0; the ten picks; stratum [4, 11): every item a pick, so the first older item the
    # user lacks (offset 12); then each later draw (offsets 11, 18, 25: picks) moves on past the row
    assert candidates[0].tolist() == [99, *pool.tolist(), 99 - 12, 99 - 13, 99 - 19, 99 - 26]
    assert (position_of == -1).all()  # the scratch is left clean


def test_older_draws_move_off_popular_picks_within_their_stratum():
    head, capacity, count, window = 100, 100, 100, 10
    pool = np.array([89, 50], np.int64)  # offsets 10 and 49
    candidates = np.empty((1, 4), np.int64)
    position_of = np.full(capacity, -1, np.int64)
    # fresh: 1 (offset 0); popular: 1 stratum over 2 eligible, draw 0.0 -> position 0 (slot 89);
    # older: 2 strata [10, 55) and [55, 100); the first draw lands on offset 10 = slot 89 (a pick)
    draws = np.array([[0.0, 0.0, 0.0, 0.5]])
    sample_mixed(draws, (head, count, capacity), (window, 1, 1, 3), pool, position_of, candidates)
    assert candidates[0].tolist() == [99, 89, 88, 99 - (55 + 22)]  # moved one place along: offset 11


@pytest.mark.parametrize("mask_row, expected_set", [([1, 1, 1, 1, 1], None), ([0, 1, 0, 1, 0], {1, 3})])
def test_random_slates_take_allowed_candidates_first(mask_row, expected_set):
    allowed = np.array([mask_row] * 300, bool)
    rng = np.random.default_rng(4)
    out = np.empty((300, 3), np.int64)
    random_slates(allowed, rng.random((300, 3)), out)
    assert all(len(set(row)) == 3 for row in out.tolist())
    if expected_set:  # two allowed for a slate of three: both first, then a disallowed one
        assert all(set(row[:2]) == expected_set and row[2] in (0, 2, 4) for row in out.tolist())


def test_the_popular_pool_decays_adds_clicks_and_keeps_the_top_ties_to_the_lower_slot():
    cat_uid = np.array([10, 11, 12, 13, 14, 15], np.int64)
    pool = np.array([2, 4, 5], np.int64)
    score = np.array([3.0, 1.0, 2.0])
    pool_uid = np.array([12, 99, 15], np.int64)  # slot 4 was overwritten since: dropped
    total = np.zeros(6)
    clicks = np.array([0, 5, 0, 1], np.int64)
    update_popular(pool, score, pool_uid, cat_uid, clicks, 4, 0.5, total)
    # slot 2: 1.5; slot 5: 1.0 + 1 = 2.0; slot 0: 2 clicks = 2.0; slot 1: 1.0 -> top 3: 0 and 5 tie at 2.0
    assert pool.tolist() == [0, 5, 2]
    assert score.tolist() == [2.0, 2.0, 1.5]
    assert pool_uid.tolist() == [10, 15, 12]
    assert (total == 0).all()  # the scratch is left clean


def test_item_features_columns_follow_the_documented_order():
    assert list(ITEM_COLUMNS) == ["length", "age", "log_impressions", "ctr", "watch_per_click",
                                  "creator_share", "creator_on_platform"]  # the kernel's order
    out = np.empty((2, 2 + 8), np.float32)
    catalogue = CatalogueView(
        embedding=np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), topic=np.zeros(2, np.int64),
        quality=np.array([0.5, -1.0], np.float32), length=np.array([4.0, 2.0], np.float32), creator=np.array([1, -1]),
        birth=np.array([0, 8]), uid=np.array([0, 1]), impressions=np.array([3.0, 0.0], np.float32),
        clicks=np.array([1.0, 0.0], np.float32), watch_time=np.array([2.0, 0.0], np.float32))
    zeros = np.zeros(2)
    creators = CreatorsView(home_topic=np.zeros(2, np.int64), skill=zeros, viability=zeros,
                            active=np.array([False, True]), rounds_below=np.zeros(2, np.int64), exposure=zeros,
                            clicks=zeros, engagement=zeros, exposure_total=np.array([2.0, 6.0]),
                            published=np.zeros(2, np.int64))
    item_features(np.array([0, 1]), 10, tuple(catalogue), creators.exposure_total, creators.active, (4.0, 5.0, True),
                  ITEM_COLUMNS_AT, out)
    # creator 1 is the only one on the platform: the mean exposure is 6, its share 6 / 6 = 1
    np.testing.assert_allclose(out[0], [1, 0, 1.0, 2.0, np.log1p(3) / 5, 2 / 5, 0.5, 1.0, 1.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0, 1, 0.5, 0.4, 0.0, 0.5, 0.0, 0.0, 0.0, -1.0], rtol=1e-6)


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("MARL_REC_CACHE_DIR", str(tmp_path / "mine"))
    assert compiled.cache_dir() == tmp_path / "mine" / "numba"
    monkeypatch.delenv("MARL_REC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compiled.cache_dir() == tmp_path / "xdg" / "marl-rec" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert compiled.cache_dir() == tmp_path / "numba"


EPISODE = """
import json
import sys
from marl_rec.envs import compiled as config, ecosystem_v0
env = ecosystem_v0.parallel_env(num_users=8, num_creators=4, max_cycles=5)
obs, _ = env.reset(seed=0)
while env.agents:
    obs, *_ = env.step({a: env.action_space(a).sample(obs[a]["action_mask"].astype("int8")) for a in env.agents})
kernel_modules = [m for name, m in list(sys.modules.items()) if name.startswith("marl_rec.envs") and
                  name.endswith("_kernels")]
compiled = [f for m in kernel_modules for f in vars(m).values() if hasattr(f, "stats") and f.signatures]
print(json.dumps({"hits": sum(sum(f.stats.cache_hits.values()) for f in compiled),
                  "misses": sum(sum(f.stats.cache_misses.values()) for f in compiled),
                  "cache": str(config.cache_dir())}))
"""


@pytest.mark.slow
def test_a_fresh_cache_compiles_once_and_the_next_process_loads_it(tmp_path):
    """A user's first env compiles into the cache folder; the next process, as a Ray worker would
    be, loads every kernel from it and compiles nothing. (How long compiling takes is a figure of
    docs/benchmarks.md, not a test: this machine's speed drifts.)"""
    env = {**os.environ, "MARL_REC_CACHE_DIR": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)

    def run():
        done = subprocess.run([sys.executable, "-c", EPISODE], env=env, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["cache"] == str(tmp_path / "numba")
    assert first["misses"] > 0 and first["hits"] == 0
    assert any(p.suffix == ".nbi" for p in (tmp_path / "numba").rglob("*"))
    assert second["misses"] == 0 and second["hits"] > 0  # (helpers compiled into their callers count only once)


def test_an_unwritable_cache_folder_falls_back_to_the_temporary_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    env = {**os.environ, "MARL_REC_CACHE_DIR": str(blocker / "cache"), "TMPDIR": str(tmp_path / "tmp")}
    env.pop("NUMBA_CACHE_DIR", None)
    (tmp_path / "tmp").mkdir()
    code = "import numba, marl_rec.envs.compiled; print(numba.config.CACHE_DIR)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(tmp_path / "tmp" / f"marl-rec-{os.getuid()}" / "numba")
