"""`robdistill distill`."""
from __future__ import annotations

import click

from robdistill.cli.options import (TEACHER_HELP, common_options, make_settings, overrides_option, precision_option,
                                    recipe_stages, source_options, teacher_source_options, threat_model_option,
                                    recipe_overrides)
from robdistill.cli.output import print_outcome


@click.command()
@click.option("--teacher", required=True, help=TEACHER_HELP)
@click.option("--perturb", default="keep", show_default=True,
              help="keep, nonmax-shuffle, nonmax-flatten, onehot, confidence-swap, nonmax-flatten-mean.")
@click.option("--student", default="default", show_default=True, help="Student recipe name or .toml path.")
@overrides_option("Override a recipe field: teacher.epochs=5 or student.epochs=3 (repeatable).")
@precision_option
@teacher_source_options
@threat_model_option
@common_options
def distill(teacher, perturb, student, overrides, precision, arch, model_dir, threat_model, sha256, expect_clean,
            **kw) -> None:
    """Distill a student from a teacher's (perturbed) logits on clean inputs only; no attacks.

    \b
    Examples:
      robdistill distill --teacher alp --perturb keep
      robdistill distill --teacher robustbench:Wong2020Fast --dataset cifar10 --perturb nonmax-shuffle
    """
    from robdistill.experiments.pipeline import distill_only

    source = source_options(arch, model_dir, threat_model, sha256, expect_clean)
    stages = recipe_stages(teacher, source, ("teacher", "student"))
    print_outcome(distill_only(make_settings(kw, threat_model), teacher, perturb, student,
                               recipe_overrides(overrides, precision, stages, ("teacher", "student")), source),
                  "distillation")
