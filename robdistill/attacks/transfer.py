"""The transfer (black-box) attack (METHODS section 4): PGD-k crafted on a surrogate model and
evaluated on the target. The surrogate is a module; a suite's checkpoint path is loaded by the
evaluation (:func:`robdistill.eval.runner.load_surrogate`), not here."""
from __future__ import annotations

import os

import torch
from torch import nn

from robdistill.attacks.base import (ATTACKS, Attack, AttackOutput, Budget, ce_loss, check_eps, classified,
                                     pgd_perturb)
from robdistill.attacks.gradient import PGD
from robdistill.core.errors import UserError
from robdistill.core.modes import eval_mode
from robdistill.core.precision import Precision


@ATTACKS.register("transfer")
class Transfer(Attack):
    """Transfer (black-box) attack (Papernot et al. 2017; Athalye et al. 2018 on its use as a
    masking check): PGD-k crafted on a surrogate model, evaluated on the target (METHODS section 4).

    ``surrogate`` is an ``nn.Module`` (a suite's ``surrogate = "path.pt"`` is loaded by the
    evaluation); ``surrogate_name`` is what the attack's config records for it (default its class),
    and ``follow_inputs`` moves it to the inputs' device before each run (for a surrogate no one else
    holds, such as a loaded checkpoint). Every image is perturbed, also those the surrogate already misclassifies, and
    each restart sends the *final* iterate of a plain PGD-k on the surrogate's cross-entropy (the
    scoring PGD's early stop would send the weakest fooling image, which transfers worst). A sample
    is robust iff the target classifies the clean image and every restart's image correctly. Under
    bf16 the surrogate's PGD runs under autocast; the target's verdicts are fp32 forwards.

    Args:
        eps: the radius.
        seed: the surrogate PGD's seed.
        surrogate: the module the examples are crafted on.
        steps, step_size, restarts, random_start: the surrogate's PGD.
        precision: what the surrogate's PGD runs in; the target's verdicts are fp32.
        norm: ``linf`` or ``l2``.
        surrogate_name: what the config records for the surrogate.
        follow_inputs: move the surrogate to the inputs' device before each run.

    Example:
        >>> import torch, robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> _ = torch.manual_seed(0)
        >>> target = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> surrogate = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> x, y = data.test.x[:8], data.test.y[:8]
        >>> attack = rd.attacks.Transfer(eps=0.1, surrogate=surrogate, steps=5)
        >>> attack.run(target, x, y, progress=False).robust.shape, attack.config()["surrogate"]
        (torch.Size([8]), '<Sequential module>')
    """

    name = "transfer"
    takes_step_size = True

    def __init__(self, eps: float, seed: int = 0, surrogate: nn.Module | None = None,
                 steps: int = 20, step_size: float | None = None, restarts: int = 1, random_start: bool = True,
                 precision: str | Precision = "fp32", norm: str = "linf", surrogate_name: str | None = None,
                 follow_inputs: bool = False):
        check_eps(eps, norm)
        self.pgd = PGD(eps, seed=seed, steps=steps, step_size=step_size, restarts=restarts,
                       random_start=random_start, norm=norm)
        self.surrogate = _surrogate(surrogate)
        label = surrogate_name or f"<{type(surrogate).__name__} module>"
        self._owns_surrogate = follow_inputs
        pgd = {k: v for k, v in self.pgd.config().items() if k not in ("eps", "seed", "precision", "norm")}
        super().__init__(eps, seed, precision, norm, surrogate=label, surrogate_attack=pgd)

    def budget(self, num_classes: int) -> Budget:
        """The surrogate's PGD (counted as passes of the target's size) and a target forward per restart."""
        p = self.pgd.params
        return Budget(p["steps"] * p["restarts"], 1 + 2 * p["restarts"])

    def attack_batch(self, model, x, y, generator):
        p = self.pgd.params
        x = x.detach()
        with torch.no_grad():
            robust = classified(model(x), y) if not self.precision.reduced else self.correct(model, x, y)
        sent, fooled = x.clone(), torch.zeros_like(robust)
        for _ in range(p["restarts"]):
            with self.precision.autocast(x.device):
                crafted = pgd_perturb(self.surrogate, x, y, eps=self.eps, step_size=p["step_size"], steps=p["steps"],
                                      loss_fn=lambda logits, labels: ce_loss(logits.float(), labels),
                                      random_start=p["random_start"], generator=generator, norm=self.norm)
            with torch.no_grad():
                wrong = ~classified(model(crafted), y) if not self.precision.reduced else ~self.correct(model, crafted, y)
            update = ~fooled  # a sample keeps the first image that fooled the target
            sent[update] = crafted[update]
            fooled |= wrong
        return AttackOutput(sent, robust & ~fooled)

    def models_used(self) -> list[nn.Module]:
        return [self.surrogate]

    def _probe(self, steps: int) -> "Attack":
        p = self.pgd.params
        probe = Transfer(0.0, seed=self.seed, surrogate=self.surrogate, steps=min(p["steps"], steps),
                         step_size=p["step_size"], restarts=min(p["restarts"], 2), random_start=p["random_start"],
                         norm=self.norm, surrogate_name=self.params["surrogate"], follow_inputs=self._owns_surrogate)
        return probe

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
            progress: bool = True) -> AttackOutput:
        if self._owns_surrogate:
            self.surrogate.to(x.device)
        with eval_mode(self.surrogate), self.precision.applied(self.surrogate):
            return super().run(model, x, y, batch_size=batch_size, progress=progress)


def _surrogate(surrogate: object) -> nn.Module:
    """The surrogate module, or a one-line error that says where a checkpoint path goes."""
    if isinstance(surrogate, nn.Module):
        return surrogate
    if surrogate is None or not str(surrogate).strip():
        raise UserError("transfer needs a surrogate module (surrogate=model); a suite names a checkpoint "
                        "path instead (surrogate = \"teacher.pt\")")
    if isinstance(surrogate, (str, os.PathLike)):
        raise UserError(f"transfer surrogate must be an nn.Module; got the path '{surrogate}': load it first "
                        f"(rd.load_checkpoint), or name it in a suite's [[attack]] table")
    raise UserError(f"transfer surrogate must be an nn.Module; got {type(surrogate).__name__}")
