"""`robdistill run`."""
from __future__ import annotations

from typing import Any, Callable

import click

from robdistill.cli.options import (ESTIMATING, TEACHER_HELP, announces_estimate, check_estimable, common_options,
                                    compile_option, estimate_option, eval_options, make_settings, overrides_option,
                                    precision_option, recipe_overrides, recipe_stages, source_options,
                                    teacher_source_options, threat_model_option)
from robdistill.cli.output import print_outcome


@click.command()
@click.option("--teacher", required=True, help=TEACHER_HELP)
@click.option("--perturb", default="keep", show_default=True,
              help="What to do to the teacher's logits: keep, nonmax-shuffle, nonmax-flatten; extras "
                   "onehot, confidence-swap, nonmax-flatten-mean (`robdistill list perturbations`).")
@click.option("--student", default="default", show_default=True, help="Student recipe name or .toml path.")
@eval_options
@click.option("--skip-teacher-eval", is_flag=True, help="Attack only the student.")
@overrides_option("Override a recipe field: teacher.epochs=5, student.temperature=2, suite.n_eval=100 (repeatable).")
@precision_option
@compile_option
@estimate_option
@teacher_source_options
@threat_model_option
@common_options
def run(teacher, perturb, student, suite, eps, n_eval, skip_teacher_eval, overrides, precision, compile_attacks,
        estimate_only, arch, model_dir, threat_model, sha256, expect_clean, **kw) -> None:
    """Train (or reuse, or load) a teacher, distill a student on clean inputs, attack both.

    \b
    Examples:
      robdistill run --teacher alp --perturb nonmax-shuffle
      robdistill run --teacher at --perturb nonmax-flatten --set student.temperature=2
      robdistill run --teacher aalp --dataset fashion-mnist --set teacher.epochs=5
      robdistill run --teacher alp --perturb nonmax-shuffle --precision bf16
      robdistill run --teacher at --perturb nonmax-shuffle --threat-model l2
      robdistill run --teacher trades --dataset fashion-mnist --estimate
      robdistill run --teacher robustbench:Wong2020Fast --dataset cifar10 --model-dir models
      robdistill run --teacher weights.pt --teacher-model timm:resnet18 --dataset cifar10 --expect-clean 0.9
    """
    from robdistill.experiments.pipeline import estimate_run, run_experiment
    from robdistill.experiments.specs import RunSpec

    source = source_options(arch, model_dir, threat_model, sha256, expect_clean)
    stages = recipe_stages(teacher, source, ("teacher", "student", "suite"))
    settings = make_settings(kw, threat_model)
    spec = RunSpec(teacher, perturb, student, suite, eps, n_eval,
                   recipe_overrides(overrides, precision, stages, compile_attacks=compile_attacks),
                   not skip_teacher_eval, source)
    if estimate_only:
        check_estimable()
        click.echo(estimate_run(settings, spec, on_start=lambda: click.echo(ESTIMATING, err=True)).text())
        return
    def announce(estimate: Callable[[], Any]) -> None:  # once the inputs are checked: say so, then time batches
        click.echo(ESTIMATING, err=True)
        click.echo(estimate().text(), err=True)

    announce = announce if announces_estimate(settings) else None
    outcome = run_experiment(settings, spec, announce=announce)
    print_outcome(outcome, "results")
