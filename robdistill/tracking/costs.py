"""What a study cost, read back from its runs: wall time per stage (teacher training, distillation,
each attack of the evaluations), the processes' threads, core-hours (wall time x threads, where
the run recorded its threads) and, per attack, images per second, FLOPs per image and the FLOP rate
achieved (robdistill.models.flops). Every number comes from what the runs logged: a stage run's start
and end times, an evaluation's ``seconds/<attack>`` and ``cost/<attack>_*`` metrics and the
``threads`` tag."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from robdistill.tracking import schema


@dataclass
class StageCost:
    """One stage over a study: how many runs, their wall seconds and, where known, core-seconds."""

    stage: str
    runs: int = 0
    seconds: float = 0.0
    core_seconds: float = 0.0
    unknown_threads: int = 0  # runs that did not record their threads (older robdistill)
    threads: set[int] = field(default_factory=set)
    images: float = 0.0   # images attacked (attack rows, from runs that logged their rate)
    flops: float = 0.0    # FLOPs of those images' passes (runs that logged FLOPs per image)
    flop_images: float = 0.0  # the images ``flops`` covers

    def add(self, seconds: float, threads: int | None, images: float | None = None,
            gflop_per_image: float | None = None) -> None:
        self.runs += 1
        self.seconds += seconds
        if images:
            self.images += images
            if gflop_per_image is not None:
                self.flops += gflop_per_image * 1e9 * images
                self.flop_images += images
        if threads is None:
            self.unknown_threads += 1
        else:
            self.threads.add(threads)
            self.core_seconds += seconds * threads

    def row(self) -> list[str]:
        threads = ",".join(map(str, sorted(self.threads))) + (" and ?" if self.unknown_threads and self.threads else
                                                              "?" if self.unknown_threads else "")
        core = (f"{self.core_seconds / 3600:.2f}" if not self.unknown_threads else
                f">= {self.core_seconds / 3600:.2f}" if self.threads else "-")
        rate = f"{self.images / self.seconds:.1f}" if self.images and self.seconds else "-"
        per_image = f"{self.flops / self.flop_images / 1e9:.3g}" if self.flop_images else "-"
        achieved = f"{self.flops / self.seconds / 1e9:.3g}" if self.flop_images and self.seconds else "-"
        return [self.stage, str(self.runs), f"{self.seconds / 3600:.2f}", f"{self.seconds / max(self.runs, 1) / 60:.1f}",
                threads or "-", core, rate, per_image, achieved]


COST_HEADER = ["stage", "runs", "wall hours", "minutes per run", "threads", "core-hours", "images/s", "GFLOP/image",
               "GFLOP/s"]


def _duration(run: Any) -> float | None:
    end, start = run.info.end_time, run.info.start_time
    return (end - start) / 1000 if end and start and run.info.status == "FINISHED" else None


def _threads(run: Any) -> int | None:
    value = run.data.tags.get(schema.TAG_THREADS)
    return int(value) if value and value.isdigit() else None


def stage_costs(teacher_runs: Iterable[Any], student_runs: Iterable[Any], evaluation_runs: Iterable[Any]) -> list[StageCost]:
    """The cost table's rows: teachers trained (a reused teacher costs nothing and is left out),
    students distilled, each attack summed over the evaluations, and the evaluations whole (attacks,
    the consistency analysis and logging)."""
    teachers, students, evaluations = StageCost("teacher training"), StageCost("distillation"), StageCost("evaluations")
    attacks: dict[str, StageCost] = {}
    for run in teacher_runs:
        seconds = _duration(run)
        if seconds is not None and run.data.tags.get(schema.TAG_REUSED, "false") != "true":
            teachers.add(seconds, _threads(run))
    for run in student_runs:
        seconds = _duration(run)
        if seconds is not None:
            students.add(seconds, _threads(run))
    for run in evaluation_runs:
        seconds = _duration(run)
        if seconds is None:
            continue
        evaluations.add(seconds, _threads(run))
        metrics = run.data.metrics
        for key, value in metrics.items():
            if key.startswith(schema.SECONDS_PREFIX):
                name = key[len(schema.SECONDS_PREFIX):]
                rate = metrics.get(f"cost/{name}_images_per_second")
                attacks.setdefault(name, StageCost(f"  {name}")).add(
                    value, _threads(run), rate * value if rate else None, metrics.get(f"cost/{name}_gflop_per_sample"))
    return [teachers, students, evaluations, *attacks.values()]


def total_row(costs: list[StageCost]) -> list[str]:
    """Teachers, students and evaluations together (the attacks are inside the evaluations)."""
    total = StageCost("total")
    for cost in costs[:3]:
        total.runs += cost.runs
        total.seconds += cost.seconds
        total.core_seconds += cost.core_seconds
        total.unknown_threads += cost.unknown_threads
        total.threads |= cost.threads
    return total.row()


__all__ = ["StageCost", "COST_HEADER", "stage_costs", "total_row"]
