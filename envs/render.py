"""Rendering: ``ansi`` (a readable summary of the round) and ``rgb_array`` (a picture).

The picture has three panels: users (dots) and the newest items (crosses, coloured by topic)
on a 2-D projection of the topic space; creator viability bars (grey = left); exposure per
creator this episode. matplotlib is imported here only, with the Agg backend.
"""

from __future__ import annotations

import numpy as np


def ansi_summary(sim, runner=None) -> str:
    s, c = sim.state, sim.config
    users, creators, rnd = s.users, s.creators, s.round
    phase = runner.phase if runner is not None and not runner.done else "done"
    m = sim.metrics()
    lines = [
        f"ecosystem_v0  round {s.t}/{c.max_cycles}  next phase: {phase}",
        f"users    active {int(users.active.sum())}/{c.num_users}  mean budget {users.time_budget.mean():7.2f} min"
        f"  clicks this round {int((rnd.clicked_slot >= 0).sum())}  watch {rnd.watch_time.sum():7.2f} min",
        f"creators active {int(creators.active.sum())}/{c.num_creators}"
        + (f"  viability min/mean/max {creators.viability.min():.2f}/{creators.viability.mean():.2f}"
           f"/{creators.viability.max():.2f}"
           if c.num_creators else ""),
        f"catalogue {s.catalogue.count}/{c.catalogue_size} items  published so far {s.catalogue.next_uid}",
        f"team reward last round {rnd.team_reward:8.3f}  team return {m['team_return']:9.3f}"
        f"  ctr {m['ctr']:.3f}  coverage {m['coverage']:.3f}  exposure gini {m['exposure_gini']:.3f}",
    ]
    for u in range(min(c.num_users, 4)):
        slate = sim.slate_slots()[u]
        choice = rnd.choice[u]
        picked = "-" if choice < 0 else ("no click" if choice >= c.slate_size else f"pos {choice}")
        lines.append(
            f"  user {u}: slate topics {s.catalogue.topic[slate].tolist()} -> {picked}, watched {rnd.watch_time[u]:.2f}"
        )
    return "\n".join(lines)


def rgb_picture(sim, width: int = 960, height: int = 320) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    s, c = sim.state, sim.config
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax_map, ax_via, ax_exp = fig.subplots(1, 3)

    # 2-D projection: the two leading principal directions of the topic centres
    centres = s.topic_centres - s.topic_centres.mean(axis=0)
    _, _, vt = np.linalg.svd(centres, full_matrices=False)
    basis = vt[:2].T if vt.shape[0] >= 2 else np.eye(c.embedding_dim, 2)
    newest = s.catalogue.newest(np.arange(min(s.catalogue.count, 200)))
    items = s.catalogue.embedding[newest] @ basis
    ax_map.scatter(items[:, 0], items[:, 1], c=s.catalogue.topic[newest], cmap="tab10", marker="x", s=12, alpha=0.6)
    users = s.users.interest @ basis
    ax_map.scatter(users[:, 0], users[:, 1], c=np.where(s.users.active, "black", "lightgrey"), s=18)
    ax_map.set_title(f"round {s.t}: users (dots), newest items (x)", fontsize=8)
    ax_map.set_xticks([])
    ax_map.set_yticks([])

    n = c.num_creators
    if n:
        colours = np.where(s.creators.active, "tab:green", "lightgrey")
        ax_via.bar(np.arange(n), s.creators.viability, color=colours)
        ax_via.axhline(c.creator.leave_threshold, color="tab:red", lw=0.8)
        ax_exp.bar(np.arange(n), s.creators.exposure_total, color=colours)
    ax_via.set_title("creator viability (red: leaving threshold)", fontsize=8)
    ax_exp.set_title("exposure per creator (episode)", fontsize=8)
    for ax in (ax_via, ax_exp):
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render(sim, mode: str | None, runner=None):
    if mode is None:
        import gymnasium

        gymnasium.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'rgb_array'")
        return None
    if mode == "ansi":
        return ansi_summary(sim, runner)
    if mode == "human":
        print(ansi_summary(sim, runner))
        return None
    if mode == "rgb_array":
        return rgb_picture(sim)
    raise ValueError(f"render_mode {mode!r}; allowed values: ['human', 'ansi', 'rgb_array']")
