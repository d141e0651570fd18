"""The benchmark runner (SPEC section 4): clean accuracy, every attack of a suite, the per-sample
worst case, 95% Wilson intervals, and sanity checks on every evaluation."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from robdistill.core import distributed
from robdistill.attacks.base import Attack, build_attack
from robdistill.data.datasets import Split
from robdistill.core.modes import eval_mode
from robdistill.core.progress import StepLog
from robdistill.config.recipes import SuiteRecipe
from robdistill.core.errors import UserError
from robdistill.core.stats import Proportion, wilson
from robdistill.train.loop import TrainingState

TOLERANCE = 1e-6


@dataclass
class SanityCheck:
    name: str
    passed: bool
    detail: str


@dataclass
class EvaluationResult:
    """Per-sample flags (``clean`` and one per attack key) plus everything derived from them."""

    model: str
    eps: float
    labels: torch.Tensor
    clean: torch.Tensor
    robust: dict[str, torch.Tensor]
    attack_configs: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    warnings: dict[str, list[str]] = field(default_factory=dict)
    checks: list[SanityCheck] = field(default_factory=list)
    rows: list[int] | None = None  # for one shard of a split evaluation: the test rows it covers
    # composite attacks (AutoAttack): attack key -> component -> samples that component fooled
    fooled_by: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def worst(self) -> torch.Tensor:
        """Per-sample AND over clean and every attack: robust to the whole suite."""
        flags = self.clean.clone()
        for robust in self.robust.values():
            flags &= robust
        return flags

    def accuracies(self) -> dict[str, Proportion]:
        rows = {"clean": self.clean, **self.robust}
        if self.robust:
            rows["worst"] = self.worst
        return {key: wilson(int(flags.sum()), self.n) for key, flags in rows.items()}

    def metrics(self) -> dict[str, float]:
        """Flat metric names for MLflow: acc/<key>, acc/<key>_ci_low, acc/<key>_ci_high."""
        out: dict[str, float] = {}
        for key, p in self.accuracies().items():
            out[f"acc/{key}"] = p.value
            out[f"acc/{key}_ci_low"] = p.low
            out[f"acc/{key}_ci_high"] = p.high
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "eps": self.eps, "n": self.n,
            "accuracy": {k: p.as_dict() for k, p in self.accuracies().items()},
            "attacks": self.attack_configs, "seconds": self.seconds, "warnings": self.warnings,
            "sanity_checks": [vars(c) for c in self.checks],
            **({"rows": self.rows} if self.rows is not None else {}),
            "fooled_by": {key: {part: flags.nonzero().squeeze(1).tolist() for part, flags in parts.items()}
                          for key, parts in self.fooled_by.items()},
            "per_sample": {"label": self.labels.tolist(), "clean": self.clean.int().tolist(),
                           **{k: v.int().tolist() for k, v in self.robust.items()}},
        }


# (stronger, weaker) attack names: the stronger one should not leave more samples robust
# (a white-box attack scoring above a black-box transfer attack is a sign of gradient masking,
# Athalye et al. 2018)
STRENGTH_ORDER = (("pgd", "fgsm"), ("cw", "fgsm"), ("autoattack", "pgd"), ("autoattack", "cw"),
                  ("autoattack", "fgsm"), ("pgd", "transfer"), ("autoattack", "transfer"))


def _strength_class(config: dict[str, Any], key: str) -> str:
    """The attack's place in STRENGTH_ORDER. A custom AutoAttack without any APGD component (Square
    or FAB alone) is not expected to beat PGD sample for sample: it gets a class of its own."""
    name = config.get("attack", key)
    if name == "autoattack" and config.get("version") == "custom" and \
            not any(a.startswith("apgd") for a in config.get("attacks") or []):
        return "autoattack-without-apgd"
    return name


def strength_checks(result: EvaluationResult, alpha: float = 0.05) -> list[SanityCheck]:
    """SPEC section 4: a stronger attack of the suite must not score above a weaker one by more
    than noise. Paired on the same images: fails when the stronger attack's accuracy is higher
    and McNemar's exact test rejects equality at ``alpha`` (a sign of gradient masking or a bug)."""
    from robdistill.core.stats import mcnemar_exact

    by_name: dict[str, list[str]] = {}
    for key, config in result.attack_configs.items():
        by_name.setdefault(_strength_class(config, key), []).append(key)
    checks = []
    for strong, weak in STRENGTH_ORDER:
        for s_key in by_name.get(strong, []):
            for w_key in by_name.get(weak, []):
                a, b = result.robust[s_key], result.robust[w_key]
                higher = int(a.sum()) > int(b.sum())
                p = mcnemar_exact(a.tolist(), b.tolist()) if higher else 1.0
                checks.append(SanityCheck(
                    f"{s_key} not above {w_key}", not (higher and p < alpha),
                    f"{int(a.sum())} vs {int(b.sum())} robust" + (f" (McNemar p = {p:.2g})" if higher else "")))
    return checks


WHITE_BOX = ("fgsm", "pgd", "cw")
SQUARE_TOLERANCE = 0.005


def square_gap_checks(result: EvaluationResult, alpha: float = 0.05,
                      tolerance: float = SQUARE_TOLERANCE) -> list[SanityCheck]:
    """The Square-versus-white-box gap (SPEC section 4; Croce & Hein 2020, Athalye et al. 2018):
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

    white = result.clean.clone()
    for key, config in result.attack_configs.items():
        if config.get("attack", key) in WHITE_BOX:
            white &= result.robust[key]
    for parts in result.fooled_by.values():  # gradient-based components of every AutoAttack of the suite
        for part, fooled in parts.items():
            if part != "square":
                white &= ~fooled
    checks = []
    for key, parts in result.fooled_by.items():
        if "square" not in parts:
            continue
        survivors = white
        k, m = int((survivors & parts["square"]).sum()), int(survivors.sum())
        p = float(binomtest(k, m, tolerance, alternative="greater").pvalue) if k else 1.0
        counts = ", ".join(f"{part} {int(f.sum())}" for part, f in parts.items())
        detail = (f"Square fooled {k} of {m} samples that survive every white-box attack (one-sided binomial "
                  f"p = {p:.2g} against {tolerance:.1%}); fooled per component: {counts}")
        checks.append(SanityCheck(f"{key}: no Square-versus-white-box gap", p >= alpha, detail))
        if p < alpha:
            result.warnings.setdefault(key, []).append(f"possible gradient masking: {detail}")
    return checks


def result_from_json(payload: dict[str, Any]) -> EvaluationResult:
    """The inverse of :meth:`EvaluationResult.to_json` (per-sample flags included): results logged
    by another process or machine can be aggregated like local ones."""
    per = payload["per_sample"]
    flags = lambda key: torch.tensor(per[key], dtype=torch.bool)  # noqa: E731
    return EvaluationResult(
        payload["model"], payload["eps"], torch.tensor(per["label"], dtype=torch.long), flags("clean"),
        {key: flags(key) for key in per if key not in ("label", "clean")}, payload.get("attacks", {}),
        payload.get("seconds", {}), payload.get("warnings", {}),
        [SanityCheck(**c) for c in payload.get("sanity_checks", [])], payload.get("rows"),
        {key: {part: _index_flags(indices, len(per["label"])) for part, indices in parts.items()}
         for key, parts in payload.get("fooled_by", {}).items()})


def _index_flags(indices: list[int], n: int) -> torch.Tensor:
    flags = torch.zeros(n, dtype=torch.bool)
    flags[torch.tensor(indices, dtype=torch.long)] = True
    return flags


def merge_shards(shards: list[EvaluationResult]) -> EvaluationResult:
    """One evaluation from the shards of a split one (``evaluate --shard i/n`` on several machines):
    the per-sample flags put back at their test rows; a sanity check passes only if it passed in
    every shard, except the attack-strength checks, which are recomputed on the merged flags; the
    time is the slowest shard's."""
    if not shards or any(s.rows is None for s in shards):
        raise ValueError("merge_shards needs shard results that know their rows")
    n = sum(s.n for s in shards)
    order = torch.tensor([r for s in shards for r in s.rows])
    if sorted(order.tolist()) != list(range(n)):
        raise UserError("the shards do not cover the test rows exactly once; were they run with the same --n-eval?")
    place = lambda values: torch.empty_like(values).index_copy_(0, order, values)  # noqa: E731
    first = shards[0]
    merged = EvaluationResult(
        first.model, first.eps, place(torch.cat([s.labels for s in shards])),
        place(torch.cat([s.clean for s in shards])),
        {key: place(torch.cat([s.robust[key] for s in shards])) for key in first.robust},
        first.attack_configs, {key: max(s.seconds.get(key, 0.0) for s in shards) for key in first.seconds},
        {key: [w for s in shards for w in s.warnings.get(key, [])] for key in first.robust
         if any(key in s.warnings for s in shards)})
    merged.fooled_by = {key: {part: place(torch.cat([s.fooled_by[key][part] for s in shards])) for part in parts}
                        for key, parts in first.fooled_by.items()}
    recomputed = strength_checks(merged) + square_gap_checks(replace(merged, warnings={}))  # names only
    strength = {c.name for c in recomputed}
    by_name: dict[str, list[SanityCheck]] = {}
    for shard in shards:
        for check in shard.checks:
            if check.name not in strength:
                by_name.setdefault(check.name, []).append(check)
    merged.checks = [SanityCheck(name, all(c.passed for c in checks),
                                 next((c.detail for c in checks if not c.passed), checks[0].detail)
                                 + f" ({len(checks)} shards)")
                     for name, checks in by_name.items()]
    merged.checks += strength_checks(merged) + square_gap_checks(merged)
    return merged


STEP_ATTACKS = ("pgd", "cw", "transfer")  # the attacks that take a step_size


def reach(steps: int, step_size: float) -> float:
    """How far (L-infinity) a PGD of ``steps`` signed steps of ``step_size`` can move from its start."""
    return steps * step_size


def reach_warning(what: str, steps: int, step_size: float, eps: float) -> str | None:
    """A warning (printed once to stderr, and returned) when a PGD cannot cross its eps ball:
    ``steps * step_size < eps`` -- e.g. MNIST's paper step 0.01 with 10 steps at eps 0.3. Such an
    attack is weaker than intended: robust accuracy measured or trained with it is overstated."""
    if reach(steps, step_size) >= eps - TOLERANCE:
        return None
    import warnings

    message = (f"{what}: {steps} steps of {step_size:g} reach only {reach(steps, step_size):g} of the eps {eps:g} "
               f"ball; raise the steps or set the step size")
    warnings.warn(message, UserWarning, stacklevel=2)
    return message


def reach_checks(attacks: dict[str, Attack]) -> list[SanityCheck]:
    """SPEC section 4: every PGD-type attack of the suite can cross its ball (steps x step >= eps)."""
    checks = []
    for key, attack in attacks.items():
        params = attack.params.get("surrogate_attack", attack.params)
        if attack.name not in STEP_ATTACKS or "steps" not in params:
            continue
        distance = reach(params["steps"], params["step_size"])
        checks.append(SanityCheck(f"{key}: steps x step_size >= eps", distance >= attack.eps - TOLERANCE,
                                  f"{params['steps']} x {params['step_size']:g} = {distance:g} vs eps {attack.eps:g}"))
    return checks


def suite_attacks(suite: SuiteRecipe, eps: float, step_ratio: float | None = None) -> dict[str, Attack]:
    """Build the suite's attacks, keyed by metric name (``key``, default the attack name).

    ``step_ratio`` is the default step size as a fraction of eps for the attacks that take one and
    whose suite entry sets none: the dataset's step / eps (SPEC section 1). None leaves each
    attack's own default (Madry's 2.5 eps / steps)."""
    attacks = {}
    for entry in suite.attack:
        params = {k: v for k, v in entry.items() if k not in ("name", "key")}
        if step_ratio is not None and entry["name"] in STEP_ATTACKS and params.get("step_size") is None:
            params["step_size"] = step_ratio * eps
        attacks[entry.get("key", entry["name"])] = build_attack(entry["name"], eps, suite.seed, **params)
    return attacks


def clean_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                name: str = "model") -> torch.Tensor:
    """Per-sample clean correctness; non-finite logits are an error naming the model and batch
    (an all-NaN model would otherwise score the share of class 0)."""
    if len(y) == 0:  # a rank or shard without rows
        return torch.zeros(0, dtype=torch.bool, device=y.device)
    flags = []
    with eval_mode(model), torch.no_grad():
        for batch, i in enumerate(range(0, len(y), batch_size)):
            logits = model(x[i:i + batch_size])
            check_finite(logits, f"model '{name}' gives non-finite logits on test batch {batch} "
                                 f"(images {i}-{i + len(logits) - 1})")
            flags.append(logits.argmax(1) == y[i:i + batch_size])
    return torch.cat(flags)


def check_finite(values: torch.Tensor, what: str) -> None:
    """A one-line :class:`UserError` when ``values`` holds NaN or infinity."""
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        rows = int(bad.reshape(len(values), -1).any(1).sum()) if values.ndim else 1
        raise UserError(f"{what}: {rows} of {len(values) if values.ndim else 1} non-finite; check the model's "
                        f"weights, its normalisation and the learning rate")


def _perturbation_stats(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, Any]:
    """What the ball and box checks need, in a form that merges over chunks and ranks."""
    linf = (x_adv - x).abs().flatten(1).amax(1).max().item() if len(x) else 0.0
    box = bool(((x_adv >= -TOLERANCE) & (x_adv <= 1 + TOLERANCE)).all())
    return {"linf": float(linf), "box": box}


def _perturbation_checks(key: str, pieces: list[dict[str, Any]], eps: float) -> list[SanityCheck]:
    linf = max((p["linf"] for p in pieces), default=0.0)
    box = all(p["box"] for p in pieces)
    return [SanityCheck(f"{key}: ||x_adv - x||_inf <= eps", linf <= eps + TOLERANCE,
                        f"max {linf:.6f} vs eps {eps:.6f}"),
            SanityCheck(f"{key}: x_adv in [0, 1]", box, "all pixels in range" if box else "out of range")]


def _attack_piece(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                  progress: bool) -> dict[str, Any]:
    """One attack on some samples: flags, time, warnings and perturbation statistics (a plain
    dictionary of tensors and numbers, so it can go into a ``weights_only`` state file)."""
    if len(y) == 0:  # a rank or shard without rows: nothing to attack
        return {"robust": torch.zeros(0, dtype=torch.bool), "seconds": 0.0, "warnings": [], "fooled_by": {},
                "linf": 0.0, "box": True}
    started = time.perf_counter()
    out = attack.run(model, x, y, batch_size=batch_size, progress=progress)
    return {"robust": out.robust.cpu(), "seconds": time.perf_counter() - started, "warnings": out.warnings,
            "fooled_by": {part: flags.cpu() for part, flags in out.fooled_by.items()},
            **_perturbation_stats(x, out.x_adv)}


def _run_attack(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, suite: SuiteRecipe,
                progress: bool, partial: list[dict[str, Any]], save: Callable[[], None] | None) -> list[dict[str, Any]]:
    """Run ``attack`` on all samples. AutoAttack under a state file goes in chunks of the suite's
    ``autoattack_chunk`` samples, each saved as it ends (``partial`` holds those already done), so
    an interrupted evaluation resumes after its last finished chunk."""
    from robdistill.attacks.base import AutoAttackLinf

    chunk, batch_size = suite.autoattack_chunk, suite.batch_size
    if save is None or not isinstance(attack, AutoAttackLinf) or len(y) <= chunk:
        return [_attack_piece(attack, model, x, y, batch_size, progress)]
    for start in range(len(partial) * chunk, len(y), chunk):
        sl = slice(start, start + chunk)
        partial.append(_attack_piece(attack, model, x[sl], y[sl], batch_size, progress))
        save()
    return partial


ZERO_EPS_SAMPLES = 64  # the eps = 0 probe runs every attack on this many samples (per rank)
ZERO_EPS_STEPS = 2     # ... with at most this many iterations


def zero_eps_check(model: nn.Module, attacks: dict[str, Attack], x: torch.Tensor, y: torch.Tensor,
                   clean: torch.Tensor, batch_size: int) -> SanityCheck:
    """SPEC section 4: every attack of the suite run at eps = 0 (on the first ``ZERO_EPS_SAMPLES``
    samples, at most ``ZERO_EPS_STEPS`` iterations) must leave exactly the clean flags."""
    n = min(len(y), ZERO_EPS_SAMPLES)
    # the reference clean flags with the probe's own batching (on a GPU, kernels chosen per batch
    # size could flip a near-tie sample between differently batched forwards)
    reference = clean_flags(model, x[:n], y[:n], batch_size).cpu() if n else clean[:0].cpu()
    mismatched: dict[str, int] = {}
    for key, attack in attacks.items():
        robust = _attack_piece(attack.zero_eps_probe(ZERO_EPS_STEPS), model, x[:n], y[:n], batch_size,
                               False)["robust"].cpu()
        mismatched[key] = int((robust != reference).sum())
    per_rank = distributed.all_gather_object((n, mismatched))
    total = sum(k for k, _ in per_rank)
    bad = {key: sum(m[key] for _, m in per_rank) for key in attacks}
    failed = {key: count for key, count in bad.items() if count}
    detail = (f"{len(attacks)} attacks at eps = 0 on {total} samples: "
              + (", ".join(f"{key} differs from clean on {count}" for key, count in failed.items())
                 if failed else "flags identical to clean"))
    return SanityCheck("eps = 0 gives clean accuracy", not failed, detail)


def _agreed(compute: Callable[[], Any]) -> Any:
    """``compute()`` on every rank; a :class:`UserError` on any rank is raised on every rank (so no
    rank waits in a collective for one that stopped)."""
    try:
        value, message = compute(), None
    except UserError as exc:
        value, message = None, str(exc)
    failed = [m for m in distributed.all_gather_object(message) if m is not None]
    if failed:
        raise UserError(failed[0])
    return value


def evaluate(model: nn.Module, data: Split, suite: SuiteRecipe, eps: float, *, name: str = "model",
             progress: bool = True, state: TrainingState | None = None, resume: bool = False,
             step_ratio: float | None = None) -> EvaluationResult:
    """Run a suite on ``data`` (already cut to n_eval) and check the evaluation's sanity.

    Under torchrun each rank attacks its rows (``rank::world_size``) and the per-sample flags are
    gathered in the global order, so every rank returns the whole result: the same as one process
    for deterministic attacks; attacks with random draws (PGD's random start, AutoAttack) group
    rows differently into batches and so match one process in distribution, not sample by sample. With
    ``state`` the evaluation is saved after every attack (and every ``suite.autoattack_chunk``
    samples of AutoAttack); ``resume`` continues from that file."""
    rows = distributed.local_rows(len(data))
    x, y = data.x[rows], data.y[rows]
    saved: dict[str, Any] = (state.load() if state is not None and resume else None) or {}
    saved.setdefault("done", {})
    saved.setdefault("partial", {})
    save = (lambda: state.save({**saved, **state.extra})) if state is not None else None  # noqa: E731
    if "clean" not in saved:
        started = time.perf_counter()
        saved["clean"] = _agreed(lambda: clean_flags(model, x, y, suite.batch_size, name).cpu())
        saved["clean_seconds"] = time.perf_counter() - started
    clean = distributed.gather_rows(saved["clean"], len(data)).to(data.y.device)
    result = EvaluationResult(name, eps, data.y.clone(), clean, {}, {}, {"clean": saved["clean_seconds"]})
    attacks = suite_attacks(suite, eps, step_ratio)
    lines = StepLog(f"eval {name}", len(attacks), "attack", enabled=progress and distributed.is_main())
    for number, (key, attack) in enumerate(attacks.items(), 1):
        if key not in saved["done"]:
            partial = saved["partial"].setdefault(key, [])
            saved["done"][key] = _run_attack(attack, model, x, y, suite, progress, partial, save)
            saved["partial"].pop(key, None)
            if save is not None:
                save()
        per_rank = distributed.all_gather_object(saved["done"][key])
        pieces = [p for rank_pieces in per_rank for p in rank_pieces]
        local = torch.cat([p["robust"] for p in saved["done"][key]])
        result.robust[key] = distributed.gather_rows(local, len(data)).to(clean.device)
        result.seconds[key] = max(sum(p["seconds"] for p in rank_pieces) for rank_pieces in per_rank)
        result.attack_configs[key] = attack.config()
        warnings = [w for p in pieces for w in p["warnings"]]
        if warnings:
            result.warnings[key] = warnings
        # from every rank's pieces, so that every rank makes the same gathers (an empty rank has none)
        components = sorted({c for p in pieces for c in p["fooled_by"]})
        if components:
            result.fooled_by[key] = {c: distributed.gather_rows(torch.cat(
                [p["fooled_by"].get(c, torch.zeros(len(p["robust"]), dtype=torch.bool)) for p in saved["done"][key]]),
                len(data)).to(clean.device) for c in components}
        result.checks += _perturbation_checks(key, pieces, eps)
        over = int((result.robust[key] & ~clean).sum())
        result.checks.append(SanityCheck(f"{key}: robust only where clean is correct", over == 0,
                                         f"{over} samples robust but misclassified clean"))
        lines.step(number, f"{key} ({number}/{len(attacks)} attacks: {100 * float(result.robust[key].float().mean()):.1f}% "
                           f"robust of {len(data)})")
    result.checks += strength_checks(result)
    result.checks += square_gap_checks(result)
    result.checks += reach_checks(attacks)
    result.checks.append(zero_eps_check(model, attacks, x, y, saved["clean"].to(x.device), suite.batch_size))
    return result


def eps_sweep(model: nn.Module, data: Split, suite: SuiteRecipe, eps_values: list[float], *,
              name: str = "model", progress: bool = True,
              step_ratio: float | None = None) -> dict[float, EvaluationResult]:
    """Robust accuracy versus eps (SPEC section 4): the whole suite at every radius, each with its
    sanity checks; per-sample flags kept so curves can be recomputed."""
    return {eps: evaluate(model, data, suite, eps, name=name, progress=progress, step_ratio=step_ratio)
            for eps in eps_values}


def plot_eps_curves(curves: dict[str, dict[float, EvaluationResult]], path, title: str = "") -> None:
    """Accuracy (%) versus eps, one panel per model, one line per attack and the worst case, with
    the 95% Wilson interval as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.6), squeeze=False)
    for ax, (model, by_eps) in zip(axes[0], curves.items()):
        eps_values = sorted(by_eps)
        keys = list(by_eps[eps_values[0]].accuracies())
        for key in keys:
            points = [by_eps[e].accuracies()[key] for e in eps_values]
            ax.plot(eps_values, [100 * p.value for p in points], marker="o", label=key,
                    linewidth=2.2 if key == "worst" else 1.2)
            ax.fill_between(eps_values, [100 * p.low for p in points], [100 * p.high for p in points], alpha=0.12)
        ax.set_xlabel("eps (L-inf, images in [0, 1])")
        ax.set_ylabel("accuracy %")
        ax.set_ylim(0, 100)
        ax.set_title(model, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title or "Robust accuracy versus eps", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
