"""The ``robdistill`` command line (click). Bad input ends in one line on stderr that says how
to fix it, exit status 2, no traceback."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import textwrap
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from robdistill.core.errors import UserError
from robdistill.core.threat import NORM_NAMES, NORMS, norm_of
from robdistill.tracking import schema

EPILOG = "Runs are logged to MLflow (default sqlite:///mlflow.db); see README.md."


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's preemption, torchrun's agent) taken like Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    """Raise :class:`Terminated` once; a second SIGTERM during the cleanup is ignored (SIGKILL is
    the hard stop) so the MLflow runs still end KILLED."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main
    thread; the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resume_hint(group: click.Group, ctx: click.Context) -> str:
    """``; run the same command with --resume to continue`` for commands that can resume, else ''."""
    command = group.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    if command is None or not any(p.name == "resume" for p in command.params):
        return ""
    return "; run the same command with --resume to continue from the last saved state"


class FriendlyGroup(click.Group):
    """Turns :class:`UserError` into ``error: <message>`` and exit 2; Ctrl-C into exit 130 and
    SIGTERM into exit 143, both with the MLflow runs marked KILLED (never left RUNNING)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with sigterm_as_interrupt():
                return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            if os.environ.get("RANK", "0") == "0":  # under torchrun one line, from rank 0
                cause = "terminated (SIGTERM)" if terminated else "interrupted"
                hint = resume_hint(self, ctx)  # the commands that can resume are the ones with runs
                click.echo(f"{cause}: the MLflow run was marked KILLED{hint}" if hint else cause, err=True)
            sys.exit(128 + int(signal.SIGTERM) if terminated else 130)


def common_options(func: Callable) -> Callable:
    options = [
        click.option("--dataset", default="digits", show_default=True,
                     help="Dataset name (see `robdistill list datasets`)."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seeds independent streams (init, batch order, training attacks, perturbations) for teacher and student."),
        click.option("--data-root", type=click.Path(path_type=Path), default=None,
                     help="Where torchvision-format datasets live [default: $ROBDISTILL_DATA or ~/.cache/robdistill/data]."),
        click.option("--download", is_flag=True, help="Download a missing dataset (needs internet)."),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 ... or auto."),
        click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
                     help="MLflow store or server [default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db]."),
        click.option("--experiment", default="robdistill", show_default=True, help="MLflow experiment name."),
        click.option("--cache-dir", type=click.Path(path_type=Path), envvar="ROBDISTILL_CACHE",
                     default=Path(".robdistill"), show_default=True,
                     help="Trained teachers (reused across runs) and student checkpoints."),
        click.option("--threads", type=int, default=None, envvar="ROBDISTILL_THREADS",
                     help="CPU threads of this process (torch intra-op) [default: torch's, one per core]. "
                          "Beside other jobs use 1, one process per core: two threads on a busy 2-core "
                          "machine ran many times slower. Results are bit-identical at a fixed count."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
        click.option("--no-registry", is_flag=True,
                     help="Neither reuse teachers from the tracking store's model registry nor register new ones."),
        click.option("--resume", is_flag=True,
                     help="Continue an interrupted teacher training / distillation from its last epoch, "
                          "or an evaluation from its last attack / AutoAttack chunk (state in "
                          "--cache-dir/state), in the same MLflow run."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def store_options(func: Callable) -> Callable:
    """``--experiment`` and ``--tracking-uri`` of the commands that read a store."""
    func = click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
                        help="MLflow store or server [default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db].")(func)
    return click.option("--experiment", default="robdistill", show_default=True,
                        help="MLflow experiment to read.")(func)


def overrides_option(help_text: str) -> Callable:
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=help_text)


PRECISION_NAMES = ("bf16", "fp32", "fp32-cl")  # robdistill.core.precision.PRECISIONS (a test keeps them equal)


def precision_option(func: Callable) -> Callable:
    return click.option("--precision", type=click.Choice(PRECISION_NAMES), default=None,
                        help="What training and attack passes run in: bf16 = bf16 autocast + channels-last "
                             "(faster only where bf16 is native: AMX CPUs, GPUs); fp32-cl = fp32 with "
                             "channels-last weights; verdicts and accuracies are always fp32 "
                             "[default: the recipes' precision, fp32].")(func)


def with_precision(overrides: tuple[str, ...], precision: str | None, stages: tuple[str, ...]) -> tuple[str, ...]:
    """``--set`` overrides plus ``<stage>.precision=<precision>`` for each stage (a bare
    ``precision=`` for a command whose overrides name one recipe: ``stages == ("",)``)."""
    if precision is None:
        return overrides
    return (*overrides, *(f"{stage + '.' if stage else ''}precision={precision}" for stage in stages))


TEACHER_HELP = ("Teacher: a recipe (standard, at, alp, aalp ... or a .toml path; trained, or reused from the cache), "
                "a robdistill checkpoint (.pt), robustbench:<Name> (a RobustBench model from --model-dir), a "
                "TorchScript file, or a state-dict file with --teacher-model. An external teacher (any but a recipe) "
                "is checked first: SHA-256, eval-mode determinism, clean accuracy (--expect-clean).")


def model_source_options(func: Callable, *, role: str) -> Callable:
    """``--model-dir``, ``--threat-model``, ``--expect-clean`` and the architecture and hash options
    of external models (robdistill.sources): ``--teacher-model`` / ``--teacher-sha256`` for a
    teacher, ``--model`` / ``--sha256`` (repeatable, one per model) for `evaluate`."""
    arch, sha = ("--teacher-model", "--teacher-sha256") if role == "teacher" else ("--model", "--sha256")
    which = "the --teacher file" if role == "teacher" else "state-dict files among MODELS"
    options = [
        click.option(arch, "arch", default=None, metavar="ARCH",
                     help=f"Architecture of {which} (a state dict): a name from `robdistill list models` (the "
                          "state dict of robdistill's own model, rd.build_model(...).state_dict(), normalisation "
                          "inside) or timm:<name> (a bare timm state dict, timm.create_model(name, "
                          "num_classes=C).state_dict(), for inputs normalised with the dataset's mean and std, "
                          "which robdistill applies in front so the model takes [0, 1] images; a robdistill "
                          "model's state dict, backbone.* and head.*, is recognised too)."),
        click.option("--model-dir", type=click.Path(path_type=Path), envvar="ROBDISTILL_MODEL_DIR", default=None,
                     help="RobustBench checkpoints, in RobustBench's layout: DIR/<dataset>/<threat model>/<Name>.pt "
                          "(never downloaded) [default: $ROBDISTILL_MODEL_DIR or ./models]."),
        click.option(sha, "sha256", default=None, multiple=role != "teacher", metavar="HEX",
                     help="The expected SHA-256 of the model file: a different file is refused before it is read "
                          "(every external model's hash is logged either way)"
                          + ("." if role == "teacher" else "; repeat it once per model, in order.")),
        click.option("--expect-clean", default=None, metavar="FRACTION|off",
                     help="Expected clean accuracy (e.g. 0.85): an error when it lies outside the 95% Wilson "
                          "interval of the accuracy measured on the evaluated test images [default: RobustBench's "
                          "value for robustbench:<Name>, else no check]; off skips the check."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def teacher_source_options(func: Callable) -> Callable:
    return model_source_options(func, role="teacher")


CORRUPTIONS = "corruptions"  # RobustBench's leaderboard that is no norm: its models are attacked under linf
THREAT_MODEL_CHOICES = (*NORM_NAMES, CORRUPTIONS)


def threat_model_option(func: Callable) -> Callable:
    """``--threat-model linf|l2`` (any case): the ball of every attack and adversarial training objective
    of the command, and the RobustBench leaderboard ``robustbench:<Name>`` comes from."""
    return click.option(
        "--threat-model", type=click.Choice(THREAT_MODEL_CHOICES, case_sensitive=False), default=None,
        help="The threat model of every stage: linf or l2 (the ball of every attack, of the teachers' adversarial "
             "training and of the validation PGD, at --eps or the dataset's radius for that norm: `robdistill list "
             "datasets`), and the RobustBench leaderboard robustbench:<Name> is read from (corruptions: that "
             "leaderboard's models, attacked under linf) [default: the recipes' and suite's own, linf].")(func)


def suite_norm(suite: str) -> str:
    """The threat model a named suite (or .toml path) declares: a suite has no per-dataset tables."""
    from robdistill.catalog import load_recipe

    return load_recipe("suite", suite).threat_model


def attack_norm(threat_model: str | None) -> str | None:
    """The norm ``--threat-model`` sets on the recipes: linf or l2; None for none or corruptions."""
    value = (threat_model or "").lower()
    return value if value in NORMS else None


def source_options(arch: str | None, model_dir: Path | None, threat_model: str | None, sha256: str | None,
                   expect_clean: str | None):
    """The options of an external model (robdistill.sources.SourceOptions) from the command line."""
    from robdistill.sources.registry import SourceOptions, parse_expect_clean

    value, check = parse_expect_clean(expect_clean)
    norm = attack_norm(threat_model)
    folder = CORRUPTIONS if threat_model and norm is None else norm_of(norm or "linf").autoattack  # RobustBench folder
    return SourceOptions(model_dir=model_dir, threat_model=folder, arch=arch, sha256=sha256,
                         expect_clean=value, check_clean=check)


def recipe_stages(teacher: str, source, stages: tuple[str, ...]) -> tuple[str, ...]:
    """``stages`` less ``teacher`` when the teacher is external (no recipe to set a precision on)."""
    from robdistill.sources.registry import is_recipe

    return stages if is_recipe(teacher, source) else tuple(s for s in stages if s != "teacher")


def eval_options(func: Callable) -> Callable:
    func = click.option("--n-eval", type=int, default=None,
                        help="Evaluate the first N test images (0 = all) [default: the suite's n_eval].")(func)
    func = click.option("--eps", type=float, default=None,
                        help="Radius of the threat model's ball: in [0, 1] under linf, >= 0 under l2 "
                             "[default: the suite's, else the dataset's for the threat model].")(func)
    func = click.option("--suite", default=None,
                        help="Attack suite name or .toml path [default: fast on digits, paper elsewhere].")(func)
    return func


estimate_option = click.option(
    "--estimate", "estimate_only", is_flag=True,
    help="Print how long this would take on this machine (timed batches of each stage; attacks as a range, "
         "their most if every sample survived) and stop, writing no run, checkpoint or cache (--download still "
         "fetches missing data); without it the estimate is printed before the job starts (not with --quiet).")


ESTIMATING = "estimating the duration: timing a few batches of each stage on this machine ..."


def announces_estimate(settings) -> bool:
    """Whether a job prints its estimate before it starts: with progress output, and not under
    torchrun (whose ranks would each time batches, and print)."""
    from robdistill.core import distributed

    return settings.progress and not distributed.context().active


def check_estimable() -> None:
    """``--estimate`` times batches on one process: under torchrun it is a one-line error."""
    from robdistill.core import distributed

    if distributed.context().active:
        raise UserError("--estimate times one process; run it without torchrun")


def make_settings(kw: dict[str, Any], threat_model: str | None = None):
    """The shared options as :class:`Settings`; ``threat_model`` is ``--threat-model`` (its norm is
    set on every recipe of the command)."""
    from robdistill.config.settings import Settings

    device = kw.pop("device")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        import torch

        try:
            if torch.device(device).type == "cuda" and not torch.cuda.is_available():
                raise UserError("--device cuda asked for, but no CUDA GPU is available; use --device cpu")
        except RuntimeError:
            raise UserError(f"unknown --device '{device}'; use cpu, cuda, cuda:N or auto") from None
    cache_dir = check_cache_dir(kw.pop("cache_dir"))
    set_threads(kw.pop("threads", None))
    if kw["seed"] < 0:
        raise UserError(f"--seed must be a non-negative integer; got {kw['seed']}")
    device = _join_torchrun(device)
    return Settings(dataset=kw.pop("dataset"), data_root=kw.pop("data_root"), download=kw.pop("download"),
                    seed=kw.pop("seed"), device=device, tracking_uri=kw.pop("tracking_uri"),
                    experiment=kw.pop("experiment"), cache_dir=cache_dir, progress=not kw.pop("quiet"),
                    resume=kw.pop("resume", False), use_registry=not kw.pop("no_registry", False),
                    threat_model=attack_norm(threat_model))


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op threads for this process (checked: at least 1)."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be >= 1; got {threads}")
    import torch

    torch.set_num_threads(threads)


def check_cache_dir(path: Path) -> Path:
    """``--cache-dir`` must be a directory or a path that can become one: no file on the way."""
    for part in (path, *path.parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                where = "" if part == path else f" (its parent {part} is not)"
                raise UserError(f"--cache-dir {path} is not a directory{where}; pass a directory path "
                                f"(or set $ROBDISTILL_CACHE to one)")
            break
    return path


def _join_torchrun(device: str) -> str:
    """Under ``torchrun``: join the process group, and let only rank 0 print results (the other
    ranks keep stderr for errors). Returns the rank's device."""
    import atexit
    import os

    from robdistill.core import distributed

    ctx, device = distributed.init_from_env(device)
    if ctx.active:
        atexit.register(distributed.shutdown)
        if not ctx.is_main:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    return device


def ui_hint(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """How to look at the runs (robdistill.tracking.views: the runs table with the accuracies that
    matter): a server is its own UI; a local store needs `robdistill ui`. With ``run_id`` (a run the
    runs view filters out: `distill`, `evaluate`, `train-teacher`), that run's own page."""
    from robdistill.tracking.store import DEFAULT_TRACKING_URI
    from robdistill.tracking.views import run_url, view_url

    what, address = ("open the run", lambda ui: run_url(ui, experiment_id, run_id)) if run_id else \
        ("open the runs view", lambda ui: view_url(ui, experiment_id))
    if tracking_uri.startswith(("http://", "https://")):
        return f"{what}:  {address(tracking_uri)}"
    store = "" if tracking_uri == DEFAULT_TRACKING_URI else f" --tracking-uri {tracking_uri}"
    return f"{what}:  robdistill ui{store}   -> {address('http://127.0.0.1:5000')}"


def merge_hint(command: str, name: str, tracking_uri: str, experiment: str) -> str:
    """The command that merges the shards of a split sweep or evaluation, with the store to read."""
    from robdistill.config.settings import DEFAULT_EXPERIMENT

    where = f" --tracking-uri {tracking_uri}" + (f" --experiment {experiment}" if experiment != DEFAULT_EXPERIMENT else "")
    return f"  robdistill {command} {name}{where}"


def print_outcome(outcome, heading: str) -> None:
    from robdistill.eval.tables import consistency_table, failed_checks

    if outcome.results:
        threats = ", ".join(dict.fromkeys(result.threat_label for result in outcome.results.values()))
        click.echo(f"\n{heading} (accuracy %, 95% Wilson interval; {threats})")
        click.echo(outcome.table)
        failures = failed_checks(outcome.results)
        click.echo("\nsanity checks: " + ("all passed" if not failures else "FAILED\n  " + "\n  ".join(failures)))
        for name, result in outcome.results.items():
            for key, messages in result.warnings.items():
                for message in messages:
                    click.echo(f"warning ({name}, {key}): {message}")
    if outcome.analyses:
        click.echo("\nconsistent (clean and PGD-20 correct) / inconsistent (clean correct, PGD-20 wrong) sets,"
                   " AALP Sec. 2.2")
        click.echo(consistency_table(outcome.analyses))
    provenance = getattr(outcome, "teacher_provenance", None)
    for role, path in outcome.checkpoints.items():
        source = "the model registry" if outcome.teacher_source == schema.SOURCE_REGISTRY else "cache"
        reused = f" (reused from {source})" if role == "teacher" and outcome.teacher_reused else ""
        if role == "teacher" and provenance is not None and provenance.source != "recipe":
            reused = f" ({provenance.id}, sha256 {provenance.sha256})"
        click.echo(f"{role} checkpoint: {path}{reused}")
    click.echo(f"MLflow run: {outcome.run_id}  (store: {outcome.tracking_uri})")
    # the runs view shows `run` rows; any other command's run is linked to its own page
    click.echo(ui_hint(outcome.tracking_uri, outcome.experiment_id, None if heading == "results" else outcome.run_id))


@click.group(cls=FriendlyGroup, epilog=EPILOG)
@click.version_option(package_name="robdistill")
def main() -> None:
    """How much adversarial robustness does a student inherit when it is distilled, on clean
    inputs only, from an adversarially trained teacher -- and which parts of the teacher's logits
    carry it?

    \b
    Quick start (embedded digits dataset, a few minutes on a laptop CPU):
      robdistill run --teacher alp --perturb nonmax-shuffle
      robdistill list

    \b
    Several processes or GPUs (DistributedDataParallel; only rank 0 logs):
      torchrun --nproc-per-node 2 -m robdistill.cli run --teacher at --perturb keep
    """
    import warnings

    warnings.formatwarning = one_line_warning


def one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     line: str | None = None) -> str:
    """Warnings on the command line as one line each (``warning: ...``), without the source line."""
    return f"warning: {message}\n"


@main.command()
@click.option("--teacher", required=True, help=TEACHER_HELP)
@click.option("--perturb", default="keep", show_default=True,
              help="What to do to the teacher's logits: keep, nonmax-shuffle, nonmax-flatten; extras "
                   "onehot, confidence-swap, nonmax-flatten-mean (`robdistill list perturbations`).")
@click.option("--student", default="default", show_default=True, help="Student recipe name or .toml path.")
@eval_options
@click.option("--skip-teacher-eval", is_flag=True, help="Attack only the student.")
@overrides_option("Override a recipe field: teacher.epochs=5, student.temperature=2, suite.n_eval=100 (repeatable).")
@precision_option
@estimate_option
@teacher_source_options
@threat_model_option
@common_options
def run(teacher, perturb, student, suite, eps, n_eval, skip_teacher_eval, overrides, precision, estimate_only, arch,
        model_dir, threat_model, sha256, expect_clean, **kw) -> None:
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

    source = source_options(arch, model_dir, threat_model, sha256, expect_clean)
    stages = recipe_stages(teacher, source, ("teacher", "student", "suite"))
    settings = make_settings(kw, threat_model)
    arguments = dict(teacher=teacher, perturb=perturb, student=student, suite=suite, eps=eps, n_eval=n_eval,
                     overrides=with_precision(overrides, precision, stages), evaluate_teacher=not skip_teacher_eval,
                     source=source)
    if estimate_only:
        check_estimable()
        click.echo(estimate_run(settings, on_start=lambda: click.echo(ESTIMATING, err=True), **arguments).text())
        return
    def announce(estimate: Callable[[], Any]) -> None:  # once the inputs are checked: say so, then time batches
        click.echo(ESTIMATING, err=True)
        click.echo(estimate().text(), err=True)

    announce = announce if announces_estimate(settings) else None
    outcome = run_experiment(settings, announce=announce, **arguments)
    print_outcome(outcome, "results")


@main.command()
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
@estimate_option
@teacher_source_options
@threat_model_option
@common_options
def sweep(teachers, perturbs, seeds, student, suite, eps, n_eval, skip_teacher_eval, outputs, shard, executor, workers,
          slurm_partition, slurm_time, slurm_cpus, slurm_gpus, slurm_mem, slurm_parallelism, slurm_set, no_wait,
          overrides, precision, estimate_only, arch, model_dir, threat_model, sha256, expect_clean, **kw) -> None:
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
    from robdistill.experiments.pipeline import split_overrides
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
    arguments = dict(teachers=grid, perturbs=parse_list(perturbs, "perturbs"), seeds=parse_seeds(seeds),
                     student=student, suite=suite, eps=eps, n_eval=n_eval,
                     overrides=with_precision(overrides, precision, stages), evaluate_teachers=not skip_teacher_eval,
                     shard=shard_spec, source=source)
    if estimate_only:
        check_estimable()
    else:  # an unreachable tracking store is refused before anything is timed or trained
        from robdistill.tracking.store import configure

        validate_grid(arguments["teachers"], arguments["perturbs"], student, suite or default_suite(settings.dataset),
                      split_overrides(arguments["overrides"]), source)
        configure(settings.tracking_uri, settings.experiment)
    estimate = None
    if estimate_only or announces_estimate(settings):
        estimate = sweep_estimate(settings, on_start=lambda: click.echo(ESTIMATING, err=True), **arguments)
        click.echo(estimate.text(), err=not estimate_only)
        if pool is not None:
            click.echo(pool.describe(), err=not estimate_only)
        if estimate_only:
            return
    if pool is not None:
        run_local_sweep(settings, pool, arguments, outputs)
        return
    if slurm is not None:
        run_slurm_sweep(settings, slurm, arguments, outputs, wait=not no_wait)
        return
    outcome = run_sweep(settings, on_cell=lambda i, n, text: click.echo(f"[{i}/{n}] {text}", err=True),
                        estimate=estimate, **arguments)
    print_sweep_tables(outcome.cells, outcome.claims, outputs)
    if shard_spec:
        click.echo(f"\nthis was shard {shard}; once every shard has finished, merge them with:\n"
                   + merge_hint("sweep-report", outcome.name, outcome.tracking_uri, settings.experiment))
    click.echo(f"\nMLflow sweep run: {outcome.run_id}  (sweep name {outcome.name}, store: {outcome.tracking_uri})")
    click.echo(ui_hint(outcome.tracking_uri, outcome.experiment_id))


def print_sweep_tables(cells, claims, outputs) -> None:
    from robdistill.eval.tables import format_table, write_table
    from robdistill.analysis.study import paired_rows, summary_rows

    summary, paired = summary_rows(cells), paired_rows(cells)
    click.echo("\nsweep summary (accuracy %; mean ± std over seeds [95% t-interval], or [95% Wilson] for one seed)")
    click.echo(format_table(*summary))
    click.echo("\neach perturbation against keep, same teacher and seed (Seguin et al. claim 3)")
    click.echo(format_table(*paired) if paired[1] else "(no keep cells to compare against)")
    if claims is not None:
        click.echo("\nteacher logits on the evaluated test images (Seguin et al. claim 1: AT lowers the mean "
                   "max logit and gap); mean over seeds [95% t-interval]")
        click.echo(format_table(claims.logits_header, claims.logits_rows))
        click.echo("\nsample-wise confidence agreement (Seguin et al. claim 2: AT and standard teachers differ "
                   "on which samples are confident)")
        click.echo(format_table(claims.agreement_header, claims.agreement_rows))
    extra = beyond_tables(cells)
    for title, (header, rows) in extra.values():
        click.echo(f"\n{title}")
        click.echo(format_table(header, rows))
    from robdistill.core import distributed

    for path in outputs if distributed.is_main() else []:  # under torchrun rank 0 writes
        write_table(path, *summary)
        write_table(path.with_name(f"{path.stem}-paired{path.suffix}"), *paired)
        for suffix, (_, table) in extra.items():
            write_table(path.with_name(f"{path.stem}-{suffix}{path.suffix}"), *table)
        click.echo(f"wrote {path}")


def _executor_grid(settings, arguments: dict) -> tuple[dict, str, list]:
    """The grid's arguments without ``shard``, its sweep name and its (seed, teacher) groups, for an
    executor that runs every group (`sweep` has checked every input already)."""
    from robdistill.experiments.sweep import grid_name, shard_groups

    arguments = {k: v for k, v in arguments.items() if k != "shard"}
    name = grid_name(settings, **{k: arguments[k] for k in ("teachers", "perturbs", "seeds", "student", "suite", "eps",
                                                             "n_eval", "overrides")})
    return arguments, name, shard_groups(arguments["seeds"], arguments["teachers"], None)


def _print_merged(settings, name: str, uri: str, outputs, failed: list, groups: list, what: str) -> None:
    """An executor's ending: the merged tables read back from the store, as `sweep-report` gives
    them; the failed groups as a one-line error."""
    from robdistill.tracking.sweeps import load_sweeps

    stored = load_sweeps(uri, settings.experiment, [name])
    print_sweep_tables(stored.cells, stored.claims(), outputs)
    click.echo(f"\nsweep name {name} (store: {uri}); its cells: robdistill sweep-status {name}")
    if failed:
        raise UserError(f"{len(failed)} of {len(groups)} {what} failed (group {failed[0][0]}: {failed[0][1]}); "
                        f"run the same command again to retry them")


def run_local_sweep(settings, pool, arguments: dict, outputs) -> None:
    """`sweep --executor local`: the grid's (seed, teacher) groups in a pool of processes, then the
    merged tables."""
    from robdistill.experiments.executors import run_pool

    arguments, name, groups = _executor_grid(settings, arguments)
    click.echo(f"sweep {name}: {len(groups)} (seed, teacher) groups on a {pool.describe()}", err=True)
    result = run_pool(settings, pool, groups, arguments, on_event=lambda text: click.echo(text, err=True))
    _print_merged(settings, name, result.tracking_uri, outputs, result.failed, groups, "groups")


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


def run_slurm_sweep(settings, options, arguments: dict, outputs, wait: bool) -> None:
    """`sweep --executor slurm`: one array task per (seed, teacher) group, through submitit; prints
    the job id and how to follow it, then (unless --no-wait) waits and prints the merged tables."""
    from robdistill.experiments.executors import shared_store, submit_slurm, wait_slurm
    from robdistill.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(settings.tracking_uri)
    if not wait and not uri.startswith(("http://", "https://")):
        raise UserError("a Slurm sweep that does not wait needs a tracking server its nodes reach: start `mlflow "
                        "server` and pass --tracking-uri http://HOST:PORT (README: from one machine to several)")
    arguments, name, groups = _executor_grid(settings, arguments)
    folder = (settings.cache_dir / "slurm").resolve()
    with shared_store(settings.tracking_uri, settings.cache_dir / "logs") as served:
        if served != uri:
            click.echo(f"serving {uri} at {served} for the tasks while this command waits (jobs on other machines "
                       f"cannot reach it: give them --tracking-uri of a server they reach)", err=True)
        submission = submit_slurm(settings, options, groups, arguments, served, folder)
        click.echo(f"submitted sweep {name}: Slurm job array {submission.job_id}, {len(groups)} tasks (one per (seed, "
                   f"teacher) group, {options.cpus} CPU(s) each); follow it with `squeue -j {submission.job_id}` and "
                   f"`robdistill sweep-status {name} --experiment {settings.experiment}`; logs in {folder}", err=True)
        if not wait:
            return
        failed = wait_slurm(submission, groups, on_event=lambda text: click.echo(text, err=True))
    _print_merged(settings, name, uri, outputs, failed, groups, "Slurm tasks")


def beyond_tables(cells) -> dict[str, tuple[str, tuple[list[str], list[list[str]]]]]:
    """Per-class accuracy and inheritance per sample (robdistill.analysis.inheritance), for a grid
    whose cells have a PGD attack; inheritance needs the teachers' own evaluations and a standard
    teacher. Keyed by the file suffix `--out` writes them under."""
    from robdistill.analysis.inheritance import class_table, inheritance_table

    if not any("pgd" in c.result.robust for c in cells):
        return {}
    out = {"classes": ("PGD accuracy % per class (mean over seeds), the worst class and its accuracy "
                       "[95% t-interval over seeds, each seed's worst class]", class_table(cells, "pgd"))}
    inheritance = inheritance_table(cells, "pgd")
    if inheritance[1]:
        out["inheritance"] = ("inheritance per sample: of the images the teacher keeps under PGD, the share its "
                              "student keeps, against the standard teacher's student (same perturbation and seed); "
                              "mean over seeds [95% t-interval]", inheritance)
    return out


@main.command("evaluate-report")
@click.argument("eval_name")
@store_options
def evaluate_report(eval_name, experiment, tracking_uri) -> None:
    """Merge the shards of a split evaluation (`evaluate --shard i/n` on several machines sharing a
    tracking server) from their per-sample flags: the table the whole evaluation would print."""
    from robdistill.experiments.pipeline import merged_evaluation
    from robdistill.eval.tables import failed_checks, results_table

    results = merged_evaluation(tracking_uri, experiment, eval_name)
    click.echo(f"{eval_name}: merged from its shards (accuracy %, 95% Wilson interval)")
    click.echo(results_table(results))
    failures = failed_checks(results)
    click.echo("\nsanity checks: " + ("all passed" if not failures else "FAILED\n  " + "\n  ".join(failures)))


@main.command("sweep-report")
@click.argument("sweep_names", nargs=-1, required=True)
@store_options
@click.option("--out", "outputs", multiple=True, type=click.Path(path_type=Path),
              help="Also write the summary to FILE.csv or FILE.md (and FILE-paired.*).")
def sweep_report(sweep_names, experiment, tracking_uri, outputs) -> None:
    """Merge a sweep's shards (run on several machines sharing a tracking server) from the store:
    the same summary and paired tables as `sweep`, from every finished evaluation tagged SWEEP_NAME,
    and Seguin et al.'s claims 1 and 2 from the teacher logits the shards logged.

    Several names merge several sweeps that differ only in teachers, perturbations or seeds, e.g. a
    grid run for seed 0 and extended later with seeds 1,2:

      robdistill sweep-report sweep-1a2b3c4d5e6f sweep-6f5e4d3c2b1a --out study.md
    """
    from robdistill.eval.tables import check_table_path
    from robdistill.tracking.sweeps import load_sweeps

    for path in outputs:
        check_table_path(path)
    stored = load_sweeps(tracking_uri, experiment, sweep_names)
    print_sweep_tables(stored.cells, stored.claims(), outputs)
    missing = stored.missing_logits()
    if missing:
        click.echo("\nnote: claims 1 and 2 leave out teachers whose logits no sweep logged (an older robdistill, "
                   "or a shard stopped early): " + ", ".join(f"{t} seed {s}" for t, s in missing))


@main.command("sweep-status")
@click.argument("sweep_name")
@store_options
def sweep_status_command(sweep_name, experiment, tracking_uri) -> None:
    """Which cells of a sweep are finished, running, failed, killed or missing in the store (every
    shard, from any machine sharing it): one line of counts, then a table per teacher and seed.
    Run the same `sweep` command again to continue it: finished cells are not run again.

    \b
    Example:
      robdistill sweep-status sweep-1a2b3c4d5e6f --experiment fmnist-study
    """
    from robdistill.eval.tables import format_table
    from robdistill.tracking.sweeps import sweep_status

    status = sweep_status(tracking_uri, experiment, sweep_name)
    counts = status.counts()
    click.echo(f"{sweep_name}: {len(status.cells)} cells: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    click.echo(format_table(*status.rows()))


@main.command("report")
@click.argument("sweep_names", nargs=-1)
@click.option("--out", "outputs", multiple=True, type=click.Path(path_type=Path),
              help="FILE.html (one self-contained page) or FILE.md (Markdown, figures in FILE_figures/); repeatable.")
@store_options
def report(sweep_names, outputs, experiment, tracking_uri) -> None:
    """A study report of one or more sweeps (merged as `sweep-report` merges them): the summary and
    paired tables, Seguin et al.'s claims 1-3 with verdicts, eps curves, logit-statistics and
    confidence figures, AALP's consistency table, every evaluation's sanity checks, and the commands
    and versions that produced it.

    \b
    Examples:
      robdistill report sweep-1a2b3c4d5e6f --out report.html
      robdistill report sweep-1a2b3c4d5e6f sweep-6f5e4d3c2b1a --out study.html --out benchmarks/results/study.md
    """
    from robdistill.report import build_report, check_output_path, write_report

    if not outputs:
        raise UserError("give an output: --out report.html (one self-contained page) or --out report.md")
    for path in outputs:
        check_output_path(path)
    built = build_report(sweep_names, tracking_uri=tracking_uri, experiment=experiment, outputs=outputs)
    for path in write_report(built, outputs):
        click.echo(f"wrote {path}")


@main.command("train-teacher")
@click.option("--teacher", required=True, help="Teacher recipe name or .toml path.")
@overrides_option("Override a recipe field, e.g. epochs=2 or objective=at (repeatable).")
@precision_option
@threat_model_option
@common_options
def train_teacher(teacher, overrides, precision, threat_model, **kw) -> None:
    """Train a teacher (or find it in the cache) and save its checkpoint."""
    from robdistill.experiments.pipeline import train_teacher_only

    print_outcome(train_teacher_only(make_settings(kw, threat_model), teacher, with_precision(overrides, precision, ("",))),
                  "teacher")


@main.command()
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
                               with_precision(overrides, precision, stages), source), "distillation")


def evaluate_source_options(func: Callable) -> Callable:
    return model_source_options(func, role="model")


@main.command()
@click.argument("models", nargs=-1, required=True)
@eval_options
@click.option("--eps-sweep", default=None, metavar="E1,E2,...",
              help="Also run the suite at each of these radii: a table and accuracy-versus-eps curves.")
@click.option("--shard", default=None, metavar="I/N",
              help="Attack only test rows I-1, I-1+N, ... (one machine's share of a large test set, "
                   "all sharing one tracking server); merge with `robdistill evaluate-report`.")
@overrides_option("Override a suite field, e.g. n_eval=100 or seed=3 (repeatable).")
@precision_option
@evaluate_source_options
@threat_model_option
@common_options
def evaluate(models, suite, eps, n_eval, eps_sweep, shard, overrides, precision, arch, model_dir, threat_model,
             sha256, expect_clean, **kw) -> None:
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
                                   with_precision(overrides, precision, ("",)), eps_values, shard_spec, sources)
    print_outcome(outcome, "evaluation" if shard_spec is None else f"evaluation, shard {shard} of the test rows")
    if shard_spec is not None:
        name = outcome.eval_name
        click.echo(f"\nthis was shard {shard}; once every shard has finished, merge them with:\n"
                   + merge_hint("evaluate-report", name, outcome.tracking_uri, settings.experiment))
    if outcome.eps_curves:
        click.echo("\naccuracy versus eps (accuracy %, 95% Wilson interval; eps_curves.png in the run)")
        click.echo(eps_table(outcome.eps_curves))


@main.command()
@store_options
@click.option("--stage", default=schema.STAGE_RUN, show_default=True,
              help="Which runs: run (one per `robdistill run` or sweep cell), evaluation, teacher, student, "
                   "evaluate, sweep (parents only; list a sweep's cells with --sweep); 'any' for all.")
@click.option("--sweep", default=None, help="Only the cells of this sweep (its parent run id).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Filter on a tag, e.g. teacher=alp (repeatable).")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1), help="At most this many runs.")
@click.option("--out", "outputs", multiple=True, type=click.Path(path_type=Path),
              help="Also write the table to FILE.csv or FILE.md (repeatable).")
def compare(experiment, tracking_uri, stage, sweep, tags, limit, outputs) -> None:
    """Runs from a tracking store as one table: tags and accuracy % [95% interval], newest first.

    \b
    Examples:
      robdistill compare
      robdistill compare --tag teacher=alp --tag dataset=digits --out alp.md
      robdistill compare --sweep 69935d2f6ff940ec... --out grid.csv
      robdistill compare --stage evaluation --tracking-uri http://127.0.0.1:5000
    """
    from robdistill.tracking.search import find_runs, runs_table
    from robdistill.eval.tables import format_table
    from robdistill.eval.tables import check_table_path, write_table

    for path in outputs:
        check_table_path(path)
    runs = find_runs(tracking_uri, experiment, None if stage == "any" else stage, sweep, tags, limit)
    if not runs:
        click.echo("no runs match")
        return
    header, rows = runs_table(runs)
    click.echo(format_table(header, rows))
    for path in outputs:
        write_table(path, header, rows)
        click.echo(f"wrote {path}")


@main.command()
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="MLflow store [default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db].")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--experiment", default="robdistill", show_default=True,
              help="The experiment whose runs view's address is printed (and shared, if it has none yet).")
def ui(tracking_uri, port, experiment) -> None:
    """Start MLflow's UI on 127.0.0.1 for the store in use (Ctrl-C or SIGTERM stops it and its
    workers). A tracking server (http://...) is its own UI: open its address instead."""
    from robdistill.tracking.search import find_experiment, open_ui, ui_command
    from robdistill.tracking.views import share_runs_view, view_url
    from robdistill.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if ui_command(uri, port) is None:
        click.echo(f"{uri} is a tracking server: open {uri} in a browser")
        return
    click.echo(f"MLflow UI for {uri} on http://127.0.0.1:{port} (Ctrl-C to stop)")
    try:
        found = find_experiment(uri, experiment)
        share_runs_view(found)  # a store written before robdistill shared its view gets it now
        click.echo(f"runs view: {view_url(f'http://127.0.0.1:{port}', found.experiment_id)}")
    except UserError:
        pass  # nothing has run here yet: the UI opens on its experiment list
    sys.exit(open_ui(uri, port))


@main.command()
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


LISTS = ("datasets", "models", "teachers", "students", "perturbations", "attacks", "suites", "objectives", "augmentations",
         "precisions", "threat-models", "sources")


@main.command("list")
@click.argument("what", required=False, type=click.Choice(LISTS))
def list_(what: str | None) -> None:
    """List what can be named on the command line (all kinds, or one)."""
    from robdistill.catalog import catalog

    for kind, entries in catalog().items():
        if what and kind != what:
            continue
        click.echo(f"{kind}:")
        width = max((len(n) for n in entries), default=0)
        columns = max(shutil.get_terminal_size((100, 24)).columns, width + 40)
        for name, text in entries.items():  # whole sentences; on a terminal wrapped under their column
            lines = (textwrap.wrap(text, columns - width - 4) if sys.stdout.isatty() else [text]) or [""]
            click.echo(f"  {name.ljust(width)}  {lines[0]}".rstrip())
            for line in lines[1:]:
                click.echo(f"  {'':{width}}  {line}")


if __name__ == "__main__":  # pragma: no cover
    main()
