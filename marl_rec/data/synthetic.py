"""A small synthetic interaction log in the generic columns, for tests and demonstrations.

Users prefer one of a few latent tastes; each item has a taste (its genres say which) and an
appeal; a user rates items of its taste higher and meets appealing items more often. Items
enter the catalogue over time. Written as three CSV files: ``log.csv`` (user, item, score,
timestamp), ``items.csv`` (item, title, genres) and ``tags.csv`` (user, item, tag).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

TASTES = (("Action", "Thriller"), ("Comedy", "Romance"), ("Drama",), ("Animation", "Children"), ("Horror",))
WORDS = ("space", "love", "heist", "family", "ghost", "war", "robot", "music")


def write_synthetic_log(folder, num_users: int = 40, num_items: int = 150, per_user: int = 30, seed: int = 0) -> dict:
    """Write the three files into ``folder``; returns their paths (keys log, items, tags)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    taste = rng.integers(0, len(TASTES), size=num_items)
    appeal = rng.normal(size=num_items)
    birth = np.sort(rng.uniform(0, 1000, size=num_items))
    birth[: num_items // 2] = 0.0  # half the catalogue exists from the start
    user_taste = rng.integers(0, len(TASTES), size=num_users)
    rows = []
    for u in range(num_users):
        start = rng.uniform(0, 900)
        times = np.sort(start + rng.uniform(0, 300, size=rng.integers(per_user // 2, per_user * 2)))
        seen: set[int] = set()
        for t in times:
            available = np.nonzero(birth <= t)[0]
            available = available[~np.isin(available, list(seen))]
            if not len(available):
                break
            logit = 1.5 * appeal[available] + 2.0 * (taste[available] == user_taste[u])
            p = np.exp(logit - logit.max())
            i = int(rng.choice(available, p=p / p.sum()))
            seen.add(i)
            score = np.clip(np.round(3 + 1.5 * (taste[i] == user_taste[u]) + 0.5 * appeal[i] + rng.normal(0, 0.7)),
                            1, 5)
            rows.append((f"u{u}", f"i{i}", float(score), int(1_000_000 + 1000 * t)))
    rows.sort(key=lambda r: r[3])
    paths = {"log": folder / "log.csv", "items": folder / "items.csv", "tags": folder / "tags.csv"}
    with open(paths["log"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "score", "timestamp"])
        w.writerows(rows)
    with open(paths["items"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "title", "genres"])
        for i in range(num_items):
            w.writerow([f"i{i}", f"Film {i} about {WORDS[i % len(WORDS)]}", "|".join(TASTES[taste[i]])])
    with open(paths["tags"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "tag"])
        for i in range(0, num_items, 3):
            w.writerow(["u0", f"i{i}", WORDS[(i + taste[i]) % len(WORDS)]])
    return {k: str(v) for k, v in paths.items()}
