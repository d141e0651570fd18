"""The sanity checks of an evaluation (METHODS section 4): attack strength order, the
Square-versus-white-box gap, a PGD's reach, the perturbation ball and box, and finite values.

Each check is a :class:`SanityCheck`; the properties of each attack they rely on (white-box, takes a
step size, which attacks it must not score above) are attributes of the registered attack classes,
read through :data:`robdistill.attacks.ATTACKS`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from robdistill.attacks import ATTACKS, Attack
from robdistill.attacks.base import reach
from robdistill.core.threat import NORM_NAMES, NORMS

if TYPE_CHECKING:
    from robdistill.eval.results import EvaluationResult

TOLERANCE = 1e-6


@dataclass
class SanityCheck:
    """One named check of an evaluation, whether it passed, and what it found.

    Attributes:
        name: what is checked (``"eps = 0 gives clean accuracy"``).
        passed: whether it held.
        detail: what it found, in words and numbers.

    Example:
        >>> import torch, robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> result = rd.evaluate(model, data, attacks=rd.attacks.PGD(eps=0.1, steps=3), n_eval=32, progress=False)
        >>> [check.name for check in result.checks if not check.passed]
        []
    """

    name: str
    passed: bool
    detail: str


def _registered(name: str, attribute: str) -> Any:
    """An attribute of the attack registered under ``name``; None for names that are not registered
    (e.g. the strength class of a custom AutoAttack without APGD)."""
    return getattr(ATTACKS.get(name), attribute) if name in ATTACKS else None


def strength_order() -> tuple[tuple[str, str], ...]:
    """(stronger, weaker) registered attack names, from every attack's ``stronger_than``: the
    stronger one should not leave more samples robust.

    In the order the checks run: first the pairs whose weaker attack is white-box, then those whose
    weaker attack is black-box (a white-box attack scoring above a black-box transfer attack is a
    sign of gradient masking, Athalye et al. 2018); within each, by the stronger attack in the order
    the ``stronger_than`` tuples (walked by name) first list it -- those no attack lists, the
    strongest, last -- and then in its ``stronger_than`` order. For the bundled attacks: pgd > fgsm,
    cw > fgsm, autoattack > pgd, autoattack > cw, autoattack > fgsm, pgd > transfer,
    autoattack > transfer."""
    pairs = [(strong, weak) for strong in ATTACKS.names() for weak in ATTACKS.get(strong).stronger_than]
    listed = list(dict.fromkeys(weak for _, weak in pairs))

    def rank(name: str) -> int:
        return listed.index(name) if name in listed else len(listed)

    # a stable sort: each stronger attack's pairs keep their stronger_than order
    return tuple(sorted(pairs, key=lambda pair: (not _registered(pair[1], "white_box"), rank(pair[0]))))


def _strength_class(config: dict[str, Any], key: str) -> str:
    """The attack's place in :func:`strength_order`. A custom AutoAttack without any APGD component
    (Square or FAB alone) is not expected to beat PGD sample for sample: it gets a class of its own."""
    name = config.get("attack", key)
    if name == "autoattack" and config.get("version") == "custom" and \
            not any(a.startswith("apgd") for a in config.get("attacks") or []):
        return "autoattack-without-apgd"
    return name


def strength_checks(result: EvaluationResult, alpha: float = 0.05) -> list[SanityCheck]:
    """METHODS section 4: a stronger attack of the suite must not score above a weaker one by more
    than noise. Paired on the same images: fails when the stronger attack's accuracy is higher
    and McNemar's exact test rejects equality at ``alpha`` (a sign of gradient masking or a bug)."""
    from robdistill.core.stats import mcnemar_exact

    by_name: dict[str, list[str]] = {}
    for key, config in result.attack_configs.items():
        by_name.setdefault(_strength_class(config, key), []).append(key)
    checks = []
    for strong, weak in strength_order():
        for s_key in by_name.get(strong, []):
            for w_key in by_name.get(weak, []):
                common = min(len(result.robust[s_key]), len(result.robust[w_key]))  # paired on the same images
                a, b = result.robust[s_key][:common], result.robust[w_key][:common]
                higher = int(a.sum()) > int(b.sum())
                p = mcnemar_exact(a.tolist(), b.tolist()) if higher else 1.0
                checks.append(SanityCheck(
                    f"{s_key} not above {w_key}", not (higher and p < alpha),
                    f"{int(a.sum())} vs {int(b.sum())} robust" + (f" (McNemar p = {p:.2g})" if higher else "")))
    return checks


SQUARE_TOLERANCE = 0.005


def square_gap_checks(result: EvaluationResult, alpha: float = 0.05,
                      tolerance: float = SQUARE_TOLERANCE) -> list[SanityCheck]:
    """The Square-versus-white-box gap (METHODS section 4; Croce & Hein 2020, Athalye et al. 2018):
    samples that survive every white-box attack of the suite (FGSM, PGD, CW and AutoAttack's
    gradient-based components) but are fooled by the black-box Square attack point to gradient
    masking.

    Rule: among the m white-box survivors Square ran on, k are fooled by Square. White-box attacks
    with a finite budget miss a few points on honest models (AutoAttack's own check tolerates a
    0.2-point drop), so the check fails when an exact one-sided binomial test rejects "Square's
    success rate on white-box survivors <= ``tolerance``" (0.5%) at ``alpha``. Paired on the same
    images all discordant pairs point one way, so McNemar's test would flag any k >= 6 however
    large m is; the tolerance keeps large evaluations from flagging noise. A flagged gap is also
    added to the result's warnings; the per-component counts are in the check's detail."""
    from scipy.stats import binomtest

    # the images every attack (and every AutoAttack component) ran on, those outside the worst case included
    common = min([result.n, *(len(f) for f in result.robust.values()),
                  *(len(f) for parts in result.fooled_by.values() for f in parts.values())])
    white = result.clean[:common].clone()
    for key, config in result.attack_configs.items():
        if _registered(config.get("attack", key), "white_box"):
            white &= result.robust[key][:common]
    for parts in result.fooled_by.values():  # gradient-based components of every AutoAttack of the suite
        for part, fooled in parts.items():
            if part != "square":
                white &= ~fooled[:common]
    checks = []
    for key, parts in result.fooled_by.items():
        if "square" not in parts:
            continue
        survivors = white
        k, m = int((survivors & parts["square"][:common]).sum()), int(survivors.sum())
        p = float(binomtest(k, m, tolerance, alternative="greater").pvalue) if k else 1.0
        counts = ", ".join(f"{part} {int(f.sum())}" for part, f in parts.items())
        detail = (f"Square fooled {k} of {m} samples that survive every white-box attack (one-sided binomial "
                  f"p = {p:.2g} against {tolerance:.1%}); fooled per component: {counts}")
        checks.append(SanityCheck(f"{key}: no Square-versus-white-box gap", p >= alpha, detail))
        if p < alpha:
            result.warnings.setdefault(key, []).append(f"possible gradient masking: {detail}")
    return checks


def reach_checks(attacks: dict[str, Attack]) -> list[SanityCheck]:
    """METHODS section 4: every PGD-type attack of the suite can cross its ball (steps x step >= eps)."""
    checks = []
    for key, attack in attacks.items():
        params = attack.params.get("surrogate_attack", attack.params)
        if not _registered(attack.name, "takes_step_size") or "steps" not in params:
            continue
        distance = reach(params["steps"], params["step_size"])
        checks.append(SanityCheck(f"{key}: steps x step_size >= eps", distance >= attack.eps - TOLERANCE,
                                  f"{params['steps']} x {params['step_size']:g} = {distance:g} vs eps {attack.eps:g}"))
    return checks


def perturbation_stats(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, Any]:
    """What the ball and box checks need, in a form that merges over chunks and ranks: the largest
    perturbation under every norm (robdistill.core.threat), and whether every pixel is in [0, 1]."""
    stats: dict[str, Any] = {name: float(NORMS.get(name).distance(x_adv - x).max().item()) if len(x) else 0.0
                             for name in NORM_NAMES}
    stats["box"] = bool(((x_adv >= -TOLERANCE) & (x_adv <= 1 + TOLERANCE)).all())
    return stats


#: how the ball check prints each norm
NORM_SYMBOLS = {"linf": "inf", "l2": "2"}


def perturbation_checks(key: str, pieces: list[dict[str, Any]], eps: float, norm: str = "linf") -> list[SanityCheck]:
    """METHODS section 4: every adversarial image lies in the eps ball of the attack's norm around its
    image and in [0, 1] (``pieces``: the :func:`perturbation_stats` of every chunk and rank). The
    tolerance is float rounding: 1e-6 absolute, and under L2 also 1e-5 of eps (a norm sums many
    squares)."""
    largest = max((p.get(norm, 0.0) for p in pieces), default=0.0)
    tolerance = TOLERANCE + (1e-5 * eps if norm != "linf" else 0.0)
    box = all(p["box"] for p in pieces)
    return [SanityCheck(f"{key}: ||x_adv - x||_{NORM_SYMBOLS.get(norm, norm)} <= eps", largest <= eps + tolerance,
                        f"max {largest:.6f} vs eps {eps:.6f}"),
            SanityCheck(f"{key}: x_adv in [0, 1]", box, "all pixels in range" if box else "out of range")]
