"""Table cells shared by the env and train tables: medians, paired ratios, targets, failures as notes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from marl_rec.bench.memory import MEMORY_TARGET_BYTES, MEMORY_USERS
from marl_rec.bench.paired import Paired


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:,.2f}{unit}" if abs(value) < 10 else f"{value:,.1f}{unit}"


def cell(p: Paired, side: str, missing: str, notes: list[str]) -> str:
    if side in p.errors:
        notes.append(f"{side}: {p.errors[side]}")
        return f"failed [{len(notes)}]"
    value = p.median(side)
    return missing if value is None else fmt(value)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


def ratio_cell(p: Paired, side: str, other: str) -> str:
    ratio = p.ratio(side, other)
    return "—" if ratio is None else f"{ratio:.2f}x"


def verdict(target: str, met: bool | None) -> str:
    if not target:
        return ""
    return f"{target}: " + {True: "met", False: "not met", None: "not measured"}[met]


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def memory_rows(memory: Mapping[str, Any], with_reference: bool, no_ref: str, notes: list[str]) -> list[str]:
    def cells(show: Callable[[dict], str]) -> list[str]:
        out = []
        for side in ("ours", "reference"):
            got = memory.get(side)
            if got is None:
                out.append(no_ref if side == "reference" else "not measured")
            elif isinstance(got, str):
                notes.append(f"{side} (memory): {got}")
                out.append(f"failed [{len(notes)}]")
            else:
                out.append(show(got))
        return out

    def ratio(key: str) -> str:
        a, b = memory.get("ours"), memory.get("reference")
        return f"{a[key] / b[key]:.2f}x" if isinstance(a, dict) and isinstance(b, dict) and b[key] else "—"

    per_user = cells(lambda m: f"{m['state_bytes_per_user']:,.0f} (+ {m['state_other_bytes'] / 1e6:,.2f} MB other)")
    rss = cells(lambda m: f"{m['peak_rss_bytes'] / 1e9:.2f} GB (first reset {m['build_and_reset_s']:.1f} s, "
                          f"first round {m['round_s']:.1f} s)")
    ours = memory.get("ours")
    met = ours["peak_rss_bytes"] <= MEMORY_TARGET_BYTES if isinstance(ours, dict) else None
    return [
        f"| memory: bytes of the state arrays per user (sim.state, {MEMORY_USERS:,} users; + catalogue and other) | "
        f"{per_user[0]} | {per_user[1] if with_reference else no_ref} | {ratio('state_bytes_per_user')} "
        "| — | — | |",
        f"| memory: peak RSS of a process that built a {MEMORY_USERS:,}-user creator_economy platform and played "
        f"one round | {rss[0]} | {rss[1] if with_reference else no_ref} | {ratio('peak_rss_bytes')} | — | — | "
        f"{verdict(f'<= {MEMORY_TARGET_BYTES / 1e9:.0f} GB', met)} |",
    ]
