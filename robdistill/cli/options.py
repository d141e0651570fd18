"""Options and checks several commands share: the common and store options, precision and threat
model, model sources, evaluation options, and the typed values they parse into (``Settings``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from robdistill.core.errors import UserError
from robdistill.core.precision import PRECISIONS
from robdistill.core.threat import NORM_NAMES, NORMS, norm_of


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


def precision_option(func: Callable) -> Callable:
    return click.option("--precision", type=click.Choice(PRECISIONS.names()), default=None,
                        help="What training and attack passes run in: bf16 = bf16 autocast + channels-last "
                             "(faster only where bf16 is native: AMX CPUs, GPUs); fp32-cl = fp32 with "
                             "channels-last weights; verdicts and accuracies are always fp32 "
                             "[default: the recipes' precision, fp32].")(func)


def compile_option(func: Callable) -> Callable:
    return click.option("--compile", "compile_attacks", is_flag=True,
                        help="Craft the attacks through torch.compile of the attacked model (the suite's "
                             "compile = true); every flag is still judged by an eager fp32 forward. Pays on "
                             "GPUs; on CPUs the compilation (about 20 s per model) is rarely repaid.")(func)


def recipe_overrides(overrides: tuple[str, ...], precision: str | None, stages: tuple[str, ...],
                     allowed: tuple[str, ...] = ("teacher", "student", "suite"), bare: str | None = None,
                     compile_attacks: bool = False):
    """``--set``, ``--precision`` and ``--compile`` parsed once, here at the command line's edge, into
    typed values per recipe stage (:class:`robdistill.config.overrides.Overrides`); ``allowed``: the
    stages the command's overrides reach; ``bare``: the one recipe a command's unprefixed fields
    belong to."""
    from robdistill.config.overrides import Overrides

    texts = with_precision(overrides, precision, stages)
    if compile_attacks:
        texts = (*texts, "compile=true" if bare == "suite" else "suite.compile=true")
    return Overrides.parse(texts, allowed, bare)


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
    from robdistill.api import load_recipe

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

    from robdistill.core import distributed

    ctx, device = distributed.init_from_env(device)
    if ctx.active:
        atexit.register(distributed.shutdown)
        if not ctx.is_main:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    return device


def evaluate_source_options(func: Callable) -> Callable:
    return model_source_options(func, role="model")
