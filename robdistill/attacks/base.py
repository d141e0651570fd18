"""Attack registry with one interface (the torchattacks pattern): ``attack.run(model, x, y)``
returns adversarial images and per-sample robust flags. L-infinity threat model in [0, 1]
pixel space (SPEC sections 1 and 4).

Every attack runs with the model in eval mode, restores each module's previous mode afterwards,
and draws randomness only from a private, seeded ``torch.Generator``.
"""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from robdistill.core.errors import UserError
from robdistill.core.modes import eval_mode, preserved_global_rng, private_generator
from robdistill.core.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, summed over the batch (so each sample's gradient is independent of B)."""
    return F.cross_entropy(logits, y, reduction="sum")


def cw_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin max_{j != y} z_j - z_y, summed over the batch (AALP's "CW-k")."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return (others - true).sum()


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the L-infinity ball of radius eps around x, intersected with [0, 1]."""
    return torch.max(torch.min(x_adv, x + eps), x - eps).clamp_(0.0, 1.0)


def pgd_perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
                steps: int, loss_fn: LossFn = ce_loss, random_start: bool = True,
                generator: torch.Generator | None = None, start: torch.Tensor | None = None) -> torch.Tensor:
    """Plain PGD (Madry et al. 2018): the last iterate, for adversarial training.

    ``start`` overrides the starting point (TRADES starts at x + 0.001 N(0, I)). Uses the model
    in whatever mode the caller set (training code puts it in eval mode first)."""
    x = x.detach()
    if start is not None:
        x_adv = project_linf(start.detach().clone(), x, eps)
    elif random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = project_linf(x + (2 * noise - 1) * eps, x, eps)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(loss_fn(model(x_adv), y), x_adv)
        x_adv = project_linf(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


@dataclass
class AttackOutput:
    """Adversarial images and per-sample flags: robust = correct on x and on every iterate tried."""

    x_adv: torch.Tensor
    robust: torch.Tensor
    warnings: list[str] = field(default_factory=list)
    # for composite attacks (AutoAttack): per component, the samples that component fooled
    fooled_by: dict[str, torch.Tensor] = field(default_factory=dict)


class Attack(ABC):
    """Base class: subclasses implement :meth:`attack_batch`; :meth:`run` batches, shows progress,
    and handles model mode and randomness."""

    name: str = "attack"

    def __init__(self, eps: float, seed: int = 0, **params: Any):
        check_eps(eps)
        self.eps = float(eps)
        self.seed = int(seed)
        self.params = params

    def config(self) -> dict[str, Any]:
        """The full configuration, read off the attack object (logged with every result)."""
        return {"attack": self.name, "eps": self.eps, "seed": self.seed, **self.params}

    def zero_eps_probe(self, steps: int = 2) -> "Attack":
        """The same attack at eps = 0, cheaply (iterative attacks override this: at most ``steps``
        iterations and two restarts): it must leave exactly the clean flags (SPEC section 4)."""
        return type(self)(eps=0.0, seed=self.seed, **self.params)

    @abstractmethod
    def attack_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     generator: torch.Generator) -> AttackOutput:
        ...

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
            progress: bool = True) -> AttackOutput:
        if len(y) == 0:  # nothing to attack (an empty shard)
            return AttackOutput(x.clone(), torch.zeros(0, dtype=torch.bool, device=x.device))
        generator = private_generator(self.seed, x.device)
        outputs = []
        with eval_mode(model):
            batches = range(0, len(y), batch_size)
            for start in tqdm(batches, desc=f"  {self.name}", leave=False, disable=not progress or None):
                sl = slice(start, start + batch_size)
                outputs.append(self.attack_batch(model, x[sl], y[sl], generator))
        return AttackOutput(torch.cat([o.x_adv for o in outputs]),
                            torch.cat([o.robust for o in outputs]),
                            [w for o in outputs for w in o.warnings])


ATTACKS: Registry[type[Attack]] = Registry("attack")


def check_eps(eps: float) -> None:
    if not 0.0 <= eps <= 1.0:
        raise UserError(f"eps must lie in [0, 1] (images are in [0, 1]); got {eps}")


def _check_steps(steps: int, name: str) -> int:
    if int(steps) < 1:
        raise UserError(f"{name} needs steps >= 1; got {steps}")
    return int(steps)


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one signed step of size eps."""

    name = "fgsm"

    def __init__(self, eps: float, seed: int = 0):
        super().__init__(eps, seed)

    def attack_batch(self, model, x, y, generator):
        x_req = x.detach().clone().requires_grad_(True)
        logits = model(x_req)
        grad, = torch.autograd.grad(ce_loss(logits, y), x_req)
        x_adv = project_linf(x + self.eps * grad.sign(), x, self.eps)
        with torch.no_grad():
            robust = (logits.argmax(1) == y) & (model(x_adv).argmax(1) == y)
        return AttackOutput(x_adv, robust)


@ATTACKS.register("pgd")
class PGD(Attack):
    """PGD-k on cross-entropy (Madry et al. 2018) with random start and restarts.

    A sample is robust only if it is classified correctly at every iterate of every restart (the
    worst case, as AutoAttack counts it); samples are dropped as soon as one iterate fools the model,
    so their gradient is no longer computed."""

    name = "pgd"
    loss_fn: LossFn = staticmethod(ce_loss)

    def __init__(self, eps: float, seed: int = 0, steps: int = 20, step_size: float | None = None,
                 restarts: int = 1, random_start: bool = True):
        check_eps(eps)
        steps = _check_steps(steps, self.name)
        if int(restarts) < 1:
            raise UserError(f"{self.name} needs restarts >= 1; got {restarts}")
        if step_size is None:
            step_size = 2.5 * eps / steps  # Madry et al.'s rule of thumb
        if step_size < 0:
            raise UserError(f"{self.name} step_size must be >= 0; got {step_size}")
        super().__init__(eps, seed, steps=steps, step_size=float(step_size), restarts=int(restarts),
                         random_start=bool(random_start))

    def zero_eps_probe(self, steps: int = 2) -> "Attack":
        p = self.params
        return type(self)(0.0, seed=self.seed, steps=min(p["steps"], steps), step_size=p["step_size"],
                          restarts=min(p["restarts"], 2), random_start=p["random_start"])

    def attack_batch(self, model, x, y, generator):
        p = self.params
        x = x.detach()
        x_adv = x.clone()
        with torch.no_grad():
            robust = model(x).argmax(1) == y
        for _ in range(p["restarts"]):
            active = robust.nonzero().squeeze(1)
            if active.numel() == 0:
                break
            xa, ya = x[active], y[active]
            if p["random_start"]:
                noise = torch.rand(xa.shape, generator=generator, device=x.device, dtype=x.dtype)
                current = project_linf(xa + (2 * noise - 1) * self.eps, xa, self.eps)
            else:
                current = xa.clone()
            # the ball intersected with the box, once per restart: clamping to it equals project_linf
            low, high = (xa - self.eps).clamp(0.0, 1.0), (xa + self.eps).clamp(0.0, 1.0)
            for step in range(p["steps"] + 1):
                last = step == p["steps"]  # the final iterate is only checked: no gradient
                leaf = current.detach().requires_grad_(not last)
                with torch.set_grad_enabled(not last):
                    logits = model(leaf)
                keep = logits.argmax(1) == ya
                if bool(keep.all()):  # the common case on robust models: no indexing at all
                    if last:
                        break
                    grad, = torch.autograd.grad(self.loss_fn(logits, ya), leaf)
                    current = torch.clamp(leaf.detach() + p["step_size"] * grad.sign(), low, high)
                    continue
                fooled = ~keep
                robust[active[fooled]] = False
                x_adv[active[fooled]] = leaf.detach()[fooled]
                if last or not keep.any():
                    active, current = active[keep], leaf.detach()[keep]
                    break
                grad, = torch.autograd.grad(self.loss_fn(logits[keep], ya[keep]), leaf)
                active, ya, low, high = active[keep], ya[keep], low[keep], high[keep]
                current = torch.clamp(leaf.detach()[keep] + p["step_size"] * grad[keep].sign(), low, high)
            x_adv[active] = current.detach()
        return AttackOutput(x_adv, robust)


@ATTACKS.register("cw")
class CW(PGD):
    """PGD under the same L-infinity ball on the CW margin loss max_{j!=y} z_j - z_y ("CW-k")."""

    name = "cw"
    loss_fn: LossFn = staticmethod(cw_margin_loss)


@ATTACKS.register("transfer")
class Transfer(Attack):
    """Transfer (black-box) attack (Papernot et al. 2017; Athalye et al. 2018 on its use as a
    masking check): PGD-k crafted on a surrogate model, evaluated on the target (SPEC section 4).

    ``surrogate`` is a robdistill checkpoint path (a suite's ``surrogate = "path.pt"``) or an
    ``nn.Module``. Every image is perturbed, also those the surrogate already misclassifies, and
    each restart sends the *final* iterate of a plain PGD-k on the surrogate's cross-entropy (the
    scoring PGD's early stop would send the weakest fooling image, which transfers worst). A sample
    is robust iff the target classifies the clean image and every restart's image correctly."""

    name = "transfer"

    def __init__(self, eps: float, seed: int = 0, surrogate: str | Path | nn.Module | None = None,
                 steps: int = 20, step_size: float | None = None, restarts: int = 1, random_start: bool = True):
        check_eps(eps)
        self.pgd = PGD(eps, seed=seed, steps=steps, step_size=step_size, restarts=restarts,
                       random_start=random_start)
        self.surrogate, label = _load_surrogate(surrogate)
        self._owns_surrogate = not isinstance(surrogate, nn.Module)
        pgd = {k: v for k, v in self.pgd.config().items() if k not in ("eps", "seed")}
        super().__init__(eps, seed, surrogate=label, surrogate_attack=pgd)

    def attack_batch(self, model, x, y, generator):
        p = self.pgd.params
        x = x.detach()
        with torch.no_grad():
            robust = model(x).argmax(1) == y
        sent, fooled = x.clone(), torch.zeros_like(robust)
        for _ in range(p["restarts"]):
            crafted = pgd_perturb(self.surrogate, x, y, eps=self.eps, step_size=p["step_size"], steps=p["steps"],
                                  random_start=p["random_start"], generator=generator)
            with torch.no_grad():
                wrong = model(crafted).argmax(1) != y
            update = ~fooled  # a sample keeps the first image that fooled the target
            sent[update] = crafted[update]
            fooled |= wrong
        return AttackOutput(sent, robust & ~fooled)

    def zero_eps_probe(self, steps: int = 2) -> "Attack":
        p = self.pgd.params
        probe = Transfer(0.0, seed=self.seed, surrogate=self.surrogate, steps=min(p["steps"], steps),
                         step_size=p["step_size"], restarts=min(p["restarts"], 2), random_start=p["random_start"])
        probe._owns_surrogate = self._owns_surrogate  # a loaded surrogate follows the inputs' device
        return probe

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
            progress: bool = True) -> AttackOutput:
        if self._owns_surrogate:
            self.surrogate.to(x.device)
        with eval_mode(self.surrogate):
            return super().run(model, x, y, batch_size=batch_size, progress=progress)


def _load_surrogate(surrogate: str | Path | nn.Module | None) -> tuple[nn.Module, str]:
    """The surrogate model and the label logged for it (the checkpoint path or the module's class)."""
    if isinstance(surrogate, nn.Module):
        return surrogate, f"<{type(surrogate).__name__} module>"
    if surrogate is None or not str(surrogate).strip():
        raise UserError("transfer needs a surrogate: a checkpoint path (surrogate = \"teacher.pt\") or a module")
    if not isinstance(surrogate, (str, Path)):
        raise UserError(f"transfer surrogate must be a checkpoint path or a module; got {type(surrogate).__name__}")
    from robdistill.models.checkpoints import load_checkpoint

    try:
        with preserved_global_rng("cpu"):  # building the model draws initial weights
            model, _ = load_checkpoint(Path(surrogate))
    except UserError as exc:
        raise UserError(f"transfer surrogate: {exc}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model, str(surrogate)


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@ATTACKS.register("autoattack")
class AutoAttackLinf(Attack):
    """AutoAttack (Croce & Hein 2020), the reference implementation from PyPI ``pyautoattack``.

    Versions ``standard`` / ``plus`` / ``rand`` / ``custom`` (with ``attacks``); ``square_queries``
    overrides Square's query budget (library default 5000). Its gradient-masking and sanity warnings
    (logger ``auto-attack``) are captured and returned with the result; the caller's global RNG
    state is preserved around the library, which seeds it.

    The library's run is left exactly as it is; the robust flags it holds after each component are
    recorded, so ``fooled_by`` says which component fooled which sample. Components after Square in
    the version's order (``plus``) never see the samples Square fooled; they are run on those
    samples afterwards, so the Square-versus-white-box gap (SPEC section 4) is exact."""

    name = "autoattack"
    VERSIONS = ("standard", "plus", "rand", "custom")
    ATTACK_NAMES = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")

    def __init__(self, eps: float, seed: int = 0, version: str = "standard",
                 attacks: list[str] | None = None, square_queries: int | None = None):
        if version not in self.VERSIONS:
            raise UserError(f"autoattack version '{version}' is unknown; use one of {', '.join(self.VERSIONS)}")
        if version == "custom":
            if not attacks or any(a not in self.ATTACK_NAMES for a in attacks):
                raise UserError(f"autoattack version 'custom' needs attacks from {', '.join(self.ATTACK_NAMES)}")
        elif attacks:
            raise UserError("autoattack 'attacks' can only be given with version = 'custom'")
        if square_queries is not None and int(square_queries) < 1:
            raise UserError(f"autoattack square_queries must be >= 1; got {square_queries}")
        params: dict[str, Any] = {"version": version, "attacks": list(attacks) if attacks else None}
        if square_queries is not None:
            params["square_queries"] = int(square_queries)
        super().__init__(eps, seed, **params)

    # the fewest classes each component works with: the DLR loss reads the third-largest logit,
    # its targeted form the fourth (Croce & Hein 2020, Eq. 5 and 6)
    MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4}
    TARGET_CLASSES = 9  # the library's number of target classes for apgd-t and fab-t

    def attack_batch(self, model, x, y, generator):  # pragma: no cover - run() is overridden
        raise NotImplementedError

    def zero_eps_probe(self, steps: int = 2) -> "Attack":
        probe = AutoAttackLinf(0.0, seed=self.seed, version=self.params["version"], attacks=self.params["attacks"],
                               square_queries=steps)
        probe._iterations = steps
        return probe

    _iterations: int | None = None  # a cap on every component's iterations (the eps = 0 probe only)

    def _adversary(self, model: nn.Module, device: torch.device, num_classes: int):
        from pyautoattack import AutoAttack

        kwargs = {"attacks": self.params["attacks"]} if self.params["version"] == "custom" else {}
        adversary = AutoAttack(model, eps=self.eps, norm="Linf", version=self.params["version"],
                               seed=self.seed, device=device, **kwargs)
        for component in adversary.attacks_to_run:
            needed = self.MIN_CLASSES.get(component, 2)
            if num_classes < needed:
                usable = [a for a in self.ATTACK_NAMES if self.MIN_CLASSES.get(a, 2) <= num_classes]
                raise UserError(f"autoattack component {component} needs at least {needed} classes (DLR loss) and "
                                f"the model has {num_classes}; use version = \"custom\" with attacks from "
                                f"{', '.join(usable)}")
        # targeted components: at most C - 1 target classes (the library's standard is 9)
        adversary.apgd_targeted.n_target_classes = self.target_classes(num_classes)
        adversary.fab.n_target_classes = self.target_classes(num_classes)
        if "square_queries" in self.params:
            adversary.square.n_queries = self.params["square_queries"]
        if self._iterations is not None:
            for component in (adversary.apgd, adversary.apgd_targeted, adversary.fab):
                component.n_iter = self._iterations
                component.n_restarts = 1
        return adversary

    def target_classes(self, num_classes: int) -> int:
        """How many target classes apgd-t and fab-t use for a model with ``num_classes`` outputs."""
        return min(self.TARGET_CLASSES, num_classes - 1)

    def run(self, model, x, y, batch_size: int = 256, progress: bool = True) -> AttackOutput:
        collector = _WarningCollector()
        logger = logging.getLogger("auto-attack")
        logger.addHandler(collector)
        try:
            with eval_mode(model), preserved_global_rng(x.device):
                num_classes = _num_classes(model, x)
                adversary = self._adversary(model, x.device, num_classes)
                order = list(adversary.attacks_to_run)
                if progress:
                    tqdm.write(f"  autoattack ({self.params['version']}) on {len(y)} samples ...")
                # per-component flags feed the Square-versus-white-box check: recorded only when
                # Square runs (the recording costs about 3% of an AutoAttack run on the CPU)
                recording = _recording_components() if "square" in order else nullcontext([])
                with recording as snapshots:
                    x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
        finally:
            logger.removeHandler(collector)
        fooled = _fooled_by(snapshots, order, len(y), y.device)
        if fooled:
            self._white_box_after_square(model, x, y, order, fooled, batch_size)
        return AttackOutput(x_adv.detach(), (y_adv == y), collector.messages, fooled)

    def _white_box_after_square(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, order: list[str],
                                fooled: dict[str, torch.Tensor], batch_size: int) -> None:
        """Run the components that come after Square on the samples Square fooled (which the
        library skips), adding the samples they fool to ``fooled``."""
        later = order[order.index("square") + 1:] if "square" in order else []
        idx = fooled["square"].nonzero().squeeze(1) if later else torch.empty(0, dtype=torch.long)
        if idx.numel() == 0:
            return
        logger, muted = logging.getLogger("auto-attack"), _WarningCollector()  # the main run reported them
        logger.addHandler(muted)
        try:
            with eval_mode(model), preserved_global_rng(x.device):
                adversary = self._adversary(model, x.device, _num_classes(model, x))
                adversary.attacks_to_run = later
                with _recording_components() as snapshots:
                    adversary.run_standard_evaluation(x[idx], y[idx], batch_size=batch_size)
        finally:
            logger.removeHandler(muted)
        for name, sub in _fooled_by(snapshots, later, len(idx), y.device).items():
            fooled[name][idx] |= sub


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    """The number of logits the model outputs (one forward of one image)."""
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


_RECORDING_LOCK = threading.Lock()


@contextmanager
def _recording_components() -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Record pyautoattack's robust flags (a copy) before its first component and after each one,
    by substituting a subclass of its ``EvaluationState`` for the duration of one run."""
    import pyautoattack.autoattack as library

    snapshots: list[tuple[str, torch.Tensor]] = []
    base = library.EvaluationState

    class Recording(base):  # type: ignore[misc, valid-type]
        @property
        def robust_flags(self):
            return self._robust_flags

        @robust_flags.setter
        def robust_flags(self, flags):
            if not snapshots and flags is not None:
                snapshots.append(("clean", flags.detach().clone()))
            base.robust_flags.fset(self, flags)

        def add_run_attack(self, attack):
            snapshots.append((attack, self.robust_flags.detach().clone()))
            super().add_run_attack(attack)

    with _RECORDING_LOCK:
        library.EvaluationState = Recording
        try:
            yield snapshots
        finally:
            library.EvaluationState = base


def _fooled_by(snapshots: list[tuple[str, torch.Tensor]], order: list[str], n: int,
               device: torch.device) -> dict[str, torch.Tensor]:
    """Per component, the samples robust before it and not after it (none for components that
    did not run because nothing was left); empty if the library's internals were not recorded."""
    if not snapshots or snapshots[0][0] != "clean":
        return {}
    fooled = {name: torch.zeros(n, dtype=torch.bool, device=device) for name in order}
    previous = snapshots[0][1].to(device)
    for name, flags in snapshots[1:]:
        flags = flags.to(device)
        fooled[name] |= previous & ~flags
        previous = flags
    return fooled


def build_attack(name: str, eps: float, seed: int = 0, **params: Any) -> Attack:
    """Instantiate a registered attack; unknown parameters are a one-line error."""
    cls = ATTACKS.get(name)
    try:
        return cls(eps=eps, seed=seed, **params)
    except TypeError as exc:
        raise UserError(f"bad parameters for attack '{name}' ({exc}); see `robdistill list attacks`") from None
