"""`robdistill sweep`."""
from __future__ import annotations

from pathlib import Path

import click

from robdistill.core.errors import UserError
from robdistill.cli.options import (ESTIMATING, announces_estimate, attack_norm, check_estimable, common_options,
                                    compile_option, estimate_option, eval_options, make_settings, overrides_option,
                                    precision_option, recipe_overrides, recipe_stages, source_options, suite_norm,
                                    teacher_source_options, threat_model_option)
from robdistill.cli.output import print_merged, merge_hint, print_sweep_tables, ui_hint


@click.command()
@click.option("--teachers", default="standard,at,alp,aalp", show_default=True,
              help="Comma-separated teachers: recipes, or any other --teacher of `run` (robustbench:<Name>, files).")
@click.option("--perturbs", default="keep,nonmax-shuffle,nonmax-flatten", show_default=True,
              help="Comma-separated perturbations (`robdistill list perturbations`).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds.")
@click.option("--student", default="default", show_default=True, help="Student recipe name or .toml path.")
@eval_options
@click.option("--skip-teacher-eval", is_flag=True, help="Attack only the students.")
@click.option("--out", "outputs", multiple=True, type=click.Path(path_type=Path),
              help="Also write the summary table to FILE.csv or FILE.md (repeatable); the paired table "
                   "goes beside it as FILE-paired.csv / .md.")
@click.option("--shard", default=None, metavar="I/N",
              help="Run only shard I of N (each (seed, teacher) group on exactly one shard), e.g. on N machines "
                   "sharing one tracking server; merge with `robdistill sweep-report`.")
@click.option("--executor", type=click.Choice(["serial", "local", "slurm"]), default="serial", show_default=True,
              help="serial: every cell in this process; local: a pool of --workers processes on this machine, "
                   "each taking the next (seed, teacher) group, one MLflow store for all (an SQLite file is served "
                   "by an mlflow server for the pool); slurm: a Slurm job array (submitit), one task per group.")
@click.option("--workers", type=int, default=None,
              help="Processes of --executor local [default: one per core]; each gets cores / workers threads.")
@click.option("--slurm-partition", default=None, help="--executor slurm: the partition [default: the cluster's].")
@click.option("--slurm-time", type=int, default=240, show_default=True, help="--executor slurm: minutes per task.")
@click.option("--slurm-cpus", type=int, default=1, show_default=True,
              help="--executor slurm: CPUs per task (its torch threads).")
@click.option("--slurm-gpus", type=int, default=0, show_default=True, help="--executor slurm: GPUs per task.")
@click.option("--slurm-mem", default=None, help="--executor slurm: memory per task, e.g. 8G.")
@click.option("--slurm-parallelism", type=int, default=None, help="--executor slurm: at most this many tasks at once.")
@click.option("--slurm-set", "slurm_set", multiple=True, metavar="KEY=VALUE",
              help="--executor slurm: any other sbatch setting, e.g. qos=low or account=lab (repeatable).")
@click.option("--no-wait", is_flag=True,
              help="--executor slurm: submit, print the job id and how to follow it, and return.")
@overrides_option("Override a recipe field for every cell: teacher.epochs=5, student.temperature=2 (repeatable; "
                  "teacher.* fields apply to the recipe teachers of the grid).")
@precision_option
@compile_option
@estimate_option
@teacher_source_options
@threat_model_option
@common_options
def sweep(teachers, perturbs, seeds, student, suite, eps, n_eval, skip_teacher_eval, outputs, shard, executor, workers,
          slurm_partition, slurm_time, slurm_cpus, slurm_gpus, slurm_mem, slurm_parallelism, slurm_set, no_wait,
          overrides, precision, compile_attacks, estimate_only, arch, model_dir, threat_model, sha256, expect_clean,
          **kw) -> None:
    """The teacher x perturbation x seed grid under one MLflow parent run, each teacher trained once
    per seed; prints accuracy per cell (mean and 95% interval over seeds) and each perturbation
    paired against keep (Seguin et al. claim 3).

    \b
    Examples:
      robdistill sweep
      robdistill sweep --teachers at,alp --perturbs keep,nonmax-shuffle --seeds 0,1 --out grid.md
      robdistill sweep --dataset fashion-mnist --set teacher.epochs=5 --n-eval 500
      robdistill sweep --dataset fashion-mnist --seeds 0,1,2,3,4 --estimate
      robdistill sweep --executor local --workers 2     # two processes of cores / 2 threads each
      robdistill sweep --teachers standard,at --perturbs keep,nonmax-shuffle,nonmax-flatten --threat-model l2

    Run the same command again to continue a sweep: the cells it finished are read back from the
    store, not run again (`robdistill sweep-status <sweep name>` lists them).
    """
    from robdistill.experiments.pipeline import check_eps
    from robdistill.eval.tables import check_table_path
    from robdistill.config.settings import default_suite
    from robdistill.experiments.specs import SweepSpec
    from robdistill.experiments.sweep import (parse_list, parse_seeds, parse_shard, run_sweep, sweep_estimate,
                                              validate_grid)

    for path in outputs:
        check_table_path(path)
    check_eps(eps, attack_norm(threat_model) or suite_norm(suite or default_suite(kw["dataset"])))
    shard_spec = parse_shard(shard)
    pool = None
    if executor == "local":
        from robdistill.experiments.executors import LocalPool

        if shard_spec is not None:
            raise UserError("--executor local runs every (seed, teacher) group itself; drop --shard (or run shards "
                            "with the serial executor on several machines)")
        pool = LocalPool.for_machine(workers)
    elif workers is not None:
        raise UserError("--workers applies to --executor local; add --executor local")
    slurm = None
    if executor == "slurm":
        slurm = slurm_options(shard_spec, slurm_partition, slurm_time, slurm_cpus, slurm_gpus, slurm_mem,
                              slurm_parallelism, slurm_set)
    elif no_wait:
        raise UserError("--no-wait applies to --executor slurm; add --executor slurm")
    source = source_options(arch, model_dir, threat_model, sha256, expect_clean)
    grid = parse_list(teachers, "teachers")
    stages = max((recipe_stages(t, source, ("teacher", "student", "suite")) for t in grid), key=len)
    settings = make_settings(kw, threat_model)
    spec = SweepSpec(tuple(grid), tuple(parse_list(perturbs, "perturbs")), tuple(parse_seeds(seeds)), student, suite,
                     eps, n_eval, recipe_overrides(overrides, precision, stages, compile_attacks=compile_attacks),
                     not skip_teacher_eval, source)
    if estimate_only:
        check_estimable()
    else:  # an unreachable tracking store is refused before anything is timed or trained
        from robdistill.tracking.store import configure

        validate_grid(spec.teachers, spec.perturbs, student, spec.suite_for(settings.dataset), spec.overrides, source)
        configure(settings.tracking_uri, settings.experiment)
    estimate = None
    if estimate_only or announces_estimate(settings):
        estimate = sweep_estimate(settings, spec, shard=shard_spec, on_start=lambda: click.echo(ESTIMATING, err=True))
        click.echo(estimate.text(), err=not estimate_only)
        if pool is not None:
            click.echo(pool.describe(), err=not estimate_only)
        if estimate_only:
            return
    if pool is not None:
        run_local_sweep(settings, pool, spec, outputs)
        return
    if slurm is not None:
        run_slurm_sweep(settings, slurm, spec, outputs, wait=not no_wait)
        return
    outcome = run_sweep(settings, spec, shard=shard_spec, estimate=estimate,
                        on_cell=lambda i, n, text: click.echo(f"[{i}/{n}] {text}", err=True))
    print_sweep_tables(outcome.cells, outcome.claims, outputs)
    if shard_spec:
        click.echo(f"\nthis was shard {shard}; once every shard has finished, merge them with:\n"
                   + merge_hint("sweep-report", outcome.name, outcome.tracking_uri, settings.experiment))
    click.echo(f"\nMLflow sweep run: {outcome.run_id}  (sweep name {outcome.name}, store: {outcome.tracking_uri})")
    click.echo(ui_hint(outcome.tracking_uri, outcome.experiment_id))


def _executor_grid(settings, spec) -> tuple[str, list]:
    """The grid's sweep name and its (seed, teacher) groups, for an executor that runs every group
    (`sweep` has checked every input already)."""
    from robdistill.experiments.sweep import grid_name, shard_groups

    return grid_name(settings, spec), shard_groups(spec.seeds, spec.teachers, None)


def run_local_sweep(settings, pool, spec, outputs) -> None:
    """`sweep --executor local`: the grid's (seed, teacher) groups in a pool of processes, then the
    merged tables."""
    from robdistill.experiments.executors import run_pool

    name, groups = _executor_grid(settings, spec)
    click.echo(f"sweep {name}: {len(groups)} (seed, teacher) groups on a {pool.describe()}", err=True)
    result = run_pool(settings, pool, groups, spec, on_event=lambda text: click.echo(text, err=True))
    print_merged(settings, name, result.tracking_uri, outputs, result.failed, groups, "groups")


def slurm_options(shard_spec, partition, time_minutes, cpus, gpus, mem, parallelism, extra):
    """--executor slurm's settings, checked before anything is submitted."""
    import shutil as _shutil

    from robdistill.experiments.executors import SlurmOptions

    if shard_spec is not None:
        raise UserError("--executor slurm submits every (seed, teacher) group as an array task; drop --shard")
    if _shutil.which("sbatch") is None:
        raise UserError("--executor slurm needs Slurm's sbatch on PATH (a cluster's login node, or apt-get install "
                        "slurm-wlm for a one-node Slurm)")
    for name, value, least in (("--slurm-time", time_minutes, 1), ("--slurm-cpus", cpus, 1), ("--slurm-gpus", gpus, 0)):
        if value < least:
            raise UserError(f"{name} must be >= {least}; got {value}")
    if parallelism is not None and parallelism < 1:
        raise UserError(f"--slurm-parallelism must be >= 1; got {parallelism}")
    pairs = []
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--slurm-set expects KEY=VALUE (an sbatch option without its dashes, e.g. qos=low); "
                            f"got '{item}'")
        pairs.append((key.strip(), value.strip()))
    return SlurmOptions(partition, time_minutes, cpus, gpus, mem, parallelism, tuple(pairs))


def run_slurm_sweep(settings, options, spec, outputs, wait: bool) -> None:
    """`sweep --executor slurm`: one array task per (seed, teacher) group, through submitit; prints
    the job id and how to follow it, then (unless --no-wait) waits and prints the merged tables."""
    from robdistill.experiments.executors import shared_store, submit_slurm, wait_slurm
    from robdistill.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(settings.tracking_uri)
    if not wait and not uri.startswith(("http://", "https://")):
        raise UserError("a Slurm sweep that does not wait needs a tracking server its nodes reach: start `mlflow "
                        "server` and pass --tracking-uri http://HOST:PORT (README: from one machine to several)")
    name, groups = _executor_grid(settings, spec)
    folder = (settings.cache_dir / "slurm").resolve()
    with shared_store(settings.tracking_uri, settings.cache_dir / "logs") as served:
        if served != uri:
            click.echo(f"serving {uri} at {served} for the tasks while this command waits (jobs on other machines "
                       f"cannot reach it: give them --tracking-uri of a server they reach)", err=True)
        submission = submit_slurm(settings, options, groups, spec, served, folder)
        click.echo(f"submitted sweep {name}: Slurm job array {submission.job_id}, {len(groups)} tasks (one per (seed, "
                   f"teacher) group, {options.cpus} CPU(s) each); follow it with `squeue -j {submission.job_id}` and "
                   f"`robdistill sweep-status {name} --experiment {settings.experiment}`; logs in {folder}", err=True)
        if not wait:
            return
        failed = wait_slurm(submission, groups, on_event=lambda text: click.echo(text, err=True))
    print_merged(settings, name, uri, outputs, failed, groups, "Slurm tasks")
