"""Speed of the crafting / training precisions (robdistill.core.precision) against fp32.

What is measured. Every number comes from timings taken in one run of this script:

* **Speed-ups.** Each *candidate* precision against fp32 on the same model and data, the two timed
  *interleaved* (``speed.timed_pair``: a warm-up of each, then ``--repeats`` rounds alternating AB /
  BA; the ratio is the median of the per-round ratios fp32 / candidate, so > 1 means the candidate
  is faster). Candidates:

  - ``bf16``: the library's registered precision (``torch.autocast(bfloat16)`` + the model's conv
    weights in channels-last layout while it runs);
  - ``bf16-nchw``: the same autocast without channels-last;
  - ``fp32-cl``: fp32 math with channels-last weights (a layout-only lever).

  The two non-registered ones are ``Precision`` objects passed to the attacks; the training calls
  take a precision by *name* only, so they are registered for the duration of the call with
  ``PRECISIONS.override``.

  Workloads: ``pgd`` / ``cw`` (our PGD-k / CW-k on one batch of ``--n`` images), ``aa-custom`` (the
  AutoAttack components of the bundled ``cpu-image`` suite, read from that suite) and
  ``aa-standard`` on ``--aa-n`` images, ``at-epoch`` (one epoch of ``rd.train_teacher("at",
  epochs=1)`` on ``--train-n`` examples with PGD-``--steps``) and ``distill-epoch`` (one epoch of
  ``rd.distill(teacher, perturb="keep", epochs=1)`` from a fixed teacher: the default student
  recipe, clean inputs only, so no attack runs in it). The epochs are timed by
  the training loop itself (``model.history[0]["train/epoch_seconds"]``, counted through
  ``speed.Reported``), so building the model and the per-epoch validation stay out of them.

* **PGD-k against its k-pass limit**, per precision (fp32 and bf16): our PGD-k against k
  input-gradient passes (forward + backward to the images) of the same model on the same batch under
  the same precision, back to back, interleaved the same way (goal: within 10%).

Models are random-init (seeded, parameters frozen) ``small-cnn`` on 8x8 digits (the project's
default dataset, its real embedded images), ``small-cnn`` and ``lenet`` on random 1x28x28 images
(Fashion-MNIST-shaped) and ``resnet18`` on random 3x32x32 images (CIFAR-10-shaped); each borrows its
dataset's registry entry (normalisation, eps and step size for training, per-dataset recipe table).
The attacked labels are the model's own fp32 predictions, so every image enters the attack, and the
attack radius ``--eps`` is 0 by default: no image can be fooled, so every attack does its full work
on every image (what it costs on a perfectly robust model, an upper bound; with eps > 0 a random-init
model is fooled within a step or two and the attacks stop early, which would time something else).
The training workloads use their dataset's eps (adversarial training's PGD never stops early).

Budget. bf16 without native kernels (an AVX2-only CPU) is an order of magnitude slower than fp32,
so a full grid would run for hours. Before timing, one input-gradient pass per model and precision
is timed (the probe table) and every cell's cost is estimated from it; cells run in priority order
(the goal cells first) and a cell whose estimate exceeds what is left of ``--budget-minutes`` is
skipped and listed with its estimate. ``--budget-minutes 0`` runs everything asked for.

On CUDA (``--device cuda``) the AT epoch and AutoAttack standard also get absolute images/s, the
FLOPs of one run counted by ``torch.utils.flop_counter.FlopCounterMode`` and, with
``--peak-tflops``, the fraction of that peak (the script cannot know the GPU's bf16 peak).

    OMP_NUM_THREADS=1 python benchmarks/speed_precision.py --out benchmarks/results/speed_precision_cpu.md
    python benchmarks/speed_precision.py --device cuda --n 512 --aa-n 256 --train-n 8192 \\
        --budget-minutes 0 --peak-tflops PEAK --out benchmarks/results/speed_precision_cuda.md

(PEAK: the GPU's dense bf16 TFLOP/s from its datasheet.) AutoAttack ``standard`` and PGD on a
WideResNet-34-10 (not in the default rows; on a CPU one image's AutoAttack takes minutes):

    python benchmarks/speed_precision.py --device cuda --models wrn-34-10-32 --workloads aa-standard,pgd \
        --n 256 --aa-n 128 --budget-minutes 0 --peak-tflops PEAK --out benchmarks/results/speed_wrn_cuda.md
"""
from __future__ import annotations

import os
import shlex
import statistics
import sys
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, markdown_table  # noqa: E402
from speed import Reported, timed_pair  # noqa: E402

from robdistill.core.precision import PRECISIONS, Precision, PrecisionWarning, native_bf16  # noqa: E402

if TYPE_CHECKING:
    from robdistill.data.datasets import DatasetInfo, Splits

WORKLOADS = ("pgd", "cw", "aa-custom", "aa-standard", "at-epoch", "distill-epoch", "pgd-limit")
CANDIDATES = ("bf16", "bf16-nchw", "fp32-cl")
GOAL_SPEEDUP = 2.5      # bf16 on PGD-k and the AT epoch, 28x28 and 32x32 models (issue 16)
GOAL_LIMIT = 1.10       # PGD-k within 10% of k input-gradient passes
GOAL_WORKLOADS = ("pgd", "at-epoch")
VAL_IMAGES = 2          # the training calls validate on this many images after the epoch (outside its time)
# cost of a pass in units of one forward + backward to the images (for the budget estimates only)
FORWARD_ONLY = 1 / 3
TRAINING_STEP = 4 / 3   # forward + backward to the weights and the images' activations


def candidate_precision(name: str) -> Precision:
    """The precision a candidate name stands for (see the module docstring)."""
    if name == "bf16":
        return PRECISIONS.get("bf16")
    if name == "bf16-nchw":
        return Precision("bf16-nchw", torch.bfloat16, channels_last=False)
    if name == "fp32-cl":
        return Precision("fp32-cl", None, channels_last=True)
    if name == "fp32":
        return PRECISIONS.get("fp32")
    raise click.BadParameter(f"unknown candidate '{name}'; choose from {', '.join(CANDIDATES)}")


def registered(precision: Precision) -> AbstractContextManager[object]:
    """``precision`` findable by name in the registry for the ``with`` block (the recipes name theirs)."""
    if precision.name in PRECISIONS and PRECISIONS.get(precision.name) == precision:
        return nullcontext()
    return PRECISIONS.override(precision.name, precision)


@dataclass(frozen=True)
class ModelSpec:
    """A benchmark row: an architecture on images shaped like a registered dataset's."""

    key: str
    arch: str
    dataset: str  # the registry entry it borrows shape, normalisation, eps and recipe tables from
    data: str     # what the images are, in words


MODEL_SPECS = {s.key: s for s in (
    ModelSpec("small-cnn-8", "small-cnn", "digits", "digits 1x8x8 (real, embedded)"),
    ModelSpec("small-cnn-28", "small-cnn", "fashion-mnist", "random 1x28x28 (Fashion-MNIST-shaped)"),
    ModelSpec("lenet-28", "lenet", "fashion-mnist", "random 1x28x28 (Fashion-MNIST-shaped)"),
    ModelSpec("resnet18-32", "resnet18", "cifar10", "random 3x32x32 (CIFAR-10-shaped)"),
    ModelSpec("wrn-34-10-32", "wrn-34-10", "cifar10", "random 3x32x32 (CIFAR-10-shaped)"),
)}
#: the rows run unless --models names others: the WideResNet (the network of RobustBench's AutoAttack
#: figures; WRN-28-10's deeper sibling) is for a GPU, where `--models wrn-34-10-32 --workloads
#: aa-standard,pgd` times AutoAttack `standard` and PGD on it
DEFAULT_MODELS = ("small-cnn-8", "small-cnn-28", "lenet-28", "resnet18-32")


def per_model(text: str, option: str) -> dict[str, int]:
    """``"128"`` or ``"128,resnet18-32=8"``: a default and per-model values, as {model: value}."""
    default: int | None = None
    values: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.rpartition("=")
        if sep and key not in MODEL_SPECS:
            raise click.BadParameter(f"unknown model '{key}'; choose from {', '.join(MODEL_SPECS)}", param_hint=option)
        try:
            number = int(value)
        except ValueError:
            raise click.BadParameter(f"'{value}' is not an integer", param_hint=option) from None
        if number < 1:
            raise click.BadParameter(f"sizes must be >= 1; got {number}", param_hint=option)
        if sep:
            values[key] = number
        else:
            default = number
    if default is None and set(values) != set(MODEL_SPECS):
        raise click.BadParameter("give a default size (e.g. '64,resnet18-32=8')", param_hint=option)
    return {key: values.get(key, default) for key in MODEL_SPECS}  # type: ignore[misc]


def choices(text: str, allowed: tuple[str, ...] | list[str], option: str) -> list[str]:
    picked = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in picked if p not in allowed]
    if bad or not picked:
        raise click.BadParameter(f"choose from {', '.join(allowed)}; got {text!r}", param_hint=option)
    return picked


@dataclass
class Bench:
    """One model row: the model, its attacked batch and its training splits."""

    spec: ModelSpec
    device: str
    n: int
    aa_n: int
    train_n: int
    model: nn.Module = field(init=False)
    x: torch.Tensor = field(init=False)
    y: torch.Tensor = field(init=False)
    splits: "Splits" = field(init=False)
    pass_seconds: dict[str, float] = field(default_factory=dict)  # per example, from the probe

    def __post_init__(self) -> None:
        import robdistill as rd
        from robdistill.data.datasets import DATASETS, Split, Splits

        info = DATASETS.get(self.spec.dataset)
        g = torch.Generator().manual_seed(0)
        need = max(self.n, self.aa_n)
        if self.spec.dataset == "digits":
            real = rd.load_dataset("digits")
            test, train, val = real.test.head(need), real.train.head(self.train_n), real.val.head(VAL_IMAGES)
        else:
            def synthetic(count: int) -> Split:
                return Split(torch.rand(count, *info.shape, generator=g), torch.randint(info.num_classes, (count,),
                                                                                       generator=g))
            test, train, val = synthetic(need), synthetic(self.train_n), synthetic(VAL_IMAGES)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = rd.build_model(self.spec.arch, info.shape, info.num_classes, info.mean, info.std)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.x = test.x.to(self.device)
        with torch.no_grad():  # the model's own fp32 predictions: every image enters the attack
            self.y = self.model(self.x).argmax(1)
        self.splits = Splits(info, train, val, test).to(self.device)

    @property
    def info(self) -> "DatasetInfo":
        return self.splits.info

    def size(self, workload: str) -> int:
        return {"aa-custom": self.aa_n, "aa-standard": self.aa_n, "at-epoch": self.train_n,
                "distill-epoch": self.train_n}.get(workload, self.n)


def input_gradient_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: Precision) -> torch.Tensor:
    """One forward (under ``precision``) + backward to the images: the unit PGD repeats k times."""
    leaf = x.detach().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(precision.logits(model, leaf), y, reduction="sum"), leaf)
    return grad


def probe(bench: Bench, precisions: list[Precision], device: str) -> None:
    """Seconds per example of one input-gradient pass per precision (one timing after a warm-up, on
    up to 32 images on a CPU, on the whole attacked batch on a GPU, where a small batch is bound by
    kernel launches and would inflate the per-image cost): what the budget estimates are made from."""
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    count = bench.n if cuda else min(bench.n, 32)
    x, y = bench.x[:count], bench.y[:count]
    for precision in precisions:
        with precision.applied(bench.model):
            input_gradient_pass(bench.model, x, y, precision)
            sync()
            start = time.perf_counter()
            input_gradient_pass(bench.model, x, y, precision)
            sync()
            bench.pass_seconds[precision.name] = (time.perf_counter() - start) / count


def autoattack_passes(version: str, attacks: list[str] | None) -> float:
    """Passes per image (in forward + backward units) of an AutoAttack run where no image is ever
    fooled, from the library's own settings for that version (budget estimates only)."""
    from pyautoattack import AutoAttack

    adversary = AutoAttack(nn.Identity(), eps=0.0, version=version, attacks=attacks, device="cpu")
    apgd, apgd_t, fab, square = adversary.apgd, adversary.apgd_targeted, adversary.fab, adversary.square
    cost = {"apgd-ce": apgd.n_restarts * apgd.n_iter, "apgd-dlr": apgd.n_restarts * apgd.n_iter,
            "apgd-t": apgd_t.n_target_classes * apgd_t.n_restarts * apgd_t.n_iter,
            "fab": fab.n_restarts * fab.n_iter * (1 + FORWARD_ONLY),
            "fab-t": fab.n_target_classes * fab.n_restarts * fab.n_iter * (1 + FORWARD_ONLY),
            "square": square.n_queries * FORWARD_ONLY}
    return sum(cost[a] for a in adversary.attacks_to_run)


@dataclass
class Options:
    device: str
    steps: int
    eps: float
    repeats: int
    aa_custom: list[str]


@dataclass
class Cell:
    """One measurement: a workload on a model, a candidate precision against fp32 (for
    ``pgd-limit``: the precision's PGD-k against its k-pass limit)."""

    workload: str
    model: str
    candidate: str
    priority: int
    estimate: float = 0.0


def priority(workload: str, candidate: str) -> int:
    """Run order: the goal rows first; then the layout levers (fp32-cl everywhere, bf16 without
    channels-last on the goal workloads) and bf16's limit; then the rest."""
    if workload == "pgd-limit":
        return 0 if candidate == "fp32" else 2
    if workload == "aa-standard":
        return 5
    if candidate == "bf16":
        return 1 if workload in GOAL_WORKLOADS else 3
    if candidate == "fp32-cl" or workload in GOAL_WORKLOADS:
        return 2
    return 4


def estimate(cell: Cell, bench: Bench, opts: Options, aa_passes: dict[str, float]) -> float:
    """Seconds the cell should take (warm-up + repeats rounds of both sides), from the probe."""
    k, rounds = opts.steps, opts.repeats + 1
    ref = bench.pass_seconds["fp32"]
    cand = bench.pass_seconds[cell.candidate]
    size = bench.size(cell.workload)
    validation = VAL_IMAGES * (k + 2)  # the per-epoch validation PGD (outside the epoch time)
    per_image = {"pgd": k + 1, "cw": k + 1, "aa-custom": aa_passes["custom"], "aa-standard": aa_passes["standard"],
                 "at-epoch": k + FORWARD_ONLY + TRAINING_STEP, "distill-epoch": TRAINING_STEP + FORWARD_ONLY}
    if cell.workload == "pgd-limit":
        return rounds * size * (2 * k + 1) * cand
    passes = size * per_image[cell.workload] + (validation if cell.workload.endswith("epoch") else 0)
    return rounds * passes * (ref + cand)


def attack_call(name: str, bench: Bench, precision: Precision, opts: Options) -> Callable[[], object]:
    import robdistill as rd

    step = bench.info.step_for(opts.eps)
    if name == "pgd":
        attack = rd.attacks.PGD(opts.eps, steps=opts.steps, step_size=step, precision=precision)
    elif name == "cw":
        attack = rd.attacks.CW(opts.eps, steps=opts.steps, step_size=step, precision=precision)
    elif name == "aa-custom":
        attack = rd.attacks.build_attack("autoattack", opts.eps, version="custom", attacks=opts.aa_custom,
                                         precision=precision)
    else:
        attack = rd.attacks.build_attack("autoattack", opts.eps, version="standard", precision=precision)
    size = bench.size(name)
    x, y = bench.x[:size], bench.y[:size]
    return lambda: attack.run(bench.model, x, y, batch_size=len(y), progress=False)


def epoch_call(name: str, bench: Bench, precision: Precision, opts: Options) -> Callable[[], Reported]:
    """One training epoch in ``precision``, a fresh model from the same seed each call, timed by
    the training loop."""
    import robdistill as rd

    kind, recipe_name = ("teacher", "at") if name == "at-epoch" else ("student", "default")
    overrides = {"epochs": 1, "model": bench.spec.arch, "precision": precision.name}
    if kind == "teacher":
        overrides["attack_steps"] = opts.steps

    def call() -> Reported:
        with registered(precision):
            recipe = rd.load_recipe(kind, recipe_name, dataset=bench.info.name, **overrides)
            if kind == "teacher":
                model = rd.train_teacher(recipe, bench.splits, seed=0, device=opts.device)
            else:
                model = rd.distill(bench.model, bench.splits, perturb="keep", recipe=recipe, seed=0,
                                   device=opts.device)
        return Reported(model.history[0]["train/epoch_seconds"])

    return call


def workload_call(name: str, bench: Bench, precision: Precision, opts: Options) -> Callable[[], object]:
    return (epoch_call if name.endswith("epoch") else attack_call)(name, bench, precision, opts)


def limit_call(bench: Bench, precision: Precision, opts: Options) -> Callable[[], None]:
    """k input-gradient passes back to back under ``precision`` (its layout applied for the call,
    as the attack applies it): the cost PGD-k cannot go below."""
    x, y = bench.x[:bench.n], bench.y[:bench.n]

    def limit() -> None:
        with precision.applied(bench.model):
            for _ in range(opts.steps):
                input_gradient_pass(bench.model, x, y, precision)

    return limit


def require_cuda(device: str) -> None:
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        raise RuntimeError(f"the absolute-throughput measurement is for CUDA devices only; got {device}")


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker: everything counts under "Global"."""

    parents = ("Global",)

    def __enter__(self) -> "_GlobalOnly":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def counted_flops(fn: Callable[[], object], device: str) -> int:
    """FLOPs of one call of ``fn`` (matmuls and convolutions, forward and backward), CUDA only.

    FlopCounterMode's per-module tracker hooks every module's backward, which makes
    ``torch.autograd.grad(..., inputs=leaf)`` -- every PGD step -- fail ("A leaf node was passed to
    _will_engine_execute_node ..."); the total needs no per-module split, so the tracker is replaced."""
    from torch.utils.flop_counter import FlopCounterMode

    require_cuda(device)
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
    with counter:
        fn()
    torch.cuda.synchronize()
    return counter.get_total_flops()


def conv_kernels(precision: Precision, device: str) -> str:
    """The aten convolution ops one forward of a small conv net dispatches to under ``precision``
    (on a CPU without native bf16 kernels, bf16 falls back to ``aten::_slow_conv2d_forward``)."""
    from torch.profiler import ProfilerActivity, profile

    net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1)).to(device)
    x = torch.rand(8, 1, 28, 28, device=device)
    with precision.applied(net), torch.no_grad():
        precision.logits(net, x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            precision.logits(net, x)
    names = sorted({e.key for e in prof.key_averages() if "conv" in e.key and e.key not in
                    ("aten::conv2d", "aten::convolution", "aten::_convolution")})
    return ", ".join(f"`{n}`" for n in names) or "none seen"


@dataclass
class Outcome:
    cell: Cell
    size: int
    first: float = 0.0    # fp32 (speed-up rows) or our PGD-k (limit rows), seconds per call
    second: float = 0.0   # the candidate (speed-up rows) or the k-pass limit (limit rows)
    ratio: float = 0.0
    seconds: float = 0.0  # wall time the cell took
    skipped: str = ""
    absolute: list[list[str]] = field(default_factory=list)


def goal(cell: Cell, spec: ModelSpec) -> str:
    if cell.workload == "pgd-limit":
        return f"<= {GOAL_LIMIT:.2f}"
    if cell.candidate == "bf16" and cell.workload in GOAL_WORKLOADS and spec.dataset != "digits":
        return f">= {GOAL_SPEEDUP:g}"
    return "report"


def verdict(outcome: Outcome, spec: ModelSpec) -> str:
    target = goal(outcome.cell, spec)
    if target.startswith(">="):
        return "met" if outcome.ratio >= GOAL_SPEEDUP else "**not met**"
    if target.startswith("<="):
        return "met" if outcome.ratio <= GOAL_LIMIT else "**not met**"
    return ""


ABSOLUTE_WORKLOADS = ("at-epoch", "aa-standard")


def absolute_rows(out: "Outcome", timed_runs: list[tuple[Precision, Callable[[], object], float]], device: str,
                  peak_tflops: float | None) -> list[list[str]]:
    """Per precision: images/s at the measured median time, the FLOPs of one more run (counted) and
    the achieved TFLOP/s, as a fraction of ``peak_tflops`` when given (CUDA only)."""
    rows = []
    for precision, fn, seconds in timed_runs:
        flops = counted_flops(fn, device)
        tflops = flops / seconds / 1e12
        share = f"{tflops / peak_tflops:.2%}" if peak_tflops else "give --peak-tflops"
        rows.append([out.cell.workload, out.cell.model, precision.name, f"{out.size / seconds:.4g}",
                     f"{flops / 1e9:.4g}", f"{tflops:.4g}", share])
    return rows


def run_cell(cell: Cell, bench: Bench, opts: Options, peak_tflops: float | None) -> Outcome:
    ref = candidate_precision("fp32")
    precision = candidate_precision(cell.candidate)
    started = time.perf_counter()
    out = Outcome(cell, bench.size(cell.workload))
    if cell.workload == "pgd-limit":
        ours = attack_call("pgd", bench, precision, opts)
        out.first, out.second, out.ratio = timed_pair(ours, limit_call(bench, precision, opts), opts.repeats,
                                                      opts.device)
    else:
        base, cand = (workload_call(cell.workload, bench, p, opts) for p in (ref, precision))
        out.first, out.second, out.ratio = timed_pair(base, cand, opts.repeats, opts.device)
        if torch.device(opts.device).type == "cuda" and cell.workload in ABSOLUTE_WORKLOADS:
            out.absolute = absolute_rows(out, [(ref, base, out.first), (precision, cand, out.second)],
                                         opts.device, peak_tflops)
    out.seconds = time.perf_counter() - started
    return out


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def report(outcomes: list[Outcome], benches: dict[str, Bench], opts: Options, header: list[str],
           device: str) -> list[str]:
    order = {w: i for i, w in enumerate(WORKLOADS)}
    models = {m: i for i, m in enumerate(MODEL_SPECS)}
    cands = {c: i for i, c in enumerate(("fp32", *CANDIDATES))}
    outcomes = sorted(outcomes, key=lambda o: (order[o.cell.workload], models[o.cell.model], cands[o.cell.candidate]))
    done = [o for o in outcomes if not o.skipped]
    speed = [o for o in done if o.cell.workload != "pgd-limit"]
    limits = [o for o in done if o.cell.workload == "pgd-limit"]
    skipped = [o for o in outcomes if o.skipped]
    lines = list(header)

    lines += ["## Speed-ups against fp32 (interleaved, median of per-round ratios; > 1 = the candidate is faster)",
              ""]
    if speed:
        rows = [[o.cell.workload, o.cell.model, o.cell.candidate, str(o.size), fmt_seconds(o.first),
                 fmt_seconds(o.second), f"{o.ratio:.3f}", goal(o.cell, MODEL_SPECS[o.cell.model]),
                 verdict(o, MODEL_SPECS[o.cell.model])] for o in speed]
        lines += markdown_table(["workload", "model", "candidate", "images", "fp32", "candidate", "speed-up fp32 / "
                                 "candidate", "goal", "verdict"], rows)
    else:
        lines.append("(no speed-up cell ran)")
    lines.append("")
    lines += [f"## PGD-{opts.steps} against its {opts.steps}-pass limit ({opts.steps} input-gradient passes under the "
              "same precision, interleaved)", ""]
    if limits:
        rows = [[o.cell.model, o.cell.candidate, str(o.size), fmt_seconds(o.first), fmt_seconds(o.second),
                 f"{o.ratio:.3f}", goal(o.cell, MODEL_SPECS[o.cell.model]), verdict(o, MODEL_SPECS[o.cell.model])]
                for o in limits]
        lines += markdown_table(["model", "precision", "images", f"our PGD-{opts.steps}", f"{opts.steps} passes",
                                 "ratio", "goal", "verdict"], rows)
    else:
        lines.append("(no limit cell ran)")
    lines.append("")

    absolute = [r for o in done for r in o.absolute]
    if absolute:
        lines += ["## Absolute throughput (CUDA; FLOPs of one run counted by FlopCounterMode, the AT epoch's "
                  f"including its {VAL_IMAGES}-image validation)", ""]
        lines += markdown_table(["workload", "model", "precision", "images/s", "GFLOP per run", "TFLOP/s",
                                 "of --peak-tflops"], absolute)
        lines.append("")

    lines += ["## Summary (computed from the tables above)", ""]
    goal_cells = [o for o in speed if goal(o.cell, MODEL_SPECS[o.cell.model]).startswith(">=")]
    if goal_cells:
        met = sum(o.ratio >= GOAL_SPEEDUP for o in goal_cells)
        lines.append(f"- bf16 goal cells (PGD-{opts.steps} and the AT epoch, 28x28 / 32x32 models): {met} of "
                     f"{len(goal_cells)} reach >= {GOAL_SPEEDUP:g}; their speed-ups range "
                     f"{min(o.ratio for o in goal_cells):.3f} - {max(o.ratio for o in goal_cells):.3f}.")
    for cand in CANDIDATES:
        picked = [o.ratio for o in speed if o.cell.candidate == cand]
        if picked:
            lines.append(f"- {cand} against fp32, all its {len(picked)} cells: speed-up median "
                         f"{statistics.median(picked):.3f} (range {min(picked):.3f} - {max(picked):.3f}).")
    for o in limits:
        lines.append(f"- PGD-{opts.steps} / {opts.steps}-pass limit, {o.cell.model} {o.cell.candidate}: {o.ratio:.3f} "
                     f"({verdict(o, MODEL_SPECS[o.cell.model]) or 'report'}).")
    if skipped:
        lines.append(f"- {len(skipped)} cell(s) skipped: see the last table.")
    lines.append("")

    lines += ["## Probe: one input-gradient pass per precision (one timing after a warm-up, up to 32 images on a "
              "CPU, the whole PGD batch on a GPU; used for the budget estimates, not a ratio)", ""]
    precisions = ["fp32", *CANDIDATES]
    rows = [[key, *(f"{1e6 * b.pass_seconds[p]:.0f}" if p in b.pass_seconds else "" for p in precisions),
             *(f"{b.pass_seconds['fp32'] / b.pass_seconds[p]:.2f}" if p in b.pass_seconds else ""
               for p in CANDIDATES)] for key, b in benches.items()]
    lines += markdown_table(["model", *(f"{p} µs/image" for p in precisions),
                             *(f"fp32 / {p}" for p in CANDIDATES)], rows)
    lines.append("")
    if skipped:
        lines += ["## Skipped cells", ""]
        lines += markdown_table(["workload", "model", "candidate", "images", "estimated s", "why"],
                                [[o.cell.workload, o.cell.model, o.cell.candidate, str(o.size),
                                  f"{o.cell.estimate:.0f}", o.skipped] for o in skipped])
        lines.append("")
    return lines


def command() -> str:
    """This run's command line, with the thread-count variables it ran under."""
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ]
    return " ".join(shlex.quote(a) for a in [*env, "python", *sys.argv])


@click.command()
@click.option("--models", default=",".join(DEFAULT_MODELS), show_default=True,
              help=f"Rows, from: {', '.join(MODEL_SPECS)}.")
@click.option("--workloads", default=",".join(WORKLOADS), show_default=True,
              help="pgd, cw: PGD-k / CW-k on --n images; aa-custom (the cpu-image suite's AutoAttack), aa-standard "
                   "on --aa-n images; at-epoch, distill-epoch: one training epoch on --train-n examples; pgd-limit: "
                   "PGD-k against k input-gradient passes, per --limit-precisions.")
@click.option("--candidates", default=",".join(CANDIDATES), show_default=True,
              help="Precisions timed against fp32: bf16 (the library's), bf16-nchw, fp32-cl.")
@click.option("--limit-precisions", default="fp32,bf16", show_default=True,
              help="Precisions whose PGD-k is timed against its k-pass limit.")
@click.option("--repeats", default=3, show_default=True, help="Interleaved rounds per ratio (after one warm-up each).")
@click.option("--threads", default=1, show_default=True, help="torch.set_num_threads.")
@click.option("--steps", default=10, show_default=True, help="k of PGD-k / CW-k and of the AT epoch's PGD.")
@click.option("--eps", default=0.0, show_default=True,
              help="Radius of the timed attacks (0: no image is ever fooled, every attack does its full work).")
@click.option("--n", "n_text", default="128,small-cnn-28=32,lenet-28=32,resnet18-32=4,wrn-34-10-32=2", show_default=True,
              help="Images per PGD / CW batch: a default and per-model values.")
@click.option("--aa-n", "aa_text", default="8,small-cnn-28=4,lenet-28=4,resnet18-32=2,wrn-34-10-32=1",
              show_default=True,
              help="Images per AutoAttack run.")
@click.option("--train-n", "train_text", default="512,small-cnn-28=64,lenet-28=64,resnet18-32=8,wrn-34-10-32=4",
              show_default=True,
              help="Training examples per epoch.")
@click.option("--budget-minutes", default=25.0, show_default=True,
              help="Skip cells whose estimated time exceeds what is left of this (0 = no limit).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:i].")
@click.option("--peak-tflops", type=float, default=None,
              help="The GPU's dense bf16 peak in TFLOP/s, for the fraction-of-peak column (CUDA only).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the Markdown report here.")
def main(models: str, workloads: str, candidates: str, limit_precisions: str, repeats: int, threads: int, steps: int,
         eps: float, n_text: str, aa_text: str, train_text: str, budget_minutes: float, device: str,
         peak_tflops: float | None, out: Path | None) -> None:
    import robdistill as rd

    started = time.perf_counter()
    is_cuda = torch.device(device).type == "cuda"
    if is_cuda and not torch.cuda.is_available():
        raise click.UsageError(f"--device {device}: CUDA is not available here")
    if peak_tflops is not None and not is_cuda:
        raise click.UsageError("--peak-tflops is for --device cuda")
    if repeats < 1 or steps < 1 or threads < 1:
        raise click.UsageError("--repeats, --steps and --threads must be >= 1")
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore", PrecisionWarning)  # native_bf16 is reported in the header instead
    model_keys = choices(models, list(MODEL_SPECS), "--models")
    workload_names = choices(workloads, WORKLOADS, "--workloads")
    candidate_names = choices(candidates, CANDIDATES, "--candidates")
    limit_names = choices(limit_precisions, ("fp32", *CANDIDATES), "--limit-precisions")
    sizes = {name: per_model(text, f"--{name}") for name, text in (("n", n_text), ("aa-n", aa_text),
                                                                     ("train-n", train_text))}
    suite = rd.load_recipe("suite", "cpu-image")
    aa_entry = next(e for e in suite.attack if e["name"] == "autoattack")
    opts = Options(device, steps, eps, repeats, list(aa_entry["attacks"]))
    aa_passes = {"custom": autoattack_passes(aa_entry["version"], opts.aa_custom),
                 "standard": autoattack_passes("standard", None)}

    probed = ["fp32", *dict.fromkeys(candidate_names + [p for p in limit_names if p != "fp32"])]
    benches: dict[str, Bench] = {}
    for key in model_keys:
        bench = Bench(MODEL_SPECS[key], device, sizes["n"][key], sizes["aa-n"][key], sizes["train-n"][key])
        probe(bench, [candidate_precision(p) for p in probed], device)
        benches[key] = bench
        click.echo(f"[probe] {key}: " + ", ".join(f"{p} {1e6 * s:.0f} µs/image" for p, s in bench.pass_seconds.items()),
                   err=True)

    cells = [Cell(w, m, c, priority(w, c)) for m in model_keys for w in workload_names if w != "pgd-limit"
             for c in candidate_names]
    if "pgd-limit" in workload_names:
        cells += [Cell("pgd-limit", m, p, priority("pgd-limit", p)) for m in model_keys for p in limit_names]
    for cell in cells:
        cell.estimate = estimate(cell, benches[cell.model], opts, aa_passes)
    cells.sort(key=lambda c: (c.priority, c.estimate))
    budget = 60 * budget_minutes
    size_text = "; ".join(f"{k}: PGD/CW {b.n}, AutoAttack {b.aa_n}, training {b.train_n}" for k, b in benches.items())
    kernels = "; ".join(f"{p}: {conv_kernels(candidate_precision(p), device)}" for p in ("fp32", *candidate_names))
    header = [f"Command: `{command()}`  ",
              f"Machine: {machine(device)}  ",
              f"`native_bf16('{torch.device(device).type}')` = {native_bf16(torch.device(device).type)}; "
              f"convolution kernels per precision (profiled): {kernels}  ",
              f"torch.set_num_threads({threads}); {repeats} interleaved rounds after one warm-up of each side; "
              f"PGD-{steps} / CW-{steps} at eps {eps:g} (labels = the model's fp32 predictions); AutoAttack custom = "
              f"the cpu-image suite's {'+'.join(opts.aa_custom)}; training epochs at their dataset's eps, validation "
              f"on {VAL_IMAGES} images.  ",
              "Models: random-init (seed 0), " + "; ".join(f"{k} on {b.spec.data}" for k, b in benches.items())
              + ".  ",
              f"Sizes (images): {size_text}.  "]
    outcomes: list[Outcome] = []

    def write_report(partial: bool) -> None:
        """The report of the cells measured so far: while ``partial`` only to ``out`` (a run killed at its
        time limit keeps what it measured), at the end printed and written."""
        title = [f"# Precision speed benchmark ({device})", ""]
        if partial:
            title += [f"**Partial: {len(outcomes)} cell(s) so far; the run had not finished when this was "
                      "written.**", ""]
        budget_line = (f"Budget: {budget_minutes:g} min ({'none' if not budget else 'cells over it skipped'}); "
                       f"wall time: {time.perf_counter() - started:.0f} s.")
        text = "\n".join(report(outcomes, benches, opts, [*title, *header, budget_line, ""], device))
        if partial:
            out.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            out.write_text(text + "\n")  # type: ignore[union-attr]
        else:
            emit(text, out)

    for cell in cells:
        left = budget - (time.perf_counter() - started)
        if budget and cell.estimate > left:
            outcomes.append(Outcome(cell, benches[cell.model].size(cell.workload),
                                    skipped=f"estimated {cell.estimate:.0f} s > {max(left, 0):.0f} s left of "
                                            f"--budget-minutes {budget_minutes:g}"))
            click.echo(f"[skip] {cell.workload} {cell.model} {cell.candidate} (estimate {cell.estimate:.0f} s, "
                       f"{left:.0f} s left)", err=True)
            continue
        result = run_cell(cell, benches[cell.model], opts, peak_tflops)
        outcomes.append(result)
        click.echo(f"[done] {cell.workload} {cell.model} {cell.candidate}: {result.first:.3f} s vs "
                   f"{result.second:.3f} s, ratio {result.ratio:.3f} ({result.seconds:.0f} s, estimate "
                   f"{cell.estimate:.0f} s)", err=True)
        if out is not None:
            write_report(partial=True)
    write_report(partial=False)


if __name__ == "__main__":
    main()
