"""Paired alternation: the sides of a comparison measured in turn, medians and paired ratios.

A, B, R, A, B, R, ... ``repeats`` times per figure: each ratio is the median over repeats of
ours / theirs within the same repeat, so the machine's drift between repeats cancels.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Mapping
from typing import Any

from marl_rec.bench.trees import BenchError


@dataclasses.dataclass
class Paired:
    """Each side's figures in the order measured (repeat i of every side is one pair)."""

    values: dict[str, list[float]]
    errors: dict[str, str]

    def median(self, side: str) -> float | None:
        return statistics.median(self.values[side]) if self.values.get(side) else None

    def ratio(self, side: str, other: str) -> float | None:
        """Median over repeats of side / other within the same repeat."""
        pairs = list(zip(self.values.get(side, ()), self.values.get(other, ())))
        return statistics.median(a / b for a, b in pairs) if pairs and all(b for _, b in pairs) else None


def alternate(sides: Mapping[str, Callable[[int], Any]], repeats: int,
              report: Callable[[str, int, Any, str | None], None] | None = None) -> Paired:
    """Measure every side in turn, ``repeats`` times (A, B, R, A, B, R, ...). A side that fails
    is left out of its later repeats; the others go on."""
    values: dict[str, list] = {name: [] for name in sides}
    errors: dict[str, str] = {}
    for repeat in range(repeats):
        for name, measure in sides.items():
            if name in errors:
                continue
            try:
                value = measure(repeat)
            except BenchError as err:
                errors[name] = str(err)
                if report:
                    report(name, repeat, None, str(err) + ("\n" + err.detail if err.detail else ""))
                continue
            values[name].append(value)
            if report:
                report(name, repeat, value, None)
    return Paired(values, errors)
