"""``marl-rec validate DIR``: the calibrated simulator against the held-out later part of its log.

1. Next-item prediction: for each held-out interaction, the consumed item against 99 items
   that existed then and that the user never interacted with, ranked by the simulator's user
   choice model (its MNL logit, with the user's interest estimated from everything the user
   consumed before, as the simulator's users drift), by popularity in the training period, by
   popularity up to that moment, and at random: hit rate@10 and NDCG@10 with 95% intervals from
   a bootstrap over users.
2. Distributions: the simulator run with a logging-like recommender (the ``popularity``
   baseline over the ``mixed`` candidates) for as many users as the held-out period has, until
   they leave, against the held-out log: each item's share of interactions, interactions per
   user, genre shares; Kolmogorov–Smirnov distances and plots.
3. What it gets wrong, in plain words, in DIR/report.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from marl_rec.data.calibrate import PARAMS_FILE, USERS_FILE, Fit, constructed_slates, next_item_scores, train_mask
from marl_rec.data.offline_metrics import (interaction_weights, interests_before, ks_distance, rank_of_positive,
                                      ranking_metrics, user_bootstrap)
from marl_rec.data.logs import load_log
from marl_rec.envs.config import ConfigError, merge_overrides
from marl_rec.envs.parts.calibrated import load_calibration
from marl_rec.files import save_figure, write_file

KS_TARGET = 0.15
LOGGING_BEHAVIOURS = ("random", "popularity")  # the first is the logging-like recommender the KS targets use
MAX_ROUNDS = 20000  # validation episodes end when every user has left, or here
GROWTH_ROUNDS = 3000  # rounds over which the held-out period's new items arrive
HIT_RATIO_TARGET = 1.1


def read_params(directory: Path) -> dict:
    file = directory / PARAMS_FILE
    if not file.is_file():
        raise ConfigError(f"{directory}: no {PARAMS_FILE}; run `marl-rec calibrate LOG --out {directory}` first")
    return json.loads(file.read_text())


def next_item(log, mask, fit_: Fit, max_events: int | None, rng) -> dict:
    held = np.nonzero(~mask)[0]
    if max_events and len(held) > max_events:
        held = np.sort(rng.choice(held, size=max_events, replace=False))
    candidates = constructed_slates(log, held, 100, rng)
    valid = candidates >= 0
    items = np.maximum(candidates, 0)
    interest = interests_before(log, fit_.content, interaction_weights(log.rating, fit_.liked))[held]
    train_count = np.bincount(log.item[mask], minlength=log.num_items).astype(np.float64)
    # interactions of each item before each held-out event: the training counts plus the held-out rows before it
    before = np.zeros_like(candidates, dtype=np.float64)
    order = np.nonzero(~mask)[0]
    position = np.searchsorted(order, held)  # held-out rows before each event
    held_items = log.item[order]
    for j in range(candidates.shape[1]):  # one column at a time: (events,) lookups
        before[:, j] = _count_before(held_items, candidates[:, j], position)
    scores = {
        "simulator": next_item_scores(fit_, interest, candidates, log.user[held]),
        "popularity": train_count[items],
        "popularity_online": train_count[items] + before,
        "random": rng.random(candidates.shape),
    }
    hits, ndcgs = {}, {}
    for name, s in scores.items():
        hits[name], ndcgs[name] = ranking_metrics(rank_of_positive(s, valid, rng))
    users = log.user[held]
    hit_ci = user_bootstrap(hits, users, ratios=(("simulator", "popularity"), ("simulator", "popularity_online")))
    ndcg_ci = user_bootstrap(ndcgs, users)
    cold = np.linalg.norm(interest, axis=1) == 0
    return {"events": len(held), "users": len(np.unique(users)), "cold_events": int(cold.sum()),
            "new_item_events": int((train_count[log.item[held]] == 0).sum()), "hit": hit_ci, "ndcg": ndcg_ci,
            "hit_warm": {k: float(v[~cold].mean()) for k, v in hits.items()}}


def _count_before(held_items: np.ndarray, item: np.ndarray, position: np.ndarray) -> np.ndarray:
    """For each event e, how often ``item[e]`` occurs in ``held_items[:position[e]]``."""
    order = np.argsort(held_items, kind="stable")
    sorted_items = held_items[order]
    lo = np.searchsorted(sorted_items, item, side="left")
    hi = np.searchsorted(sorted_items, item, side="right")
    # positions of that item's occurrences are order[lo:hi] (ascending): count those < position
    occurrences = order  # sorted by item, then by position within an item
    out = np.empty(len(item))
    for e in range(len(item)):
        out[e] = np.searchsorted(occurrences[lo[e]:hi[e]], position[e])
    return out


def simulate(directory: Path, num_users: int, seed: int, max_cycles: int, behaviour: str = "random",
             overrides: dict | None = None) -> dict:
    """One episode of the calibrated simulator with recommender ``behaviour`` over ``num_users``
    users until they leave (or ``max_cycles``): clicks per user and per item. The held-out
    period's new items arrive over the episode's first 3000 rounds."""
    from marl_rec.behaviour_episodes import behaviour_config
    from marl_rec.envs.rounds import RoundRunner

    config = behaviour_config(behaviour, "calibrated", merge_overrides({
        "calibration": str(directory), "num_users": num_users, "max_cycles": max_cycles,
        "sampler": {"params": {"growth_rounds": GROWTH_ROUNDS}}}, overrides or {}))
    a = load_calibration(directory)
    if config.catalogue_size < len(a["item_topic"]):
        raise ConfigError(f"{directory}: the catalogue must hold every item of the log to count clicks per item")
    runner = RoundRunner(config)
    runner.reset(seed)
    while not runner.done:
        runner.play_round()
    sim = runner.sim
    cat = sim.state.catalogue
    live = cat.uid >= 0  # uid == item index: the log's items are published in order, once each
    per_item = np.bincount(cat.uid[live], weights=cat.clicks[live], minlength=len(a["item_topic"]))
    return {"per_user": sim.state.users.clicks.astype(np.float64), "per_item": per_item, "rounds": sim.state.t,
            "ctr": sim.metrics()["ctr"]}


def distributions(log, mask, directory: Path, seed: int, behaviour: str, overrides: dict | None = None) -> dict:
    held = ~mask
    held_users, per_user = np.unique(log.user[held], return_counts=True)
    sim = simulate(directory, len(held_users), seed, MAX_ROUNDS, behaviour, overrides)
    real_items = np.bincount(log.item[held], minlength=log.num_items)
    sim_items = np.round(sim["per_item"][: log.num_items]).astype(np.int64)
    # popularity shares at the same resolution: both thinned to the same number of interactions
    total = int(min(real_items.sum(), sim_items.sum()))
    thin = np.random.default_rng(seed)
    real_thin = thin.multivariate_hypergeometric(real_items.astype(np.int64), total)
    sim_thin = thin.multivariate_hypergeometric(sim_items, total)
    real_share = real_thin[real_thin > 0] / max(total, 1)
    sim_share = sim_thin[sim_thin > 0] / max(total, 1)
    genres = log.genre_matrix()
    names = log.genre_names()

    def genre_share(counts):
        g = counts @ genres
        return g / max(g.sum(), 1e-9)

    return {
        "behaviour": behaviour, "real_per_user": per_user.astype(np.float64), "sim_per_user": sim["per_user"],
        "real_share": real_share, "sim_share": sim_share,
        "ks_activity": ks_distance(per_user, sim["per_user"]), "ks_popularity": ks_distance(real_share, sim_share),
        "genre_names": names, "real_genre": genre_share(real_items) if names else np.zeros(0),
        "sim_genre": genre_share(sim_items) if names else np.zeros(0), "sim_rounds": sim["rounds"],
        "truncated": sim["rounds"] >= MAX_ROUNDS, "sim_ctr": sim["ctr"],
        "real_items": int((real_thin > 0).sum()), "sim_items": int((sim_thin > 0).sum()), "thinned_to": total,
        "top_share_real": _top_share(real_thin), "top_share_sim": _top_share(sim_thin),
    }


def _top_share(counts: np.ndarray, top: float = 0.01) -> float:
    """Share of interactions that go to the most popular 1% of the items that got any."""
    c = np.sort(counts[counts > 0])[::-1]
    k = max(1, int(round(top * len(c))))
    return float(c[:k].sum() / max(c.sum(), 1))


def plots(dist: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title, ks in ((axes[0], "share", "item popularity (share of interactions)", dist["ks_popularity"]),
                               (axes[1], "per_user", "interactions per user", dist["ks_activity"])):
        for who, colour in (("real", "tab:blue"), ("sim", "tab:orange")):
            v = np.sort(dist[f"{who}_{key}"])
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", color=colour,
                    label=("held-out log" if who == "real" else f"simulator ({dist['behaviour']} recommender)"))
        ax.set_xscale("log")
        ax.set_title(f"{title}\nKS = {ks:.3f}", fontsize=10)
        ax.set_ylabel("CDF")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out / "distributions.png", dpi=110)
    plt.close(fig)
    files.append("distributions.png")
    if len(dist["genre_names"]):
        fig, ax = plt.subplots(figsize=(10, 3.8))
        x = np.arange(len(dist["genre_names"]))
        ax.bar(x - 0.2, dist["real_genre"], 0.4, label="held-out log")
        ax.bar(x + 0.2, dist["sim_genre"], 0.4, label="simulator")
        ax.set_xticks(x, dist["genre_names"], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("share of genre labels")
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, out / "genres.png", dpi=110)
        plt.close(fig)
        files.append("genres.png")
    return files


def validate(directory, max_events: int | None = None, seed: int = 0, say=print, overrides: dict | None = None) -> dict:
    """Compare the calibration in ``directory`` with its held-out log; write DIR/report.md and
    its plots; return the figures. ``overrides`` (dotted EcosystemConfig keys) change the
    simulated episodes, e.g. ``{"user.interest_drift": 0.05}``."""
    start = time.perf_counter()
    directory = Path(directory)
    params = read_params(directory)
    log = load_log(params["log_path"], params.get("items_path"), params.get("tags_path"))
    mask, split = train_mask(log, params["train_fraction"])
    if abs(split - params["split_time"]) > 1e-6:
        raise ConfigError(f"{params['log_path']}: the log changed since it was calibrated (split time {split} vs "
                          f"{params['split_time']}); calibrate again")
    a = load_calibration(directory)
    fitted = params["fitted"]
    with np.load(directory / USERS_FILE, allow_pickle=False) as z:
        weight_of = dict(zip(z["user_ids"].tolist(), z["popularity_weight"].tolist()))
    user_popularity = np.array([weight_of.get(u, fitted["popularity_weight"]) for u in log.user_ids.tolist()])
    fit_ = Fit(np.asarray(a["item_embedding"][:, :-1], np.float64), np.asarray(a["item_embedding"][:, -1], np.float64),
               np.asarray(a["item_quality"], np.float64), fitted, params["liked_rating"], user_popularity)
    rng = np.random.default_rng(seed)
    ranking = next_item(log, mask, fit_, max_events, rng)
    say(f"next item ({ranking['events']} held-out interactions of {ranking['users']} users, 99 sampled negatives): "
        f"hit rate@10 simulator {ranking['hit']['simulator']}, popularity {ranking['hit']['popularity']}, "
        f"random {ranking['hit']['random']}; simulator / popularity {ranking['hit']['simulator/popularity']}")
    runs = [distributions(log, mask, directory, seed, behaviour, overrides) for behaviour in LOGGING_BEHAVIOURS]
    for d in runs:
        say(f"distributions (simulator with the {d['behaviour']} recommender, {len(d['sim_per_user'])} users, "
            f"{d['sim_rounds']} rounds): KS item popularity {d['ks_popularity']:.3f}, "
            f"KS interactions per user {d['ks_activity']:.3f}")
    dist = runs[0]
    files = plots(dist, directory)
    figures = {
        "hit_rate_at_10": {k: vars(v) for k, v in ranking["hit"].items()},
        "ndcg_at_10": {k: vars(v) for k, v in ranking["ndcg"].items()},
        "logging_policy": dist["behaviour"],
        "ks_item_popularity": dist["ks_popularity"], "ks_user_activity": dist["ks_activity"],
        "ks_by_policy": {d["behaviour"]: {"item_popularity": d["ks_popularity"], "user_activity": d["ks_activity"]}
                         for d in runs},
        "genre_total_variation": float(0.5 * np.abs(dist["real_genre"] - dist["sim_genre"]).sum())
        if len(dist["genre_names"]) else None,
        "overrides": overrides or {},
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_file(directory / "report.md", report_text(params, ranking, runs, files, figures))
    write_file(directory / "validation.json", json.dumps(figures, indent=2) + "\n")
    say(f"wrote {directory / 'report.md'} ({', '.join(files)}) in {figures['seconds']} s")
    return figures


def report_text(params: dict, ranking: dict, runs: list[dict], files: list[str], figures: dict) -> str:
    dist = runs[0]
    hit, ndcg = ranking["hit"], ranking["ndcg"]
    ratio = hit["simulator/popularity"]
    lines = [
        f"# Sim-to-real report: {Path(params['log_path']).name}",
        "",
        f"Calibration: {params['interactions_train']} training interactions (the first "
        f"{params['train_fraction']:.0%} by time), {params['interactions_held_out']} held out; "
        f"{params['items']} items, "
        f"{params['users']} training users; content embedding `{params['embedding']}` "
        f"({params['embedding_dim'] - 1} dimensions + popularity)."
        + (f" Simulated with overrides {figures['overrides']}." if figures["overrides"] else ""),
        "",
        "## Next-item prediction",
        "",
        f"{ranking['events']} held-out interactions of {ranking['users']} users ({ranking['cold_events']} of them a "
        f"user's first interaction ever, {ranking['new_item_events']} on an item unseen in training). Each consumed "
        "item is ranked against 99 items that existed at the time and that the user never interacted with. "
        "95% intervals: bootstrap over users (1000 draws).",
        "",
        "| ranker | hit rate@10 | NDCG@10 |",
        "|---|---|---|",
    ]
    names = {"simulator": "simulator's user model (MNL logit)", "popularity": "popularity (training counts)",
             "popularity_online": "popularity (counts up to the moment)", "random": "random"}
    for key, label in names.items():
        lines.append(f"| {label} | {hit[key]} | {ndcg[key]} |")
    verdict = "meets" if ratio.mean >= HIT_RATIO_TARGET else "misses"
    lines += [
        "",
        f"Hit rate ratio simulator / popularity (training counts): {ratio} ({verdict} the target "
        f"{HIT_RATIO_TARGET}); against popularity up to the moment: {hit['simulator/popularity_online']}.",
        f"On users with history (not their first interaction): simulator "
        f"{ranking['hit_warm']['simulator']:.3f}, popularity {ranking['hit_warm']['popularity']:.3f}.",
        "",
        "## Distributions",
        "",
        f"The simulator run with a logging-like recommender for {len(dist['sim_per_user'])} users (as many as the "
        "held-out period has), until every user left; the held-out period's new items enter in the order and "
        f"at the pace they first appeared (over {GROWTH_ROUNDS} rounds). The `{dist['behaviour']}` recommender is the "
        "logging-like policy: MovieLens users rate films they find across the catalogue (search, browsing, "
        "its own recommender), not only the most popular ones; the `popularity` recommender is shown next to it. "
        f"Item popularity is compared at the same resolution: both sides thinned to {dist['thinned_to']} "
        "interactions.",
        "",
        "| recommender | distribution | held-out log | simulator | KS distance (target <= 0.15) |",
        "|---|---|---|---|---|",
    ]
    lines += distribution_rows(runs, figures["genre_total_variation"])
    lines += ["", *[f"![{f}]({f})" for f in files], "", "## What the simulator gets wrong", ""]
    lines += wrong_list(ranking, runs)
    lines += ["", f"Validation took {figures['seconds']} s.", ""]
    return "\n".join(lines)


def distribution_rows(runs: list[dict], genre_total_variation: float | None) -> list[str]:
    """The distributions table's rows: each recommender's item popularity and user activity, held
    out against simulated, then the first one's genre shares."""
    lines = []
    for d in runs:
        lines += [
            f"| {d['behaviour']} | item popularity (share of interactions per item) | {d['real_items']} items, top 1% "
            f"take {d['top_share_real']:.1%} | {d['sim_items']} items, top 1% take {d['top_share_sim']:.1%} | "
            f"{d['ks_popularity']:.3f} |",
            f"| {d['behaviour']} | interactions per user | median {np.median(d['real_per_user']):.0f}, mean "
            f"{d['real_per_user'].mean():.0f} | median {np.median(d['sim_per_user']):.0f}, mean "
            f"{d['sim_per_user'].mean():.0f} ({d['sim_rounds']} rounds{', cut' if d['truncated'] else ''}, CTR "
            f"{d['sim_ctr']:.2f}) | {d['ks_activity']:.3f} |",
        ]
    if genre_total_variation is not None:
        lines.append(f"| {runs[0]['behaviour']} | genre shares | | | total variation {genre_total_variation:.3f} |")
    return lines


def wrong_list(ranking: dict, runs: list[dict]) -> list[str]:
    dist, out = runs[0], []
    ratio = ranking["hit"]["simulator/popularity"]
    if ratio.mean < HIT_RATIO_TARGET:
        out.append(f"- Its users predict the next item little better than popularity (ratio {ratio.mean:.2f}, target "
                   f"{HIT_RATIO_TARGET}).")
    else:
        out.append(f"- Its users predict the next item better than popularity (ratio {ratio.mean:.2f}), but "
                   f"{ranking['cold_events']} held-out interactions are users' first: for those it has only "
                   "popularity.")
    if dist["ks_popularity"] > KS_TARGET:
        more = dist["top_share_sim"] > dist["top_share_real"]
        out.append(f"- Item popularity is {'more' if more else 'less'} concentrated than in the log (KS "
                   f"{dist['ks_popularity']:.3f} > {KS_TARGET}): the top 1% of items take "
                   f"{dist['top_share_sim']:.1%} of simulated interactions against {dist['top_share_real']:.1%}. "
                   "The log's own recommender is unknown; popularity depends on the one simulated.")
    else:
        out.append(f"- Item popularity matches within the target (KS {dist['ks_popularity']:.3f}) under the "
                   f"{dist['behaviour']} recommender; the top 1% of items take {dist['top_share_sim']:.1%} of "
                   f"simulated interactions against {dist['top_share_real']:.1%}.")
    for d in runs[1:]:
        out.append(f"- Under the {d['behaviour']} recommender the simulated interactions spread over "
                   f"{'fewer' if d['sim_items'] < d['real_items'] else 'more'} items ({d['sim_items']} against "
                   f"{d['real_items']}; KS {d['ks_popularity']:.3f}): popularity depends on the recommender, and the "
                   "log does not say which one it was collected under.")
    if dist["ks_activity"] > KS_TARGET:
        out.append(f"- Interactions per user differ (KS {dist['ks_activity']:.3f} > {KS_TARGET}): users are drawn from "
                   "the training period's activity, and leave when it is spent.")
    else:
        out.append(f"- Interactions per user match within the target (KS {dist['ks_activity']:.3f}); by construction "
                   "in part: each user's budget is a training user's number of interactions.")
    out += [
        "- Clicks, impressions and the no-click rate are not in the log: the click-through rate is an assumption "
        "(calibrate --target-ctr), position bias is not fitted (0) and slates are not logged.",
        "- Time is compressed: a round is one slate per user, not a day; sessions, returns and the order of a "
        "user's visits are not modelled, and every user starts at the same round.",
        "- Creators have no counterpart in the data: the scenario has none, and the catalogue grows on the log's "
        "schedule whatever the recommender does.",
    ]
    return out
