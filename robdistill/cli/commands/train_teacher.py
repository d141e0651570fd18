"""`robdistill train-teacher`."""
from __future__ import annotations

import click

from robdistill.cli.options import (common_options, make_settings, overrides_option, precision_option,
                                    threat_model_option, recipe_overrides)
from robdistill.cli.output import print_outcome


@click.command("train-teacher")
@click.option("--teacher", required=True, help="Teacher recipe name or .toml path.")
@overrides_option("Override a recipe field, e.g. epochs=2 or objective=at (repeatable).")
@precision_option
@threat_model_option
@common_options
def train_teacher(teacher, overrides, precision, threat_model, **kw) -> None:
    """Train a teacher (or find it in the cache) and save its checkpoint."""
    from robdistill.experiments.pipeline import train_teacher_only

    overrides = recipe_overrides(overrides, precision, ("",), ("teacher",), bare="teacher")
    print_outcome(train_teacher_only(make_settings(kw, threat_model), teacher, overrides), "teacher")
