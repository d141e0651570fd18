"""Attack registry with one interface (the torchattacks pattern): ``attack.run(model, x, y)``
returns adversarial images and per-sample robust flags. Every attack takes a threat model's norm
(``norm = "linf"`` or ``"l2"``, robdistill.core.threat) and radius ``eps``, in [0, 1] pixel space
(METHODS sections 1 and 4).

Every attack runs with the model in eval mode, restores each module's previous mode afterwards,
and draws randomness only from a private, seeded ``torch.Generator``.

This module holds the interface, the losses, the registry and :func:`build_attack`; the attacks
themselves live in ``gradient`` (FGSM, PGD, CW), ``transfer`` and ``autoattack``, and register
themselves when ``robdistill.attacks`` (the package) is imported.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from robdistill.core.errors import UserError
from robdistill.core.modes import eval_mode, private_generator
from robdistill.core.precision import Precision, resolve_precision
from robdistill.core.registry import Registry
from robdistill.core.threat import ThreatModel, norm_of

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
    return norm_of("linf").project(x_adv, x, eps)


def pgd_perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
                steps: int, loss_fn: LossFn = ce_loss, random_start: bool = True,
                generator: torch.Generator | None = None, start: torch.Tensor | None = None,
                norm: str = "linf") -> torch.Tensor:
    """Plain PGD (Madry et al. 2018): the last iterate, for adversarial training, in the ball of
    ``norm`` (``linf``: signed steps; ``l2``: normalised-gradient steps; robdistill.core.threat).

    ``start`` overrides the starting point (TRADES starts at x + 0.001 N(0, I)). Uses the model
    in whatever mode the caller set (training code puts it in eval mode first), and whatever
    autocast region the caller is in (training under bf16 crafts in bf16)."""
    ball = norm_of(norm)
    x = x.detach()
    if start is not None:
        x_adv = ball.project(start.detach().clone(), x, eps)
    elif random_start:
        x_adv = ball.random_start(x, eps, generator)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(loss_fn(model(x_adv), y), x_adv)
        x_adv = ball.project(x_adv.detach() + step_size * ball.ascent(grad), x, eps)
    return x_adv.detach()


def classified(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample, whether ``logits`` classify it as ``y``: the argmax is ``y`` and every logit is
    finite (the argmax of a NaN row is an index like any other, and would count a broken model's
    samples of that class as correct; METHODS section 4)."""
    return (logits.argmax(1) == y) & torch.isfinite(logits).all(1)


@dataclass
class AttackOutput:
    """Adversarial images and per-sample flags: robust = correct on x and on every iterate tried."""

    x_adv: torch.Tensor
    robust: torch.Tensor
    warnings: list[str] = field(default_factory=list)
    # for composite attacks (AutoAttack): per component, the samples that component fooled
    fooled_by: dict[str, torch.Tensor] = field(default_factory=dict)
    # and per component, its wall seconds (AutoAttack's first also holds the library's clean check)
    seconds_by: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """The most an attack spends on one sample, one that survives it to the end (a sample broken
    early costs less): ``gradient`` forward + backward passes to the input and ``forward``
    forward-only passes. Multiplied by a timed pass, an upper bound on its time
    (robdistill.experiments.estimate)."""

    gradient: float
    forward: float

    def __add__(self, other: "Budget") -> "Budget":
        return Budget(self.gradient + other.gradient, self.forward + other.forward)


class Attack(ABC):
    """Base class: subclasses implement :meth:`attack_batch`; :meth:`run` batches, shows progress,
    and handles model mode and randomness."""

    name: str = "attack"
    # Properties of the registered entry, read through ``ATTACKS.get(name)`` by the evaluation's
    # sanity checks (METHODS section 4); every registered attack sets the ones that differ.
    #: a pure white-box (gradient) attack: the samples that survive it count as white-box survivors
    #: in the Square-versus-white-box check (AutoAttack's gradient components are counted per component)
    white_box: ClassVar[bool] = False
    #: takes a PGD ``step_size`` (a suite's default step is the dataset's step scaled to eps; its
    #: steps x step_size must reach eps)
    takes_step_size: ClassVar[bool] = False
    #: evaluated in resumable chunks of a suite's ``autoattack_chunk`` samples under a state file
    chunked: ClassVar[bool] = False
    #: the registered attacks it must not score above on the same images (more robust samples than
    #: one of them is a sign of gradient masking or a bug; Athalye et al. 2018)
    stronger_than: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every attack class's constructor refuses a misspelt or missing parameter with a one-line
        :class:`AttackParameterError` that names the closest parameter (``stpes`` -> ``steps``)."""
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _checked_parameters(cls.__dict__["__init__"], cls.__name__)  # type: ignore[method-assign]

    def __init__(self, eps: float, seed: int = 0, precision: str | Precision = "fp32", norm: str = "linf",
                 **params: Any):
        #: the threat model (robdistill.core.threat): the norm and radius of the ball attacked in
        self.threat = threat_model(norm, eps)
        self.norm = self.threat.norm
        self.eps = float(eps)
        self.seed = int(seed)
        #: what the crafting passes run in (robdistill.core.precision); the flags are always judged in fp32
        self.precision = resolve_precision(precision)
        self.params = params

    def config(self) -> dict[str, Any]:
        """The full configuration, read off the attack object (logged with every result)."""
        return {"attack": self.name, "norm": self.norm, "eps": self.eps, "seed": self.seed, **self.params,
                "precision": self.precision.name}

    def budget(self, num_classes: int) -> Budget:
        """The most passes this attack spends on one sample of a ``num_classes``-class model."""
        raise NotImplementedError(f"{self.name} does not state its budget")

    def zero_eps_probe(self, steps: int = 2) -> "Attack":
        """The same attack at eps = 0, cheaply (at most ``steps`` iterations and two restarts for
        iterative attacks, see :meth:`_probe`) and in the same precision: it must leave exactly the
        clean flags (METHODS section 4)."""
        probe = self._probe(steps)
        probe.precision = self.precision
        return probe

    def _probe(self, steps: int) -> "Attack":
        return type(self)(eps=0.0, seed=self.seed, norm=self.norm, **self.params)

    def models_used(self) -> list[nn.Module]:
        """Models the attack runs besides the attacked one (a transfer attack's surrogate): their
        passes count in the attack's cost too."""
        return []

    def correct(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The verdict: whether an fp32 forward classifies ``x`` as ``y`` (whatever the precision)."""
        return classified(Precision.verdict(model, x), y)

    @abstractmethod
    def attack_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     generator: torch.Generator) -> AttackOutput:
        ...

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial images (torchattacks' call: ``x_adv = attack(model, x, y)``); :meth:`run`
        also returns the per-sample robust flags."""
        return self.run(model, x, y, progress=False).x_adv

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
            progress: bool = True) -> AttackOutput:
        if len(y) == 0:  # nothing to attack (an empty shard)
            return AttackOutput(x.clone(), torch.zeros(0, dtype=torch.bool, device=x.device))
        generator = private_generator(self.seed, x.device)
        outputs = []
        with eval_mode(model), self.precision.applied(model):
            batches = range(0, len(y), batch_size)
            for start in tqdm(batches, desc=f"  {self.name}", leave=False, disable=not progress or None):
                sl = slice(start, start + batch_size)
                outputs.append(self.attack_batch(model, x[sl], y[sl], generator))
        return AttackOutput(torch.cat([o.x_adv for o in outputs]),
                            torch.cat([o.robust for o in outputs]),
                            [w for o in outputs for w in o.warnings])


class AttackParameterError(UserError):
    """An attack built with a parameter it does not take, or without one it needs."""


def _checked_parameters(init: Callable[..., None], owner: str) -> Callable[..., None]:
    """``init`` that first binds its arguments to its signature, so that an unknown keyword is a
    one-line error suggesting the closest name instead of Python's TypeError."""
    import difflib
    import functools
    import inspect

    signature = inspect.signature(init)
    names = [n for n, p in signature.parameters.items() if n != "self" and p.kind is not p.VAR_KEYWORD]

    @functools.wraps(init)
    def checked(self: Attack, *args: Any, **kwargs: Any) -> None:
        try:
            signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            unknown = [k for k in kwargs if k not in names]
            if unknown:
                close = difflib.get_close_matches(unknown[0], names, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise AttackParameterError(f"{owner} takes no parameter '{unknown[0]}'{hint} (its parameters: "
                                           f"{', '.join(names)})") from None
            raise AttackParameterError(f"{owner}: {exc} (its parameters: {', '.join(names)})") from None
        init(self, *args, **kwargs)

    return checked


ATTACKS: Registry[type[Attack]] = Registry("attack")


@dataclass
class PassCount:
    """Forward and backward passes, counted in samples (a batch of 256 through the model is 256)."""

    forward: int = 0
    backward: int = 0


@contextmanager
def counted_passes(*models: nn.Module) -> Iterator[PassCount]:
    """Count the samples that go forward through ``models`` in the ``with`` block, and those whose
    gradient comes back through them (a hook on each output that requires a gradient): an
    attack's cost in passes per sample, whatever library runs it."""
    count = PassCount()

    def backward_hook(n: int) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            count.backward += n
        return hook

    def forward_hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() > 0:
            count.forward += output.shape[0]
            if output.requires_grad:
                output.register_hook(backward_hook(output.shape[0]))

    handles = [model.register_forward_hook(forward_hook) for model in models]
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()


def check_eps(eps: float, norm: str = "linf") -> None:
    """A one-line :class:`UserError` unless ``eps`` is a radius of ``norm`` (L-inf: in [0, 1])."""
    threat_model(norm, eps)


def threat_model(norm: str, eps: float) -> ThreatModel:
    """The :class:`ThreatModel` of an attack; an unknown norm or a bad radius is a one-line error."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise UserError(f"eps must be a number; got {eps!r}")
    return ThreatModel(norm, eps)


def check_steps(steps: int, name: str) -> int:
    """``steps`` as an int; a one-line :class:`UserError` unless it is at least 1."""
    if int(steps) < 1:
        raise UserError(f"{name} needs steps >= 1; got {steps}")
    return int(steps)


def build_attack(name: str, eps: float, seed: int = 0, **params: Any) -> Attack:
    """Instantiate a registered attack; unknown parameters are a one-line error. (The attacks
    register themselves when the package ``robdistill.attacks`` is imported.)

    Args:
        name: ``robdistill list attacks`` (``fgsm``, ``pgd``, ``cw``, ``autoattack``, ``transfer``).
        eps: the radius.
        seed: the attack's seed.
        **params: the attack's parameters (``steps=20``, ``norm="l2"``, ...).

    Returns:
        The attack object.

    Example:
        >>> import robdistill as rd
        >>> rd.attacks.build_attack("pgd", 0.1, steps=10).params["steps"]
        10
        >>> rd.attacks.build_attack("pgd", 0.1, stpes=10)
        Traceback (most recent call last):
        robdistill.core.errors.UserError: bad parameters for attack 'pgd': PGD takes no parameter 'stpes'; ...
    """
    cls = ATTACKS.get(name)
    try:
        return cls(eps=eps, seed=seed, **params)
    except AttackParameterError as exc:
        raise UserError(f"bad parameters for attack '{name}': {exc}; see `robdistill list attacks`") from None


REACH_TOLERANCE = 1e-6  # a PGD that reaches eps to within this crosses its ball


def reach(steps: int, step_size: float) -> float:
    """How far a PGD of ``steps`` steps of ``step_size`` can move from its start, in its own norm
    (each L-inf step is a signed step of that size, each L2 step a unit direction times it)."""
    return steps * step_size


def reach_warning(what: str, steps: int, step_size: float, eps: float) -> str | None:
    """A warning (printed once to stderr, and returned) when a PGD cannot cross its eps ball:
    ``steps * step_size < eps`` -- e.g. MNIST's paper step 0.01 with 10 steps at eps 0.3. Such an
    attack is weaker than intended: robust accuracy measured or trained with it is overstated."""
    if reach(steps, step_size) >= eps - REACH_TOLERANCE:
        return None
    import warnings

    message = (f"{what}: {steps} steps of {step_size:g} reach only {reach(steps, step_size):g} of the eps {eps:g} "
               f"ball; raise the steps or set the step size")
    warnings.warn(message, UserWarning, stacklevel=2)
    return message
