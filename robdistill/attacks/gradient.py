"""The gradient (white-box) attacks (METHODS section 4): FGSM (FGM under L2), PGD-k on
cross-entropy, and CW-k (PGD on the Carlini-Wagner margin), each in the ball of its threat model's
norm (``linf`` or ``l2``, robdistill.core.threat)."""
from __future__ import annotations

import torch

from robdistill.attacks.base import (ATTACKS, Attack, AttackOutput, Budget, LossFn, ce_loss, check_eps, classified,
                                     check_steps, cw_margin_loss)
from robdistill.core.errors import UserError
from robdistill.core.precision import Precision


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one signed step of size eps; under L2 the
    fast gradient method, one step of L2 length eps along the normalised gradient (Miyato et al. 2016).

    Args:
        eps: the radius, in [0, 1] pixel space.
        seed: unused (FGSM draws nothing); kept for one interface.
        precision: what the step is crafted in (``fp32``, ``bf16``); flags are judged in fp32.
        norm: ``linf`` or ``l2``.

    Example:
        >>> import torch, robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> x, y = data.test.x[:8], data.test.y[:8]
        >>> x_adv = rd.attacks.FGSM(eps=0.1)(model, x, y)
        >>> float((x_adv - x).abs().max()) <= 0.1 + 1e-6
        True
    """

    name = "fgsm"
    white_box = True

    def __init__(self, eps: float, seed: int = 0, precision: str | Precision = "fp32", norm: str = "linf"):
        super().__init__(eps, seed, precision, norm)

    def budget(self, num_classes: int) -> Budget:
        return Budget(1, 1)

    def attack_batch(self, model, x, y, generator):
        x_req = x.detach().clone().requires_grad_(True)
        logits = self.precision.logits(model, x_req)
        grad, = torch.autograd.grad(ce_loss(logits, y), x_req)
        x_adv = self.threat.project(x + self.eps * self.threat.ops.ascent(grad), x)
        with torch.no_grad():
            clean = self.correct(model, x, y) if self.precision.reduced else classified(logits, y)
            robust = clean & self.correct(model, x_adv, y)
        return AttackOutput(x_adv, robust)


@ATTACKS.register("pgd")
class PGD(Attack):
    """PGD-k on cross-entropy (Madry et al. 2018) with random start and restarts; under L2 each step
    follows the gradient normalised to unit L2 norm and is projected by rescaling (``norm = "l2"``).

    A sample is robust only if it is classified correctly at every iterate of every restart (the
    worst case, as AutoAttack counts it); samples are dropped as soon as one iterate fools the model,
    so their gradient is no longer computed. On a GPU (``masked_devices``) an fp32 PGD masks them
    instead, so that no step reads a flag back to the host; the verdicts are the same.

    Under a reduced precision (bf16) the iterates are crafted from bf16 forwards, and every verdict
    is an fp32 one: the clean flags, each sample a bf16 forward calls fooled (confirmed by an fp32
    forward before it is dropped; an unconfirmed one is attacked on), and the final iterate.

    Args:
        eps: the radius, in [0, 1] pixel space.
        seed: the random start's seed.
        steps: iterations per restart.
        step_size: the step (default Madry's 2.5 eps / steps).
        restarts: random restarts; a sample must survive them all.
        random_start: start from a uniform point of the ball (L2: a random direction and radius).
        precision: what the iterations are crafted in; flags are judged in fp32.
        norm: ``linf`` or ``l2``.

    Example:
        >>> import torch, robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> x, y = data.test.x[:8], data.test.y[:8]
        >>> out = rd.attacks.PGD(eps=0.5, steps=5, norm="l2").run(model, x, y, progress=False)
        >>> out.robust.dtype, bool(((out.x_adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all())
        (torch.bool, True)
    """

    name = "pgd"
    white_box = True
    takes_step_size = True
    stronger_than = ("fgsm", "transfer")
    loss_fn: LossFn = staticmethod(ce_loss)

    def __init__(self, eps: float, seed: int = 0, steps: int = 20, step_size: float | None = None,
                 restarts: int = 1, random_start: bool = True, precision: str | Precision = "fp32",
                 norm: str = "linf"):
        check_eps(eps, norm)
        steps = check_steps(steps, self.name)
        if int(restarts) < 1:
            raise UserError(f"{self.name} needs restarts >= 1; got {restarts}")
        if step_size is None:
            step_size = 2.5 * eps / steps  # Madry et al.'s rule of thumb
        if step_size < 0:
            raise UserError(f"{self.name} step_size must be >= 0; got {step_size}")
        super().__init__(eps, seed, precision, norm, steps=steps, step_size=float(step_size), restarts=int(restarts),
                         random_start=bool(random_start))

    def budget(self, num_classes: int) -> Budget:
        """steps x restarts gradient passes; a clean forward and a final one per restart."""
        p = self.params
        return Budget(p["steps"] * p["restarts"], 1 + p["restarts"])

    def _probe(self, steps: int) -> "Attack":
        p = self.params
        return type(self)(0.0, seed=self.seed, steps=min(p["steps"], steps), step_size=p["step_size"],
                          restarts=min(p["restarts"], 2), random_start=p["random_start"], norm=self.norm)

    #: devices on which an fp32 PGD keeps every image in the batch and masks the fooled ones instead
    #: of dropping them: no host read inside the step loop (a GPU's launches stay queued), at the
    #: price of steps on images already fooled. Elsewhere fooled images are dropped (fewer passes).
    masked_devices: tuple[str, ...] = ("cuda",)

    def attack_batch(self, model, x, y, generator):
        p, craft = self.params, self.precision
        x = x.detach()
        if x.device.type in self.masked_devices and not craft.reduced:
            return self._masked_batch(model, x, y, generator)
        x_adv = x.clone()
        with torch.no_grad():
            robust = classified(model(x), y) if not craft.reduced else self.correct(model, x, y)
        for _ in range(p["restarts"]):
            active = robust.nonzero().squeeze(1)
            if active.numel() == 0:
                break
            xa, ya = x[active], y[active]
            current = self.threat.random_start(xa, generator) if p["random_start"] else xa.clone()
            bounds = self._bounds(xa)
            for step in range(p["steps"] + 1):
                last = step == p["steps"]  # the final iterate is only checked: no gradient
                leaf = current.detach().requires_grad_(not last)
                if not craft.reduced:
                    with torch.set_grad_enabled(not last):
                        logits = model(leaf)
                    keep = classified(logits, ya)
                elif last:  # the final iterate's verdict
                    keep = self.correct(model, leaf, ya)
                else:
                    logits = craft.logits(model, leaf)
                    keep = classified(logits, ya)
                    if not bool(keep.all()):  # confirm in fp32 before dropping a sample as fooled
                        suspects = (~keep).nonzero().squeeze(1)
                        keep[suspects] = self.correct(model, leaf.detach()[suspects], ya[suspects])
                if bool(keep.all()):  # the common case on robust models: no indexing at all
                    if last:
                        break
                    grad, = torch.autograd.grad(self.loss_fn(logits, ya), leaf)
                    current = self._step(leaf.detach(), grad, bounds)
                    continue
                fooled = ~keep
                robust[active[fooled]] = False
                x_adv[active[fooled]] = leaf.detach()[fooled]
                if last or not keep.any():
                    active, current = active[keep], leaf.detach()[keep]
                    break
                grad, = torch.autograd.grad(self.loss_fn(logits[keep], ya[keep]), leaf)
                active, ya, bounds = active[keep], ya[keep], tuple(b[keep] for b in bounds)
                current = self._step(leaf.detach()[keep], grad[keep], bounds)
            x_adv[active] = current.detach()
        return AttackOutput(x_adv, robust)

    def _masked_batch(self, model, x, y, generator):
        """The same attack with no host read inside the step loop: every image of the batch takes
        every step, and a mask keeps what dropping would have kept. An image is robust only if
        every iterate classifies it correctly; a fooled one keeps the iterate that fooled it. Each
        restart draws its random start for the images still robust, as the dropping loop does
        (one host read per restart)."""
        p = self.params
        expand = (-1,) + (1,) * (x.dim() - 1)
        x_adv = x.clone()
        with torch.no_grad():
            robust = classified(model(x), y)
        bounds = self._bounds(x)
        for _ in range(p["restarts"]):
            active = robust.nonzero().squeeze(1)
            if active.numel() == 0:
                break
            current = x.clone()
            if p["random_start"]:
                current[active] = self.threat.random_start(x[active], generator)
            alive = robust.clone()  # attacked in this restart and not yet fooled
            for step in range(p["steps"] + 1):
                last = step == p["steps"]
                leaf = current.detach().requires_grad_(not last)
                with torch.set_grad_enabled(not last):
                    logits = model(leaf)
                fooled = alive & ~classified(logits, y)
                x_adv = torch.where(fooled.view(expand), leaf.detach(), x_adv)
                robust, alive = robust & ~fooled, alive & ~fooled
                if last:
                    break
                grad, = torch.autograd.grad(self.loss_fn(logits, y), leaf)  # summed: per-image gradients
                current = self._step(leaf.detach(), grad, bounds)
            x_adv = torch.where(alive.view(expand), current.detach(), x_adv)
        return AttackOutput(x_adv, robust)

    def _bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What every step of a restart is projected with (the norm's :meth:`step_bounds`)."""
        return self.threat.ops.step_bounds(x, self.eps)

    def _step(self, current: torch.Tensor, grad: torch.Tensor, bounds: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """One ascent step of ``step_size`` along the norm's steepest direction, projected."""
        ops = self.threat.ops
        return ops.bounded_step(current, self.params["step_size"] * ops.ascent(grad), bounds, self.eps)


@ATTACKS.register("cw")
class CW(PGD):
    """PGD under the same ball on the CW margin loss max_{j!=y} z_j - z_y ("CW-k"); under L2 this is
    the CW loss under PGD-L2 (Madry et al. 2018's CW variant), not Carlini and Wagner's original
    L2 optimisation with its binary search over the constant.

    Args:
        eps, seed, steps, step_size, restarts, random_start, precision, norm: as for :class:`PGD`.

    Example:
        >>> import torch, robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> x, y = data.test.x[:8], data.test.y[:8]
        >>> rd.attacks.CW(eps=0.1, steps=5).run(model, x, y, progress=False).robust.shape
        torch.Size([8])
    """

    name = "cw"
    white_box = True
    takes_step_size = True
    stronger_than = ("fgsm",)
    loss_fn: LossFn = staticmethod(cw_margin_loss)
