"""Interleaved rounds: each round runs every side once, in an order that rotates from round to round,
and each figure is the median over rounds. Drift (a checkpoint, autovacuum, a neighbour's load)
then hits every side alike, and no side always runs first or last."""

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Samples:
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self) -> str:
        return f"{min(self.values):,.1f}..{max(self.values):,.1f}"


def interleaved(sides: Mapping[str, Callable[[], float]], rounds: int,
                before_round: Callable[[], None] | None = None) -> dict[str, Samples]:
    """Run `sides` (label -> one measurement) for `rounds` rounds; `before_round` resets state
    (say, refills a queue) before each round, for every side at once."""
    labels = list(sides)
    values: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(rounds):
        if before_round is not None:
            before_round()
        shift = r % len(labels)
        for label in labels[shift:] + labels[:shift]:
            values[label].append(sides[label]())
    return {label: Samples(tuple(v)) for label, v in values.items()}
