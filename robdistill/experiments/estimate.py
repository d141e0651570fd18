"""How long a job will take, from timed batches on this machine, before it starts.

- **Training** (a teacher, a student): the real training function runs one epoch on two batches
  (the recipe's objective, its training attack, precision and the epoch's validation), twice (the
  first warms up); a step's cost times the steps per epoch, plus the validation, times the epochs.
- **Attacks**: each attack's own code timed on a batch that survives it (its eps = 0 probe with a
  few iterations, on at most ``PROBE_IMAGES`` images labelled with the model's predictions), scaled
  by the ratio of the attack's budget (:meth:`robdistill.attacks.base.Attack.budget`: its passes on
  a sample that survives to the end) to the probe's, and by the ratio of a pass's per-image cost at
  the attack's batch size to its cost at the probe's (a GPU's small batches cost more per image),
  times the images. The most it can take: attacks stop on
  the samples they break, so a weak model costs a fraction of it (the least counts one pass per
  attack and image).

`robdistill run --estimate` prints the estimate and stops; `run` prints it before it starts (unless
``--quiet``)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import torch
from torch import nn

from robdistill.config.recipes import StudentRecipe, SuiteRecipe, TeacherRecipe
from robdistill.core.modes import eval_mode, private_generator
from robdistill.core.precision import resolve_precision
from robdistill.core.progress import duration
from robdistill.data.datasets import DatasetInfo, Splits

TIMED_BATCHES = 2  # training steps timed per stage, after an untimed epoch of as many
PROBE_IMAGES = 64  # each attack's probe runs on at most this many images (AutoAttack's time is linear in them)


@dataclass(frozen=True)
class StageEstimate:
    """A stage's expected seconds in [low, high] (equal for training, a range for attacks)."""

    name: str
    low: float
    high: float
    detail: str = ""

    def span(self) -> str:
        """``2.0 min``, or ``1 s to 10.0 min`` where the bounds differ by more than a fifth."""
        return duration(self.high) if self.low >= 0.8 * self.high else f"{duration(self.low)} to {duration(self.high)}"

    def text(self) -> str:
        return f"{self.name} {self.span()}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Estimate:
    stages: list[StageEstimate] = field(default_factory=list)

    @property
    def low(self) -> float:
        return sum(stage.low for stage in self.stages)

    @property
    def high(self) -> float:
        return sum(stage.high for stage in self.stages)

    def times(self, count: int) -> "Estimate":
        """``count`` jobs like this one (the cells of a sweep)."""
        return Estimate([StageEstimate(s.name, s.low * count, s.high * count, s.detail) for s in self.stages])

    def text(self) -> str:
        total = StageEstimate("total", self.low, self.high).span()
        threads = torch.get_num_threads()
        cores = (f"{self.low * threads / 3600:.1f} to {self.high * threads / 3600:.1f} core-hours at {threads} "
                 f"thread{'s' if threads != 1 else ''} per process (one process; N processes of one thread "
                 f"each share the core-hours)")
        return (f"estimated duration on this machine: {total}, {cores}\n"
                + "\n".join(f"  {stage.text()}" for stage in self.stages))


def _wall(fn: Callable[[], object], device: str | torch.device = "cpu") -> float:
    """Seconds ``fn`` takes, its queued GPU work included."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def _random_images(count: int, info: DatasetInfo, device: str | torch.device) -> torch.Tensor:
    """Images in [0, 1] from a private generator (the caller's global RNG is never drawn from)."""
    return torch.rand(count, *info.shape, generator=private_generator(0, device), device=device)


@contextmanager
def preserved_rng(device: str | torch.device) -> Iterator[None]:
    """The global RNG (CPU, and ``device``'s if it is a GPU) as it was before: estimating a job
    never changes what the same process computes afterwards (same seed, same numbers)."""
    target = torch.device(device)
    devices = [target.index if target.index is not None else torch.cuda.current_device()] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def timed_passes(model: nn.Module, info: DatasetInfo, batch_size: int, precision: str = "fp32",
                 device: str | torch.device = "cpu") -> tuple[float, float]:
    """Seconds per image of a forward + backward pass to the input, and of a forward pass, at
    ``batch_size`` in ``precision`` (a warm-up pass first, then the faster of two)."""
    mode = resolve_precision(precision)
    x = _random_images(batch_size, info, device)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)

    def gradient() -> None:
        inputs = x.clone().requires_grad_(True)
        with mode.autocast(x.device):
            loss = nn.functional.cross_entropy(model(inputs).float(), y)
        torch.autograd.grad(loss, inputs)

    def forward() -> None:
        with torch.no_grad(), mode.autocast(x.device):
            model(x)

    with eval_mode(model), mode.applied(model):
        gradient()
        forward()
        seconds = (min(_wall(gradient, device) for _ in range(2)), min(_wall(forward, device) for _ in range(2)))
    return seconds[0] / batch_size, seconds[1] / batch_size


def _epoch_seconds(train_one_epoch: Callable[[], nn.Module], batch_size: int, n_train: int) -> tuple[float, float]:
    """(seconds per training step, seconds of the epoch's validation) from one real epoch on
    ``TIMED_BATCHES`` batches, after an untimed one (first calls allocate and warm up)."""
    train_one_epoch()
    started = time.perf_counter()
    model = train_one_epoch()
    total = time.perf_counter() - started
    train_seconds = model.history[0]["train/epoch_seconds"]  # type: ignore[attr-defined]
    steps = max(1, -(-min(n_train, TIMED_BATCHES * batch_size) // batch_size))
    return train_seconds / steps, max(0.0, total - train_seconds)


def teacher_estimate(recipe: TeacherRecipe, splits: Splits, seed: int, device: str | torch.device) -> StageEstimate:
    """The teacher's training time, from one epoch of the real training on two batches."""
    from robdistill.train.teacher import train_teacher_model

    n = len(recipe.training_split(splits.train))
    probe = replace(recipe, epochs=1, train_subset=min(n, TIMED_BATCHES * recipe.batch_size))
    step, validation = _epoch_seconds(lambda: train_teacher_model(probe, splits, seed, device, progress=False),
                                      recipe.batch_size, n)
    steps = -(-n // recipe.batch_size)
    seconds = recipe.epochs * (steps * step + validation)
    return StageEstimate(f"teacher {recipe.name}", seconds, seconds,
                         f"{recipe.epochs} epochs x {steps} steps of {step:.2f} s + validation {validation:.1f} s")


def student_estimate(recipe: StudentRecipe, perturb: str, teacher: nn.Module, splits: Splits, seed: int,
                     device: str | torch.device) -> StageEstimate:
    """The student's distillation time, from one epoch of the real distillation on two batches
    (and the teacher's logits on the whole training split, computed once)."""
    from robdistill.train.distillation import distill_model

    n = len(recipe.training_split(splits.train))
    probe = replace(recipe, epochs=1, train_subset=min(n, TIMED_BATCHES * recipe.batch_size))
    step, validation = _epoch_seconds(
        lambda: distill_model(teacher, probe, perturb, splits, seed, device, progress=False), recipe.batch_size, n)
    _, forward = timed_passes(teacher, splits.info, min(recipe.batch_size, 256), "fp32", device)
    steps = -(-n // recipe.batch_size)
    seconds = recipe.epochs * (steps * step + validation) + n * forward
    return StageEstimate(f"student [{perturb}]", seconds, seconds,
                         f"{recipe.epochs} epochs x {steps} steps of {step:.2f} s + validation {validation:.1f} s")


def attacks_estimate(role: str, model: nn.Module, suite: SuiteRecipe, eps: float, n: int, info: DatasetInfo,
                     device: str | torch.device, surrogates: dict[str, nn.Module] | None = None) -> StageEstimate:
    """The suite on ``n`` images of ``model`` (the ``role``'s). The most: each attack's own code
    timed on a batch that survives it (its eps = 0 probe, a few iterations, on images labelled with
    the model's predictions), scaled from the probe's budget to the attack's; the least: one
    gradient and one forward pass per attack and image."""
    from robdistill.analysis.consistency import ANALYSIS_PGD_STEPS
    from robdistill.eval.runner import resolve_suite

    attacks = resolve_suite(suite, info, eps).attacks(surrogates)  # built as the evaluation builds them
    counts = suite.attack_samples(n)  # an attack with its own n_eval runs on fewer images
    size = max(1, min(suite.batch_size, n))  # the batch the attacks will run at (per-image costs depend on it)
    gradient, forward = timed_passes(model, info, size, suite.precision, device)
    probe_n = min(size, PROBE_IMAGES)
    small_gradient, small_forward = (timed_passes(model, info, probe_n, suite.precision, device)
                                     if probe_n < size else (gradient, forward))
    batch_ratio = (gradient + forward) / max(small_gradient + small_forward, 1e-12)  # per image, full vs probe batch
    x = _random_images(probe_n, info, device)
    with eval_mode(model), torch.no_grad():
        y = model(x).argmax(1)  # nothing can be fooled at eps 0: every sample spends the probe's whole budget
    low = high = 0.0
    for key, attack in attacks.items():
        probe = attack.zero_eps_probe()
        seconds = _wall(lambda: probe.run(model, x, y, batch_size=probe_n, progress=False), device)
        full, probed = attack.budget(info.num_classes), probe.budget(info.num_classes)
        scale = ((full.gradient * gradient + full.forward * forward)
                 / max(probed.gradient * gradient + probed.forward * forward, 1e-12))
        high += counts[key] * seconds / probe_n * batch_ratio * max(scale, 1.0)
        low += counts[key] * (min(full.gradient, 1) * gradient + forward)
    # AALP's consistency analysis of every evaluated model: a plain PGD-k on every image, its last
    # iterate (no early stop), and the feature contributions (one more gradient)
    analysis = min(n, suite.analysis_n_eval or n) * (ANALYSIS_PGD_STEPS + 2) * gradient
    return StageEstimate(f"attacks on the {role}", low + analysis, high + analysis,
                         f"{', '.join(attacks)} and the PGD-{ANALYSIS_PGD_STEPS} analysis on {n} images; "
                         f"the most if every sample survived every attack")
