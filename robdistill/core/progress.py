"""Progress for long jobs when bars cannot be drawn: when stderr is not a terminal (``nohup``,
``tee``, a scheduler's log) tqdm's bars are off, so each finished epoch or attack prints one line
with the elapsed time and an estimate of the time left."""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence


def bars_drawn() -> bool:
    """Whether tqdm draws bars here (it does on a terminal; ``disable=None`` turns them off elsewhere)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def duration(seconds: float) -> str:
    """'42 s', '3.5 min', '2.1 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class StepLog:
    """One line per finished step (``desc: epoch 3/20 done in 41 s, 2.1 min elapsed, about 8.2 min
    left``) when ``enabled`` and no bar is drawn; silent otherwise. The estimate assumes the
    remaining steps cost what the finished ones did, per unit of ``weights`` (each step's relative
    cost, e.g. an attack's pass budget; equal steps without them)."""

    def __init__(self, desc: str, total: int, unit: str, enabled: bool = True, done: int = 0,
                 weights: Sequence[float] | None = None) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.enabled = enabled and not bars_drawn()
        self.started = self.last = time.perf_counter()
        self.first = done  # steps already done before this process (a resumed run)
        if weights is not None and (len(weights) != total or min(weights, default=1.0) <= 0):
            raise ValueError(f"weights must be {total} positive numbers, one a step; got {list(weights)}")
        self.weights = list(weights) if weights is not None else [1.0] * total

    def step(self, done: int, label: str | None = None) -> None:
        now = time.perf_counter()
        took, self.last = now - self.last, now
        if not self.enabled:
            return
        elapsed = now - self.started
        finished_here = sum(self.weights[self.first:done])
        left = elapsed / finished_here * sum(self.weights[done:]) if finished_here > 0 else float("nan")
        eta = f", about {duration(left)} left" if done < self.total and left == left else ""
        name = label or f"{self.unit} {done}/{self.total}"
        print(f"{self.desc}: {name} done in {duration(took)}, {duration(elapsed)} elapsed{eta}",
              file=sys.stderr, flush=True)
