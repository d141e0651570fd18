"""`robdistill evaluate`."""
from __future__ import annotations

import click

from robdistill.core.errors import UserError
from robdistill.core.threat import norm_of
from robdistill.cli.options import (attack_norm, common_options, compile_option, eval_options,
                                    evaluate_source_options, make_settings, overrides_option, precision_option,
                                    recipe_overrides, source_options, suite_norm, threat_model_option)
from robdistill.cli.output import merge_hint, print_outcome


@click.command()
@click.argument("models", nargs=-1, required=True)
@eval_options
@click.option("--eps-sweep", default=None, metavar="E1,E2,...",
              help="Also run the suite at each of these radii: a table and accuracy-versus-eps curves.")
@click.option("--shard", default=None, metavar="I/N",
              help="Attack only test rows I-1, I-1+N, ... (one machine's share of a large test set, "
                   "all sharing one tracking server); merge with `robdistill evaluate-report`.")
@overrides_option("Override a suite field, e.g. n_eval=100 or seed=3 (repeatable).")
@precision_option
@compile_option
@evaluate_source_options
@threat_model_option
@common_options
def evaluate(models, suite, eps, n_eval, eps_sweep, shard, overrides, precision, compile_attacks, arch, model_dir,
             threat_model, sha256, expect_clean, **kw) -> None:
    """Attack models with an attack suite: robdistill checkpoints (teacher or student .pt files;
    their dataset is theirs), robustbench:<Name> (from --model-dir), TorchScript files, or state
    dicts with --model (on --dataset). Each passes the integrity gate first.

    \b
    Examples:
      robdistill evaluate .robdistill/teachers/digits-at-s0-*.pt --suite full
      robdistill evaluate student.pt --eps-sweep 0,0.05,0.1,0.15,0.2 --suite smoke
      robdistill evaluate student.pt --threat-model l2 --eps-sweep 0,0.25,0.5,0.75,1 --suite smoke
      robdistill evaluate student.pt --suite full --shard 2/4 --tracking-uri http://server:5000
      robdistill evaluate robustbench:Wong2020Fast --dataset cifar10 --model-dir models --n-eval 500
      robdistill evaluate model_scripted.pt weights.pt --model timm:resnet18 --dataset cifar10
    """
    from robdistill.experiments.pipeline import evaluate_checkpoints
    from robdistill.eval.tables import eps_table

    eps_values = None
    if eps_sweep is not None:
        try:
            eps_values = sorted({float(v) for v in eps_sweep.split(",") if v.strip()})
        except ValueError:
            raise UserError(f"--eps-sweep must be comma-separated numbers (e.g. 0,0.05,0.1); got '{eps_sweep}'") from None
        if not eps_values:
            raise UserError("--eps-sweep is empty; give comma-separated radii")
        norm = attack_norm(threat_model) or (suite_norm(suite) if suite else "linf")  # the default suites are linf
        for value in eps_values:
            norm_of(norm).check_radius(value, "--eps-sweep radii")
    from robdistill.experiments.sweep import parse_shard

    shard_spec = parse_shard(shard)
    if sha256 and len(sha256) != len(models):
        raise UserError(f"--sha256 given {len(sha256)} times for {len(models)} models; give one per model, in order")
    sources = [source_options(arch, model_dir, threat_model, sha256[i] if sha256 else None, expect_clean)
               for i in range(len(models))]
    settings = make_settings(kw, threat_model)
    outcome = evaluate_checkpoints(settings, list(models), suite, eps, n_eval,
                                   recipe_overrides(overrides, precision, ("",), ("suite",), bare="suite",
                                                    compile_attacks=compile_attacks), eps_values,
                                   shard_spec, sources)
    print_outcome(outcome, "evaluation" if shard_spec is None else f"evaluation, shard {shard} of the test rows")
    if shard_spec is not None:
        name = outcome.eval_name
        click.echo(f"\nthis was shard {shard}; once every shard has finished, merge them with:\n"
                   + merge_hint("evaluate-report", name, outcome.tracking_uri, settings.experiment))
    if outcome.eps_curves:
        click.echo("\naccuracy versus eps (accuracy %, 95% Wilson interval; eps_curves.png in the run)")
        click.echo(eps_table(outcome.eps_curves))
