"""`robdistill regress`."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from robdistill.core.errors import UserError
from robdistill.cli.options import make_settings


@click.command()
@click.option("--baseline", required=True, type=click.Path(path_type=Path),
              help="Baseline JSON (e.g. benchmarks/baselines/digits-fast.json).")
@click.option("--update", is_flag=True,
              help="Re-measure over the baseline's update_seeds and rewrite its expectations (deliberately).")
@click.option("--add-seeds", default=None, metavar="S1,S2,...",
              help="Measure only these new seeds and add them to the expectations (tighter tolerances).")
@click.option("--refit", is_flag=True,
              help="Recompute the tolerances from the stored per-seed values (after a change to the rule); "
                   "measures nothing.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 ... or auto.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="MLflow store or server [default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db].")
@click.option("--experiment", default="robdistill-regress", show_default=True, help="MLflow experiment name.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def regress(baseline, update, add_seeds, refit, **kw) -> None:
    """CI gate: run the baseline's fixed configuration with fresh teachers and fail (exit 1) when
    any accuracy falls below expected - tolerance (tolerance from the baseline's seed-to-seed
    spread and the Wilson interval; see robdistill/regress.py).

    \b
    Examples:
      robdistill regress --baseline benchmarks/baselines/digits-fast.json
      robdistill regress --baseline benchmarks/baselines/digits-fast.json --update
    """
    from robdistill.experiments.regress import check, check_expectations, gate_table, load_baseline, measure, save_baseline
    from robdistill.experiments.regress import update as update_baseline
    from robdistill.eval.tables import format_table

    from robdistill.core import distributed

    if distributed.launched_by_torchrun():
        raise UserError("regress runs in one process (its fresh teacher caches are per process); run it "
                        "without torchrun")
    spec = load_baseline(baseline)
    if refit:
        from robdistill.experiments.regress import refit as refit_baseline

        save_baseline(baseline, refit_baseline(spec))
        click.echo(f"refitted the tolerances of {baseline} from its stored per-seed values")
        return
    settings = make_settings({**kw, "dataset": spec.dataset, "seed": spec.gate_seed, "data_root": None,
                              "download": False, "cache_dir": Path(".robdistill")})
    progress = lambda text: click.echo(f"[regress] {text}", err=True)  # noqa: E731
    if add_seeds:
        from robdistill.experiments.regress import extend
        from robdistill.experiments.sweep import parse_seeds

        extended = extend(spec, settings, parse_seeds(add_seeds), progress)
        save_baseline(baseline, extended)
        click.echo(f"extended {baseline}: {len(extended.expected)} expectations over seeds "
                   f"{','.join(map(str, extended.update_seeds))}")
        return
    if update:
        updated = update_baseline(spec, settings, progress)
        save_baseline(baseline, updated)
        click.echo(f"updated {baseline}: {len(updated.expected)} expectations over seeds "
                   f"{','.join(map(str, spec.update_seeds))} ({updated.measured_on['seconds']} s)")
        return
    if not spec.expected:
        raise UserError(f"{baseline} has no expectations yet; run with --update first")
    check_expectations(spec)  # before any work
    rows = check(spec, measure(spec, settings, spec.gate_seed, progress))
    click.echo(format_table(*gate_table(rows)))
    failed = [r for r in rows if r.failed]
    click.echo(f"\nregression gate: {'FAILED' if failed else 'passed'} "
               f"({len(rows) - len(failed)}/{len(rows)} within tolerance)")
    if failed:
        sys.exit(1)
