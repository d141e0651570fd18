"""Attacks with one interface (the torchattacks pattern): ``attack(model, x, y)`` returns the
adversarial images, ``attack.run(model, x, y)`` also the per-sample robust flags. Each attack takes
a threat model's norm (``norm="linf"`` or ``"l2"``) and radius ``eps`` in [0, 1] pixel space
(METHODS sections 1 and 4).

``base`` holds the interface, the losses and the registry; importing this package imports every
attack module (``gradient``, ``transfer``, ``autoattack``), so every attack is registered before
:func:`build_attack` looks one up."""
from robdistill.attacks.base import ATTACKS, Attack, AttackOutput, build_attack, ce_loss, cw_margin_loss, pgd_perturb
from robdistill.attacks.gradient import CW, FGSM, PGD
from robdistill.attacks.transfer import Transfer
from robdistill.attacks.autoattack import AutoAttack, AutoAttackLinf

__all__ = ["ATTACKS", "Attack", "AttackOutput", "AutoAttack", "AutoAttackLinf", "CW", "FGSM", "PGD", "Transfer",
           "build_attack", "ce_loss", "cw_margin_loss", "pgd_perturb"]
