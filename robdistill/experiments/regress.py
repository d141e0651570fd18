"""`robdistill regress`: a CI gate on robust accuracy.

A baseline file (JSON, in ``benchmarks/baselines/``) names a fixed configuration (dataset, suite,
recipe overrides, the teacher x perturbation cases) and, per case, role and metric, the accuracy
measured over several seeds. The gate runs the configuration once, with the baseline's gate seed,
with every teacher trained afresh (a cached or registered teacher would hide a change to the
training code), and fails
when a measured accuracy falls below

    expected - tolerance,  tolerance = max(t_{1 - 0.05/m, k-1} * s * sqrt(1 + 1/k),  h_Wilson)

where the expected value and s are the mean and standard deviation over the k baseline seeds (none
of them the gate's seed), the first term is the one-sided prediction bound for one new seed,
Bonferroni-corrected over the m checks of the gate so that the whole gate has a false-alarm rate
of at most 5%, and h_Wilson is the half-width of the 95% Wilson interval of the expected accuracy
on the n evaluated images (a floor: with few seeds s can come out near zero by chance). The
configuration the expectations were measured under is fingerprinted; a gate run against a baseline
edited since its last ``--update`` (or one that measures a check the baseline lacks) fails. Rising above expected + tolerance passes but is flagged,
so the baseline can be updated deliberately (``--update``).
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from robdistill.core.errors import UserError
from robdistill.config.settings import Settings
from robdistill.core.stats import seed_summary, wilson
from robdistill.tracking import schema

FORMAT = "robdistill-baseline-v1"
FAMILY_ALPHA = 0.05  # false-alarm rate of the whole gate


@dataclass
class Baseline:
    """What the gate runs and what it expects. ``expected`` maps 'teacher|perturb|role|metric' to
    {"mean", "std", "values", "n", "tolerance"}."""

    dataset: str = "digits"
    suite: str = "fast"
    student: str = "default"
    n_eval: int = 0
    overrides: list[str] = field(default_factory=list)
    cases: list[list[str]] = field(default_factory=list)      # [teacher, perturb]
    # fewer checks: tighter tolerances
    metrics: list[str] = field(default_factory=lambda: list(schema.ACCURACY_METRICS))
    gate_seed: int = 0
    update_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)
    measured_on: dict[str, Any] = field(default_factory=dict)


def load_baseline(path: Path) -> Baseline:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"baseline {path} does not exist; write one (see benchmarks/baselines/) "
                        f"and fill it with --update") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"baseline {path} is not readable JSON ({exc}); fix it or regenerate it with --update") from None
    if not isinstance(raw, dict) or raw.pop("format", None) != FORMAT:
        raise UserError(f"{path} is not a robdistill baseline (expected \"format\": \"{FORMAT}\")")
    known = set(Baseline.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"baseline {path}: unknown field '{unknown[0]}'; known: {', '.join(sorted(known))}")
    baseline = Baseline(**raw)
    if not baseline.cases or any(len(c) != 2 for c in baseline.cases):
        raise UserError(f"baseline {path}: 'cases' must be a non-empty list of [teacher, perturb] pairs")
    bad = [m for m in baseline.metrics if m not in schema.ACCURACY_METRICS]
    if bad or not baseline.metrics:
        raise UserError(f"baseline {path}: 'metrics' must be a non-empty list from "
                        f"{', '.join(schema.ACCURACY_METRICS)}")
    if len(set(baseline.update_seeds)) < 2:
        raise UserError(f"baseline {path}: 'update_seeds' needs at least 2 seeds to measure the spread")
    if baseline.gate_seed in baseline.update_seeds:
        raise UserError(f"baseline {path}: gate_seed {baseline.gate_seed} is one of update_seeds; the gate "
                        f"must measure a seed the expectations were not computed from")
    return baseline


def config_fingerprint(baseline: Baseline) -> str:
    """What the expectations depend on: dataset, suite, student, n_eval, overrides, cases, seeds."""
    from robdistill.config.recipes import fingerprint

    return fingerprint({k: getattr(baseline, k) for k in ("dataset", "suite", "student", "n_eval", "overrides",
                                                           "cases", "metrics", "gate_seed", "update_seeds")})


def save_baseline(path: Path, baseline: Baseline) -> None:
    payload = {"format": FORMAT, **baseline.__dict__}
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)


def measure(baseline: Baseline, settings: Settings, seed: int,
            on_case: Callable[[str], None] | None = None) -> dict[str, tuple[float, int]]:
    """Run every case once with ``seed`` in a fresh teacher cache: 'teacher|perturb|role|metric' ->
    (accuracy, n). The teacher of each case is evaluated too (once per teacher)."""
    from robdistill.experiments.pipeline import run_experiment
    from robdistill.config.overrides import Overrides
    from robdistill.experiments.specs import RunSpec

    out: dict[str, tuple[float, int]] = {}
    evaluated_teachers: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="robdistill-regress-") as cache:
        run_settings = replace(settings, seed=seed, cache_dir=Path(cache), dataset=baseline.dataset,
                               use_registry=False)
        for teacher, perturb in baseline.cases:
            if on_case is not None:
                on_case(f"seed {seed}: {teacher} -> {perturb}")
            spec = RunSpec(teacher, perturb, baseline.student, baseline.suite, n_eval=baseline.n_eval,
                           overrides=Overrides.parse(baseline.overrides), evaluate_teacher=teacher not in evaluated_teachers)
            outcome = run_experiment(run_settings, spec, extra_tags=schema.regress_tags())
            evaluated_teachers.add(teacher)
            for role, result in outcome.results.items():
                for metric, p in result.accuracies().items():
                    if metric in baseline.metrics:
                        key = f"{teacher}|{perturb if role == schema.ROLE_STUDENT else '-'}|{role}|{metric}"
                        out[key] = (p.value, p.n)
    return out


def prediction_tolerance(values: list[float], n: int, checks: int = 1) -> float:
    """max(one-sided prediction half-width for one new seed at level FAMILY_ALPHA / checks,
    95% Wilson half-width at n)."""
    from scipy.stats import t as student_t

    s = seed_summary(values)
    k = len(values)
    spread = float(student_t.ppf(1 - FAMILY_ALPHA / checks, k - 1)) * s.std * math.sqrt(1 + 1 / k)
    p = wilson(round(s.mean * n), n)
    return max(spread, (p.high - p.low) / 2)


def expectations(values_by_key: dict[str, tuple[list[float], int]]) -> dict[str, dict[str, Any]]:
    """Per check: mean, std, the per-seed values, n, and the tolerance (Bonferroni over all checks)."""
    out = {}
    for key, (values, n) in values_by_key.items():
        s = seed_summary(values)
        out[key] = {"mean": s.mean, "std": s.std, "values": values, "n": n,
                    "tolerance": prediction_tolerance(values, n, len(values_by_key))}
    return out


def refit(baseline: Baseline) -> Baseline:
    """Recompute the tolerances from the stored per-seed values (after a change to the tolerance
    rule) without measuring anything; the configuration must be the one they were measured under."""
    if not baseline.expected:
        raise UserError("the baseline has no per-seed values to refit; run --update")
    expected = expectations({k: (e["values"], e["n"]) for k, e in baseline.expected.items()
                             if k.rsplit("|", 1)[1] in baseline.metrics})
    measured_on = {**baseline.measured_on, "config_fingerprint": config_fingerprint(baseline),
                   "checks": len(expected), "family_alpha": FAMILY_ALPHA}
    return replace(baseline, expected=expected, measured_on=measured_on)


def update(baseline: Baseline, settings: Settings, on_case: Callable[[str], None] | None = None) -> Baseline:
    """Measure every case over ``update_seeds`` and set the expectations."""
    started = time.perf_counter()
    runs = [measure(baseline, settings, seed, on_case) for seed in baseline.update_seeds]
    checks = len(runs[0])
    expected = expectations({key: ([run[key][0] for run in runs], runs[0][key][1]) for key in runs[0]})
    import platform

    import torch

    measured_on = {"date": time.strftime("%Y-%m-%d"), "platform": platform.platform(), "torch": torch.__version__,
                   "device": settings.device, "seconds": round(time.perf_counter() - started),
                   "config_fingerprint": config_fingerprint(baseline), "checks": checks,
                   "family_alpha": FAMILY_ALPHA}
    return replace(baseline, expected=expected, measured_on=measured_on)


def extend(baseline: Baseline, settings: Settings, seeds: list[int],
           on_case: Callable[[str], None] | None = None) -> Baseline:
    """Measure only the new ``seeds`` and add them to the expectations (more seeds, tighter
    tolerances) without re-measuring the stored ones; the stored ones must have been measured under
    the baseline's current configuration."""
    import copy

    import torch

    check_expectations(baseline)
    seeds = [int(s) for s in seeds]
    new = [s for s in dict.fromkeys(seeds) if s not in baseline.update_seeds]
    if not new or len(new) != len(seeds):
        raise UserError(f"--add-seeds: give distinct seeds not already in update_seeds {baseline.update_seeds}")
    if baseline.gate_seed in new:
        raise UserError(f"--add-seeds: {baseline.gate_seed} is the gate seed; the expectations must not use it")
    stored = {k: baseline.measured_on.get(k) for k in ("device", "torch")}
    here = {"device": settings.device, "torch": torch.__version__}
    if any(stored[k] is not None and stored[k] != here[k] for k in here):
        raise UserError(f"--add-seeds: the stored seeds were measured with {stored}, this is {here}; measure "
                        f"them all together with --update")
    baseline = replace(baseline, expected=copy.deepcopy(baseline.expected))
    started = time.perf_counter()
    runs = [measure(baseline, settings, seed, on_case) for seed in new]
    missing = [k for k in baseline.expected if any(k not in run for run in runs)]
    if missing:
        raise UserError(f"--add-seeds: the new seeds did not measure {missing[0]}; re-measure with --update")
    for key, entry in baseline.expected.items():
        entry["values"] = list(entry["values"]) + [run[key][0] for run in runs]
    grown = replace(baseline, update_seeds=baseline.update_seeds + new)
    grown = refit(grown)
    seconds = grown.measured_on.get("seconds", 0) + round(time.perf_counter() - started)
    return replace(grown, measured_on={**grown.measured_on, "seconds": seconds,
                                       "extended": time.strftime("%Y-%m-%d")})


@dataclass
class GateRow:
    key: str
    expected: float
    tolerance: float
    measured: float | None
    unexpected: bool = False  # measured, but the baseline has no expectation for it

    @property
    def verdict(self) -> str:
        if self.unexpected:
            return "FAIL (not in the baseline: --update)"
        if self.measured is None:
            return "FAIL (not measured)"
        if self.measured < self.expected - self.tolerance:
            return "FAIL (regression)"
        if self.measured > self.expected + self.tolerance:
            return "pass (improved: update the baseline)"
        return "pass"

    @property
    def failed(self) -> bool:
        return self.verdict.startswith("FAIL")


def check_expectations(baseline: Baseline) -> None:
    """The expectations must exist and have been measured under the baseline's current configuration."""
    if not baseline.expected:
        raise UserError("the baseline has no expectations yet; fill it with --update")
    if baseline.measured_on.get("config_fingerprint") != config_fingerprint(baseline):
        raise UserError("the baseline's configuration changed since its expectations were measured; "
                        "re-measure them with --update")


def check(baseline: Baseline, measured: dict[str, tuple[float, int]]) -> list[GateRow]:
    check_expectations(baseline)
    rows = [GateRow(key, e["mean"], e["tolerance"], measured[key][0] if key in measured else None)
            for key, e in baseline.expected.items()]
    rows += [GateRow(key, float("nan"), float("nan"), value, unexpected=True)
             for key, (value, _) in measured.items() if key not in baseline.expected]
    return rows


def gate_table(rows: list[GateRow]) -> tuple[list[str], list[list[str]]]:
    header = ["teacher", "perturb", "model", "metric", "expected %", "tolerance", "measured %", "verdict"]
    body = []
    for row in rows:
        teacher, perturb, role, metric = row.key.split("|")
        body.append([teacher, perturb, role, metric, f"{100 * row.expected:.1f}", f"±{100 * row.tolerance:.1f}",
                     "-" if row.measured is None else f"{100 * row.measured:.1f}", row.verdict])
    return header, body
