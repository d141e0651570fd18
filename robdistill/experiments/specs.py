"""What an experiment is asked to do, as one typed value each: a `run` (:class:`RunSpec`) and a
`sweep` (:class:`SweepSpec`). The command line builds them once, from its options; the pipeline,
the sweep, its estimate and its executors (a local pool, Slurm array tasks, which pickle them) take
them whole instead of a dozen keywords."""
from __future__ import annotations

from dataclasses import dataclass, field

from robdistill.config.overrides import Overrides
from robdistill.config.settings import default_suite
from robdistill.sources.registry import SourceOptions, is_recipe


@dataclass(frozen=True)
class RunSpec:
    """One `run`: a teacher (a recipe, or any model source: robdistill.sources), a perturbation of its
    logits, the student recipe, the attack suite (None: the dataset's default), its radius and test
    images, ``--set`` overrides (parsed: :class:`~robdistill.config.overrides.Overrides`), whether the teacher is attacked too, and the
    options of an external teacher's source."""

    teacher: str
    perturb: str = "keep"
    student: str = "default"
    suite: str | None = None
    eps: float | None = None
    n_eval: int | None = None
    overrides: Overrides = field(default_factory=Overrides)
    evaluate_teacher: bool = True
    source: SourceOptions = field(default_factory=SourceOptions)

    def suite_for(self, dataset: str) -> str:
        """The suite this run attacks with on ``dataset``."""
        return self.suite or default_suite(dataset)


@dataclass(frozen=True)
class SweepSpec:
    """A `sweep`: the teacher x perturbation x seed grid, and what every cell shares (as in
    :class:`RunSpec`)."""

    teachers: tuple[str, ...]
    perturbs: tuple[str, ...]
    seeds: tuple[int, ...]
    student: str = "default"
    suite: str | None = None
    eps: float | None = None
    n_eval: int | None = None
    overrides: Overrides = field(default_factory=Overrides)
    evaluate_teachers: bool = True
    source: SourceOptions = field(default_factory=SourceOptions)

    def suite_for(self, dataset: str) -> str:
        return self.suite or default_suite(dataset)

    def cell(self, teacher: str, perturb: str, evaluate_teacher: bool) -> RunSpec:
        """The `run` of one cell: an external teacher's cells drop the ``teacher.*`` overrides (it is
        loaded, not trained)."""
        overrides = self.overrides if is_recipe(teacher, self.source) else self.overrides.without("teacher")
        return RunSpec(teacher, perturb, self.student, self.suite, self.eps, self.n_eval, overrides,
                       self.evaluate_teachers and evaluate_teacher, self.source)
