"""The benchmark runner (METHODS section 4): clean accuracy, every attack of a suite, the per-sample
worst case, 95% Wilson intervals, and sanity checks on every evaluation."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from robdistill.attacks import ATTACKS, Attack, build_attack
from robdistill.attacks.base import counted_passes
from robdistill.config.recipes import SuiteRecipe
from robdistill.core import distributed
from robdistill.core.errors import UserError, check_finite
from robdistill.core.modes import eval_mode, preserved_global_rng, private_generator
from robdistill.core.progress import StepLog
from robdistill.data.datasets import DatasetInfo, Split
from robdistill.eval.checks import (SanityCheck, perturbation_checks, perturbation_stats, reach_checks,
                                    square_gap_checks, strength_checks)
from robdistill.eval.results import EvaluationResult
from robdistill.models.flops import model_flops
from robdistill.core.threat import norm_of
from robdistill.core.state import TrainingState


NAMED_SURROGATES = ("teacher",)  # a transfer attack's surrogate given by role, resolved by the pipeline
SUITE_ONLY_FIELDS = ("name", "key", "precision", "n_eval", "only")  # an [[attack]] table's fields that are not the attack's


def suite_attacks(suite: SuiteRecipe, eps: float, step_ratio: float | None = None,
                  surrogates: dict[str, nn.Module] | None = None) -> dict[str, Attack]:
    """Build the suite's attacks, keyed by metric name (``key``, default the attack name).

    ``step_ratio`` is the default step size as a fraction of eps for the attacks that take one and
    whose suite entry sets none: the dataset's step / eps (METHODS section 1). None leaves each
    attack's own default (Madry's 2.5 eps / steps). Every attack crafts in the suite's precision.
    ``surrogates`` names modules a transfer attack's ``surrogate`` may refer to (``"teacher"``: the
    student's teacher, in a pipeline's evaluations); a name not given stays a checkpoint path."""
    attacks = {}
    for entry in suite.attack:
        params = {k: v for k, v in entry.items() if k not in SUITE_ONLY_FIELDS}
        named = params.get("surrogate")
        if isinstance(named, str) and named in (surrogates or {}):
            params["surrogate"] = surrogates[named]
        elif named in NAMED_SURROGATES:
            raise UserError(f"attack '{entry.get('key', entry['name'])}' of suite '{suite.name}' crafts on the "
                            f"'{named}', which only `run` and `sweep` know; evaluate with another suite or give "
                            f"the surrogate as a checkpoint path")
        elif isinstance(named, str):  # a checkpoint path: loaded here, moved with the inputs by the attack
            params.update(surrogate=load_surrogate(named), surrogate_name=named, follow_inputs=True)
        if step_ratio is not None and ATTACKS.get(entry["name"]).takes_step_size and params.get("step_size") is None:
            params["step_size"] = step_ratio * eps
        precision = suite.precision_mode.compiled() if suite.compile else suite.precision_mode
        attacks[entry.get("key", entry["name"])] = build_attack(entry["name"], eps, suite.seed, precision=precision,
                                                                norm=suite.threat_model, **params)
    return attacks


def load_surrogate(path: str | Path) -> nn.Module:
    """A transfer attack's surrogate from a robdistill checkpoint path (a suite's ``surrogate =
    "teacher.pt"``), frozen; building it leaves the global RNG as it was."""
    from robdistill.models.checkpoints import load_checkpoint

    if not str(path).strip():
        raise UserError("transfer needs a surrogate: a checkpoint path (surrogate = \"teacher.pt\") or a module")
    try:
        with preserved_global_rng("cpu"):  # building the model draws initial weights
            model, _ = load_checkpoint(Path(path))
    except UserError as exc:
        raise UserError(f"transfer surrogate: {exc}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model


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


def attack_piece(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                 progress: bool) -> dict[str, Any]:
    """One attack on some samples, the unit an evaluation runs and saves: flags, time, warnings and
    perturbation statistics (a plain dictionary of tensors and numbers, so it can go into a
    ``weights_only`` state file)."""
    if len(y) == 0:  # a rank or shard without rows: nothing to attack
        return {"robust": torch.zeros(0, dtype=torch.bool), "seconds": 0.0, "warnings": [], "fooled_by": {},
                "component_seconds": {}, "linf": 0.0, "l2": 0.0, "box": True, "forward_passes": 0,
                "backward_passes": 0, "nonfinite": 0}
    started = time.perf_counter()
    with counted_passes(model, *attack.models_used()) as passes:
        out = attack.run(model, x, y, batch_size=batch_size, progress=progress)
    robust, nonfinite = finite_verdicts(model, attack, x, out, batch_size)
    return {"robust": robust.cpu(), "seconds": time.perf_counter() - started, "warnings": out.warnings,
            "fooled_by": {part: flags.cpu() for part, flags in out.fooled_by.items()},
            "component_seconds": dict(out.seconds_by), "forward_passes": passes.forward,
            "backward_passes": passes.backward,
            "nonfinite": nonfinite, **perturbation_stats(x, out.x_adv)}


def finite_verdicts(model: nn.Module, attack: Attack, x: torch.Tensor, out: Any, batch_size: int) -> tuple[torch.Tensor, int]:
    """The attack's robust flags, less the samples whose logits are not finite (METHODS section 4: a
    NaN forward never judges a sample correct), and how many those are. Judged once more in fp32: the
    image the attack returned for every sample, and for the samples still robust one random point of
    their eps ball (seeded), since an attack whose verdicts are not ours (AutoAttack's) takes the
    argmax of a NaN row as a class like any other and returns the clean image unmoved."""
    finite = finite_rows(model, out.x_adv, batch_size)
    robust = out.robust & finite
    nonfinite = int((~finite).sum())
    survivors = robust.nonzero().squeeze(1)
    if len(survivors) and attack.eps > 0:
        point = attack.threat.random_start(x[survivors], private_generator(attack.seed + 1, x.device))
        inside = finite_rows(model, point, batch_size)
        robust[survivors[~inside]] = False
        nonfinite += int((~inside).sum())
    return robust, nonfinite


def finite_rows(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Per image, whether an fp32 forward of ``model`` gives finite logits: the images an attack
    returns are judged once more, so that a model finite on clean images but NaN on perturbed ones
    is never scored robust there (such samples count as not robust, and a failed check counts them)."""
    from robdistill.core.precision import Precision

    with eval_mode(model):
        return torch.cat([torch.isfinite(Precision.verdict(model, x[i:i + batch_size])).all(1)
                          for i in range(0, len(x), batch_size)])


MAX_ATTACK_BATCH = 8192  # the largest attack batch the CUDA probe tries


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory (CUDA's error, or a backend's message)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def backed_off(run: Callable[[int], Any], batch_size: int) -> tuple[Any, int]:
    """``run(batch)`` at ``batch_size``, run again from the start at half the batch after every
    out-of-memory error (down to 1): the result is the one a fixed run at the batch that fitted gives.
    Returns the result and that batch."""
    while True:
        try:
            return run(batch_size), batch_size
        except Exception as exc:  # noqa: BLE001  (only out-of-memory is retried; the rest is raised)
            if not out_of_memory(exc) or batch_size <= 1:
                raise
            batch_size = max(1, batch_size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def probed_batch(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: int,
                 cap: int = MAX_ATTACK_BATCH, probe: bool | None = None) -> int:
    """The attack batch, sized to the device apart from the training batch: on CUDA (or with
    ``probe``) ``start`` doubled while the attack's cheap probe (its eps = 0 version, two iterations:
    one forward and backward per iteration, as the attack's own) runs on that many images without
    running out of memory, up to ``cap`` and the number of images; elsewhere ``start``. What still
    does not fit is caught by :func:`backed_off`."""
    if not (x.device.type == "cuda" if probe is None else probe):
        return start
    best, size = start, start * 2
    while size <= min(cap, len(y)):
        try:
            attack.zero_eps_probe(2).run(model, x[:size], y[:size], batch_size=size, progress=False)
        except Exception as exc:  # noqa: BLE001
            if not out_of_memory(exc):
                raise
            break
        best, size = size, size * 2
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return best


def _run_attack(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, suite: SuiteRecipe,
                progress: bool, partial: list[dict[str, Any]], save: Callable[[], None] | None) -> list[dict[str, Any]]:
    """Run ``attack`` on all samples, at the batch :func:`probed_batch` sizes to the device (the suite's
    ``batch_size`` on a CPU), backing off on out-of-memory. A ``chunked`` attack (AutoAttack) under a
    state file goes in chunks of the suite's ``autoattack_chunk`` samples, each saved as it ends
    (``partial`` holds those already done), so an interrupted evaluation resumes after its last
    finished chunk."""
    chunk = suite.autoattack_chunk
    batch_size = probed_batch(attack, model, x, y, suite.batch_size)

    def piece(xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        nonlocal batch_size
        done, batch_size = backed_off(lambda b: attack_piece(attack, model, xs, ys, b, progress), batch_size)
        done["batch_size"] = batch_size
        return done

    if save is None or not attack.chunked or len(y) <= chunk:
        return [piece(x, y)]
    for start in range(len(partial) * chunk, len(y), chunk):
        sl = slice(start, start + chunk)
        partial.append(piece(x[sl], y[sl]))
        save()
    return partial


ZERO_EPS_SAMPLES = 64  # the eps = 0 probe runs every attack on this many samples (per rank)
ZERO_EPS_STEPS = 2     # ... with at most this many iterations


def zero_eps_check(model: nn.Module, attacks: dict[str, Attack], x: torch.Tensor, y: torch.Tensor,
                   clean: torch.Tensor, batch_size: int) -> SanityCheck:
    """METHODS section 4: every attack of the suite run at eps = 0 (on the first ``ZERO_EPS_SAMPLES``
    samples, at most ``ZERO_EPS_STEPS`` iterations) must leave exactly the clean flags."""
    n = min(len(y), ZERO_EPS_SAMPLES)
    # the reference clean flags with the probe's own batching (on a GPU, kernels chosen per batch
    # size could flip a near-tie sample between differently batched forwards)
    reference = clean_flags(model, x[:n], y[:n], batch_size).cpu() if n else clean[:0].cpu()
    mismatched: dict[str, int] = {}
    for key, attack in attacks.items():
        probe = attack.zero_eps_probe(ZERO_EPS_STEPS)
        robust = backed_off(lambda b: attack_piece(probe, model, x[:n], y[:n], b, False),  # noqa: B023
                            batch_size)[0]["robust"].cpu()
        mismatched[key] = int((robust != reference).sum())
    per_rank = distributed.all_gather_object((n, mismatched))
    total = sum(k for k, _ in per_rank)
    bad = {key: sum(m[key] for _, m in per_rank) for key in attacks}
    failed = {key: count for key, count in bad.items() if count}
    detail = (f"{len(attacks)} attacks at eps = 0 on {total} samples: "
              + (", ".join(f"{key} differs from clean on {count}" for key, count in failed.items())
                 if failed else "flags identical to clean"))
    return SanityCheck("eps = 0 gives clean accuracy", not failed, detail)


def relative_costs(attacks: dict[str, Attack], num_classes: int) -> list[float] | None:
    """Each attack's most passes per sample (:meth:`Attack.budget`; a forward-only pass counted as a
    third of a gradient pass), the weights of the time-left estimate in the per-attack log lines:
    AutoAttack after FGSM, PGD and CW is most of the time left. None when an attack states no budget."""
    try:
        budgets = [attack.budget(num_classes) for attack in attacks.values()]
    except NotImplementedError:
        return None
    return [max(b.gradient + b.forward / 3, 1e-6) for b in budgets]


def num_classes_of(data: Split) -> int:
    """The classes an evaluation's labels span (at least 2): enough for the attacks' budgets."""
    return max(int(data.y.max()) + 1 if len(data) else 0, 2)


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


def run_suite(model: nn.Module, data: Split, suite: SuiteRecipe, eps: float, *, name: str = "model",
              progress: bool = True, state: TrainingState | None = None, resume: bool = False,
              step_ratio: float | None = None, surrogates: dict[str, nn.Module] | None = None,
              attacks: dict[str, Attack] | None = None) -> EvaluationResult:
    """Run a suite on ``data`` (already cut to n_eval) and check the evaluation's sanity: the engine
    under :func:`robdistill.evaluate` and the tracked pipeline's evaluations.

    Under torchrun each rank attacks its rows (``rank::world_size``) and the per-sample flags are
    gathered in the global order, so every rank returns the whole result: the same as one process
    for deterministic attacks; attacks with random draws (PGD's random start, AutoAttack) group
    rows differently into batches and so match one process in distribution, not sample by sample. With
    ``state`` the evaluation is saved after every attack (and every ``suite.autoattack_chunk``
    samples of AutoAttack); ``resume`` continues from that file. An attack whose suite table sets
    ``n_eval`` runs on the first that many images only (its flags are that long); ``surrogates``:
    see :func:`suite_attacks`. ``attacks`` are the suite's attacks already built (by key, in the
    suite's order), else they are built here."""
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
    result = EvaluationResult(name, eps, data.y.clone(), clean, {}, {}, {"clean": saved["clean_seconds"]},
                              not_in_worst=tuple(e.get("key", e["name"]) for e in suite.attack if "only" in e),
                              norm=suite.threat_model)
    if attacks is None:
        attacks = suite_attacks(suite, eps, step_ratio, surrogates)
    counts = suite.attack_samples(len(data))
    lines = StepLog(f"eval {name}", len(attacks), "attack", enabled=progress and distributed.is_main(),
                    done=len(saved["done"]), weights=relative_costs(attacks, num_classes_of(data)))
    flops = model_flops(model, tuple(data.x.shape[1:]), x.device) if len(data) else None
    for number, (key, attack) in enumerate(attacks.items(), 1):
        n_key = counts[key]
        if key not in saved["done"]:
            local_n = len(range(distributed.context().rank, n_key, distributed.context().world_size))
            partial = saved["partial"].setdefault(key, [])
            saved["done"][key] = _run_attack(attack, model, x[:local_n], y[:local_n], suite, progress, partial, save)
            saved["partial"].pop(key, None)
            if save is not None:
                save()
        per_rank = distributed.all_gather_object(saved["done"][key])
        pieces = [p for rank_pieces in per_rank for p in rank_pieces]
        local = torch.cat([p["robust"] for p in saved["done"][key]])
        result.robust[key] = distributed.gather_rows(local, n_key).to(clean.device)
        result.seconds[key] = max(sum(p["seconds"] for p in rank_pieces) for rank_pieces in per_rank)
        parts = [p.get("component_seconds", {}) for p in pieces]  # AutoAttack's (absent in older state files)
        for part in dict.fromkeys(c for seconds in parts for c in seconds):
            result.seconds[f"{key}/{part}"] = max(sum(p.get("component_seconds", {}).get(part, 0.0) for p in rank_pieces)
                                                  for rank_pieces in per_rank)
        result.costs[key] = {f"{kind}_per_sample": sum(p.get(f"{kind}_passes", 0) for p in pieces) / max(n_key, 1)
                             for kind in ("forward", "backward")}
        batches = [p["batch_size"] for p in pieces if "batch_size" in p]
        if batches:  # the batch the attack ran at (sized to the device, backed off on out-of-memory)
            result.costs[key]["batch_size"] = float(min(batches))
        if flops is not None:  # the attack's passes at the attacked model's cost (a surrogate's counted alike)
            result.costs[key]["gflop_per_sample"] = (flops.forward * result.costs[key]["forward_per_sample"]
                                                     + flops.input_backward * result.costs[key]["backward_per_sample"]
                                                     ) / 1e9
        result.attack_configs[key] = attack.config()
        warnings = [w for p in pieces for w in p["warnings"]]
        if warnings:
            result.warnings[key] = warnings
        # from every rank's pieces, so that every rank makes the same gathers (an empty rank has none)
        components = sorted({c for p in pieces for c in p["fooled_by"]})
        if components:
            result.fooled_by[key] = {c: distributed.gather_rows(torch.cat(
                [p["fooled_by"].get(c, torch.zeros(len(p["robust"]), dtype=torch.bool)) for p in saved["done"][key]]),
                n_key).to(clean.device) for c in components}
        result.checks += perturbation_checks(key, pieces, attack.eps, attack.norm)
        nonfinite = sum(p.get("nonfinite", 0) for p in pieces)
        result.checks.append(SanityCheck(f"{key}: finite logits on the adversarial images", nonfinite == 0,
                                         f"{nonfinite} of {n_key} images give NaN or infinite logits (counted "
                                         f"not robust)" if nonfinite else f"all {n_key} finite"))
        over = int((result.robust[key] & ~clean[:n_key]).sum())
        result.checks.append(SanityCheck(f"{key}: robust only where clean is correct", over == 0,
                                         f"{over} samples robust but misclassified clean"))
        lines.step(number, f"{key} ({number}/{len(attacks)} attacks: {100 * float(result.robust[key].float().mean()):.1f}% "
                           f"robust of {n_key})")
    result.checks += strength_checks(result)
    result.checks += square_gap_checks(result)
    result.checks += reach_checks(attacks)
    result.checks.append(zero_eps_check(model, attacks, x, y, saved["clean"].to(x.device), suite.batch_size))
    return result


def eps_sweep(model: nn.Module, data: Split, suite: SuiteRecipe, eps_values: list[float], *,
              name: str = "model", progress: bool = True,
              step_ratio: float | None = None) -> dict[float, EvaluationResult]:
    """Robust accuracy versus eps (METHODS section 4): the whole suite at every radius, each with its
    sanity checks; per-sample flags kept so curves can be recomputed."""
    return {eps: run_suite(model, data, suite, eps, name=name, progress=progress, step_ratio=step_ratio)
            for eps in eps_values}


def plot_eps_curves(curves: dict[str, dict[float, EvaluationResult]], path, title: str = "") -> None:
    """Accuracy (%) versus eps, one panel per model, one line per attack and the worst case, with
    the 95% Wilson interval as a band; with several models, a last panel puts every model's worst
    case on one plot (a teacher and its students side by side). The x axis names the curves' norm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(curves) + (len(curves) > 1)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.6), squeeze=False)
    norms = {getattr(at, "norm", "linf") for by_eps in curves.values() for at in by_eps.values()}
    xlabel = f"eps ({' / '.join(norm_of(n).label for n in sorted(norms))}, images in [0, 1])"

    def band(ax, by_eps, key, label, width):
        eps_values = sorted(by_eps)
        points = [by_eps[e].accuracies()[key] for e in eps_values]
        ax.plot(eps_values, [100 * p.value for p in points], marker="o", label=label, linewidth=width)
        ax.fill_between(eps_values, [100 * p.low for p in points], [100 * p.high for p in points], alpha=0.12)

    def finish(ax, heading):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy %")
        ax.set_ylim(0, 100)
        ax.set_title(heading, fontsize=9)
        ax.legend(fontsize=7)

    for ax, (model, by_eps) in zip(axes[0], curves.items()):
        for key in by_eps[min(by_eps)].accuracies():
            band(ax, by_eps, key, key, 2.2 if key == "worst" else 1.2)
        finish(ax, model)
    if len(curves) > 1:
        ax = axes[0][-1]
        for model, by_eps in curves.items():
            key = "worst" if "worst" in by_eps[min(by_eps)].accuracies() else "clean"
            band(ax, by_eps, key, model, 1.6)
        finish(ax, "every model, worst case")
    fig.suptitle(title or "Robust accuracy versus eps", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class SuitePlan:
    """A suite resolved for one dataset, the one place an evaluation's ball and steps come from
    (METHODS sections 1 and 4): the radius (the given one, else the suite's, else the dataset's under
    the suite's norm) and the default step as a fraction of it (the dataset's step / eps), with
    which every attack of the suite is built. :func:`resolve_suite` makes one."""

    suite: SuiteRecipe
    eps: float
    step_ratio: float | None  # None: each attack's own default step (Madry's 2.5 eps / steps)

    @property
    def default_step_size(self) -> float | None:
        """The step of every attack that takes one and whose table sets none."""
        return None if self.step_ratio is None else self.step_ratio * self.eps

    def attacks(self, surrogates: dict[str, nn.Module] | None = None) -> dict[str, Attack]:
        """The suite's attacks, built (see :func:`suite_attacks`)."""
        return suite_attacks(self.suite, self.eps, self.step_ratio, surrogates)

    def for_subject(self, subject: str | None) -> "SuitePlan":
        """The plan as it runs on one model of a grid (:meth:`SuiteRecipe.for_subject`)."""
        suite = self.suite.for_subject(subject)
        return self if suite is self.suite else replace(self, suite=suite)


def resolve_suite(suite: SuiteRecipe, info: "DatasetInfo", eps: float | None = None, what: str = "eps") -> SuitePlan:
    """``suite`` for ``info``'s dataset at ``eps`` (checked as a radius of the suite's norm, ``what``
    naming it in the error), else at the suite's or the dataset's radius."""
    from robdistill.data.datasets import dataset_step_ratio

    if eps is not None:
        suite.norm.check_radius(eps, what)
    return SuitePlan(suite, suite_eps(suite, info, eps), dataset_step_ratio(info.name, suite.threat_model))


def suite_eps(suite: SuiteRecipe, info: "DatasetInfo", override: float | None = None) -> float:
    """The radius a suite runs at: ``override``, else the suite's, else the dataset's under the suite's
    threat model (METHODS section 1)."""
    if override is not None:
        return override
    return info.eps_for(suite.threat_model) if suite.eps is None else suite.eps
