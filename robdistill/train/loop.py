"""What teacher and student training share: the training loop (in-memory mini-batches, a registered
optimiser and learning-rate schedule, per-epoch metrics handed to a callback, resumable state),
a stage's initial model drawn from its own random stream, and the per-epoch PGD validation."""
from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from robdistill.attacks.base import PassCount, counted_passes
from robdistill.attacks.gradient import PGD
from robdistill.core import distributed
from robdistill.core.precision import Precision
from robdistill.core.state import TrainingState
from robdistill.core.streams import stream_seed
from robdistill.data.datasets import DatasetInfo, Split, iterate_batches
from robdistill.models.flops import model_flops
from robdistill.models.zoo import Classifier, build_model
from robdistill.train.objectives import LossOutput
from robdistill.core.progress import StepLog
from robdistill.config.recipes import TrainingRecipe
from robdistill.core.registry import Registry

OptimizerFactory = Callable[[list[nn.Parameter], TrainingRecipe], torch.optim.Optimizer]
ScheduleFactory = Callable[[int], Callable[[int], float]]  # total steps -> (step -> lr factor)
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
SCHEDULES: Registry[ScheduleFactory] = Registry("lr schedule")


@OPTIMIZERS.register("adam")
def adam(params, recipe):
    """Adam (the AALP paper's optimiser)."""
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params, recipe):
    """SGD with Nesterov momentum 0.9."""
    return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay)


@OPTIMIZERS.register("sgd-momentum")
def sgd_momentum(params, recipe):
    """SGD with plain (heavy-ball) momentum 0.9: Madry et al. 2018, Zhang et al. 2019 (TRADES), Rice et al. 2020."""
    return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)


@SCHEDULES.register("constant")
def constant(total_steps: int) -> Callable[[int], float]:
    """Constant learning rate."""
    return lambda step: 1.0


@SCHEDULES.register("cosine")
def cosine(total_steps: int) -> Callable[[int], float]:
    """Cosine decay to zero over the whole run."""
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def multistep(milestones: tuple[Fraction, ...], decay: float = 0.1) -> ScheduleFactory:
    """A step schedule: the learning rate times ``decay`` at each milestone, milestones given as
    fractions of the whole run (so a run shortened with ``epochs=N`` still decays). The factor of
    step ``s`` of ``S`` is ``decay ** #{m : s >= ceil(m * S)}`` (exact: fractions, not floats)."""
    def factory(total_steps: int) -> Callable[[int], float]:
        bounds = [math.ceil(m * total_steps) for m in milestones]
        return lambda step: decay ** sum(step >= bound for bound in bounds)

    return factory


SCHEDULES.register("step-50-75", help="lr x0.1 at 50% and again at 75% of training (Madry et al. 2018: "
                   "40k, 60k of 80k iterations; Goldblum et al. 2020 (ARD), Rice et al. 2020: epochs 100, 150 "
                   "of 200)")(multistep((Fraction(1, 2), Fraction(3, 4))))
SCHEDULES.register("step-75-90", help="lr x0.1 at 75% and again at 90% of training (Zhang et al. 2019, "
                   "TRADES: epochs 75, 90 of 100)")(multistep((Fraction(3, 4), Fraction(9, 10))))
SCHEDULES.register("step-rslad", help="lr x0.1 at epochs 215, 260 and 285 of 300, as fractions of training "
                   "(Zi et al. 2021, RSLAD)")(multistep((Fraction(215, 300), Fraction(260, 300), Fraction(285, 300))))


StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], LossOutput]
EpochCallback = Callable[[int, dict[str, float]], None]


VAL_ROBUST_SAMPLES = 256  # the per-epoch validation PGD runs on this many validation images


def initial_model(name: str, info: DatasetInfo, seed: int, stage: str, device: str | torch.device) -> Classifier:
    """A freshly initialised model for ``stage`` ("teacher" or "student"), its weights drawn from
    that stage's own init stream (the caller's global RNG is left untouched)."""
    with torch.random.fork_rng():
        torch.manual_seed(stream_seed(seed, stage, "init"))
        model = build_model(name, info.shape, info.num_classes, info.mean, info.std)
    return model.to(device)


def pgd_validator(eps: float, steps: int, step_size: float, val: Split, seed: int,
                  precision: str | Precision = "fp32", norm: str = "linf") -> Callable[[nn.Module], dict[str, float]]:
    """Per-epoch validation: clean accuracy, and PGD accuracy (in the ball of ``norm``) on a fixed
    validation subset (crafted in ``precision``, judged in fp32)."""
    subset = val.head(VAL_ROBUST_SAMPLES)
    attack = PGD(eps, seed=seed, steps=steps, step_size=step_size, precision=precision, norm=norm)

    def validate(model: nn.Module) -> dict[str, float]:
        robust = attack.run(model, subset.x, subset.y, progress=False).robust
        return {"acc": accuracy(model, val), "pgd_acc": robust.float().mean().item()}

    return validate


def accuracy(model: nn.Module, split: Split, batch_size: int = 512) -> float:
    """Clean accuracy in eval mode (restoring the previous mode)."""
    from robdistill.core.modes import eval_mode

    correct = 0
    with eval_mode(model), torch.no_grad():
        for _, x, y in iterate_batches(split, batch_size):
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / max(len(split), 1)


class _TrainingStep(nn.Module):
    """One training step as a module, so that DistributedDataParallel sees the whole step --
    adversarial example generation included -- as one forward, and synchronises the gradients in
    its one backward. ``weight`` rescales this rank's mean loss so that the average DDP takes over
    ranks is the mean over the global batch, whatever the shard sizes."""

    def __init__(self, model: nn.Module, step_fn: "StepFn") -> None:
        super().__init__()
        self.model = model
        self.step_fn = step_fn

    def forward(self, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight: float):
        out = self.step_fn(self.model, idx, x, y)
        return out.loss * weight, out.logits, out.logs


def _wrap_distributed(model: nn.Module, step_fn: StepFn) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    if device.type == "cuda":  # batch statistics over the global batch (in place: same parameters)
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(_TrainingStep(model, step_fn),
                                   device_ids=[device] if device.type == "cuda" else None)


def _shard(idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor, ctx: "distributed.DistContext"):
    """This rank's rows of a global batch and the weight of its loss (0 for a rank left without
    rows by a short last batch: it steps on one row with weight 0, so the collectives still match;
    with SyncBatchNorm on GPUs that row still enters that one step's batch statistics)."""
    rows = distributed.local_rows(len(y), ctx)
    idx_l, x_l, y_l = idx[rows], x[rows], y[rows]
    if len(y_l) == 0:
        return idx[:1], x[:1], y[:1], 0.0, 0
    return idx_l, x_l, y_l, ctx.world_size * len(y_l) / len(y), len(y_l)


def _check_same_resume_point(saved: dict[str, Any] | None, ctx: "distributed.DistContext") -> None:
    """Under torchrun every rank must resume from the same state file (a shared --cache-dir),
    written by a job of the same size; otherwise the ranks' collectives would stop matching."""
    if not ctx.active and (saved is None or saved.get("world_size", 1) == 1):
        return
    points = distributed.all_gather_object(None if saved is None else (saved["epoch"], saved.get("world_size", 1)))
    if len(set(points)) > 1:
        from robdistill.core.errors import UserError

        raise UserError(f"ranks disagree on where to resume ({points}): every rank needs the same --cache-dir "
                        f"(shared across machines)")
    if saved is not None and saved.get("world_size", 1) != ctx.world_size:
        from robdistill.core.errors import UserError

        raise UserError(f"the training state was written by {saved.get('world_size', 1)} process(es), this job has "
                        f"{ctx.world_size}; resume with the same number of processes or start without --resume")


class EpochSums:
    """An epoch's metric sums kept on the training device (float64, so each equals the sum of the
    per-step values as Python floats), the correct-prediction count, and the first batch whose loss
    was not finite: nothing is read back to the host until :meth:`read`, once per epoch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.bad_batch = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_value = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, key: str, value: torch.Tensor | float, n: int) -> None:
        """``value`` (a per-sample mean) times the ``n`` samples it is over."""
        term = torch.as_tensor(value, device=self.device).detach().to(torch.float64) * n
        self.sums[key] = self.sums[key] + term if key in self.sums else term

    def add_correct(self, hits: torch.Tensor) -> None:
        self.correct = self.correct + hits.sum()

    def watch(self, loss: torch.Tensor, batch: int) -> None:
        """Remember the first batch whose loss is NaN or infinite, and that loss."""
        first = ~torch.isfinite(loss) & (self.bad_batch < 0)
        self.bad_batch = torch.where(first, torch.full_like(self.bad_batch, batch), self.bad_batch)
        self.bad_value = torch.where(first, loss.detach().to(torch.float64), self.bad_value)

    def read(self) -> tuple[dict[str, float], int]:
        """The sums and the correct count, read back in one transfer."""
        keys = list(self.sums)
        values = torch.stack([*(self.sums[k] for k in keys), self.correct.to(torch.float64)]).tolist()
        return dict(zip(keys, values[:-1])), int(values[-1])


def _check_finite_epoch(sums: EpochSums, desc: str, epoch: int) -> None:
    """At the end of an epoch, one line naming the first batch whose training loss was not finite
    (the weights are NaN from there on: the epoch is not saved, and training stops)."""
    batch = int(sums.bad_batch)
    if batch >= 0:
        from robdistill.core.errors import UserError

        raise UserError(f"{desc}: the training loss is {float(sums.bad_value)} at epoch {epoch}, batch {batch + 1}; "
                        f"lower the learning rate, or check the data and the model for NaN")


def _check_finite_loss(value: float, desc: str, epoch: int, batch: int,
                       ctx: "distributed.DistContext") -> None:
    """Stop at the first NaN or infinite training loss ``value`` with one line naming model, epoch
    and batch (training on would only spread the NaN through the weights). Under torchrun the ranks
    agree first (one small all-reduce per batch), so every rank stops at the same batch."""
    bad = not math.isfinite(value)
    if ctx.active:
        bad = distributed.all_reduce_sum({"bad": float(bad)})["bad"] > 0
    if bad:
        from robdistill.core.errors import UserError

        where = f"the training loss is {value}" if not math.isfinite(value) else "a rank's training loss is not finite"
        raise UserError(f"{desc}: {where} at epoch {epoch}, batch {batch + 1}; lower the learning rate, or check "
                        f"the data and the model for NaN")


def fit(model: nn.Module, train: Split, recipe: TrainingRecipe, step_fn: StepFn, *, seed: int,
        desc: str, on_epoch_start: Callable[[int], None] | None = None,
        validate: Callable[[nn.Module], dict[str, float]] | None = None,
        on_epoch_end: EpochCallback | None = None, progress: bool = True,
        state: TrainingState | None = None, resume: bool = False) -> list[dict[str, float]]:
    """:func:`train_epochs` with the model in the memory layout of the recipe's precision (the
    step functions enter its autocast region themselves: robdistill.core.precision)."""
    with recipe.precision_mode.applied(model):
        return train_epochs(model, train, recipe, step_fn, seed=seed, desc=desc, on_epoch_start=on_epoch_start,
                            validate=validate, on_epoch_end=on_epoch_end, progress=progress, state=state,
                            resume=resume)


# the per-epoch metrics that measure time (they differ between two runs of the same seed)
TIMED_METRICS = ("train/epoch_seconds", "train/images_per_second", "train/tflops_per_second")


def _epoch_cost(model: nn.Module, train: Split, count: PassCount, seen: int, seconds: float,
                world_size: int) -> dict[str, float]:
    """An epoch's cost (issue 33): images per second, the model's forward and backward passes per
    training image (an attack inside the objective counts its own), and FLOPs per image
    (robdistill.models.flops): each forward at the forward's FLOPs, each backward at the input
    gradient's, plus one weight gradient per image (the optimizer step's). This rank's passes over
    this rank's share of the images."""
    if not seen:
        return {}
    local = seen / world_size
    out = {"train/images_per_second": seen / seconds if seconds > 0 else 0.0,
           "train/forward_per_image": count.forward / local, "train/backward_per_image": count.backward / local}
    flops = model_flops(model, tuple(train.x.shape[1:]), train.x.device)
    if flops is not None:
        gflop = (flops.forward * out["train/forward_per_image"] + flops.input_backward * out["train/backward_per_image"]
                 + flops.train_backward - flops.input_backward) / 1e9
        out["train/gflop_per_image"] = gflop
        out["train/tflops_per_second"] = gflop * out["train/images_per_second"] / 1e3
    return out


def train_epochs(model: nn.Module, train: Split, recipe: TrainingRecipe, step_fn: StepFn, *, seed: int,
                 desc: str, on_epoch_start: Callable[[int], None] | None = None,
                 validate: Callable[[nn.Module], dict[str, float]] | None = None,
                 on_epoch_end: EpochCallback | None = None, progress: bool = True,
                 state: TrainingState | None = None, resume: bool = False) -> list[dict[str, float]]:
    """Train ``model`` for ``recipe.epochs`` epochs; returns the per-epoch metrics. ``seed`` seeds the
    mini-batch order; a non-finite loss stops training with a :class:`UserError`. With ``state``
    the loop is checkpointed after every epoch; with ``resume`` it continues from that checkpoint
    and ends exactly where an uninterrupted run would (same generators, same RNG).

    Under torchrun every rank draws the same global batches and trains on its rows of each
    (``rank::world_size``) through DistributedDataParallel; the epoch metrics are summed over ranks,
    validation and the state file are rank 0's."""
    ctx = distributed.context()
    ddp = _wrap_distributed(model, step_fn) if ctx.active else None
    optimizer = OPTIMIZERS.get(recipe.optimizer)(list(model.parameters()), recipe)
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, SCHEDULES.get(recipe.lr_schedule)(recipe.epochs * steps_per_epoch))
    order = torch.Generator().manual_seed(seed)
    generators = {"order": order, **(state.generators if state else {})}
    history: list[dict[str, float]] = []
    first_epoch = 1
    saved = state.load() if state is not None and resume else None
    _check_same_resume_point(saved, ctx)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        mine = saved.get("rank_streams", [None])[ctx.rank] or {"generators": saved["generators"], "rng": saved["rng"]}
        for name, generator in generators.items():
            generator.set_state(mine["generators"][name])
        torch.set_rng_state(mine["rng"])
        history = saved["history"]
        first_epoch = saved["epoch"] + 1
    lines = StepLog(desc, recipe.epochs, "epoch", enabled=progress and ctx.is_main, done=first_epoch - 1)
    bar = tqdm(range(first_epoch, recipe.epochs + 1), desc=desc, disable=not (progress and ctx.is_main) or None,
               leave=True,
               initial=first_epoch - 1, total=recipe.epochs)
    for epoch in bar:
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        model.train()
        started = time.perf_counter()
        sums = EpochSums(train.x.device)
        seen = 0
        # the model's forward and backward passes, counted from the outputs' shapes (no host sync)
        with counted_passes(model) as count:
            for batch, (idx, x, y) in enumerate(iterate_batches(train, recipe.batch_size, order)):
                if ddp is None:
                    # no host synchronisation in the step: the loss, its finiteness and the logs stay on
                    # the device, read once at the end of the epoch (METHODS section 2)
                    out, n = step_fn(model, idx, x, y), len(y)
                    loss = out.loss.detach()
                    sums.watch(loss, batch)
                    optimizer.zero_grad(set_to_none=True)
                    out.loss.backward()
                else:
                    idx, x, y, weight, n = _shard(idx, x, y, ctx)
                    scaled, logits, logs = ddp(idx, x, y, weight)
                    scaled_value = scaled.item()  # the ranks agree on a non-finite loss every step
                    _check_finite_loss(scaled_value, desc, epoch, batch, ctx)
                    optimizer.zero_grad(set_to_none=True)
                    scaled.backward()
                    out = LossOutput(scaled, logits, logs)
                    loss = scaled_value / weight if weight else 0.0
                optimizer.step()
                scheduler.step()
                seen += n
                if n:
                    sums.add_correct(out.logits.argmax(1) == y)
                sums.add("loss", loss, n)
                for key, value in out.logs.items():
                    sums.add(key, value, n)
        if ddp is None:
            _check_finite_epoch(sums, desc, epoch)
        totals, correct = sums.read()  # the epoch's one host synchronisation
        if ctx.active:  # sums over ranks: every rank ends the epoch with the global metrics
            summed = distributed.all_reduce_sum({**totals, "_seen": seen, "_correct": correct})
            seen, correct = int(summed.pop("_seen")), int(summed.pop("_correct"))
            totals = summed
        metrics = {f"train/{k}": v / seen for k, v in totals.items()}
        metrics["train/acc"] = correct / seen
        metrics["train/epoch_seconds"] = time.perf_counter() - started
        metrics.update(_epoch_cost(model, train, count, seen, metrics["train/epoch_seconds"], ctx.world_size))
        metrics["train/lr"] = scheduler.get_last_lr()[0]
        if validate is not None and ctx.is_main:
            metrics.update({f"val/{k}": v for k, v in validate(model).items()})
        history.append(metrics)
        bar.set_postfix(loss=f"{metrics['train/loss']:.3f}",
                        **({"val_acc": f"{metrics['val/acc']:.3f}"} if "val/acc" in metrics else {}))
        lines.step(epoch, f"epoch {epoch}/{recipe.epochs} (loss {metrics['train/loss']:.3f}"
                          + (f", val acc {metrics['val/acc']:.3f}" if "val/acc" in metrics else "") + ")")
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
        if state is not None:  # every rank's random streams, saved by rank 0
            streams = distributed.all_gather_object(
                {"generators": {name: g.get_state() for name, g in generators.items()}, "rng": torch.get_rng_state()})
            if ctx.is_main:
                state.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), **streams[0], "history": history,
                            "world_size": ctx.world_size, "rank_streams": streams if ctx.active else [None],
                            **state.extra})
    model.eval()
    return history
