"""The result of an evaluation (METHODS section 4): per-sample flags, accuracies with 95% Wilson
intervals, sanity checks; its JSON form and the merge of the shards of a split evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from robdistill.core.errors import UserError
from robdistill.core.stats import Proportion, wilson
from robdistill.eval.checks import SanityCheck, square_gap_checks, strength_checks
from robdistill.eval.tables import results_table

__all__ = ["EvaluationResult", "SanityCheck", "merge_shards", "result_from_json"]


@dataclass
class EvaluationResult:
    """Per-sample flags (``clean`` and one per attack key) plus everything derived from them.

    Attributes:
        model: the evaluated model's name.
        eps, norm: the ball attacked.
        labels, clean: the labels and the per-sample clean flags.
        robust: per attack key, the per-sample robust flags (True: every image the attack tried was
            classified correctly by an fp32 forward).
        attack_configs, seconds, costs, warnings: each attack's configuration, time, passes and
            warnings.
        checks: the sanity checks (:class:`SanityCheck`).

    Example:
        >>> import torch, robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> result = rd.evaluate(model, data, attacks=rd.attacks.PGD(eps=0.1, steps=3), n_eval=32, progress=False)
        >>> bool((result.robust["pgd"] <= result.clean).all())    # robust only where clean is right
        True
        >>> sorted(result.accuracies())
        ['clean', 'pgd', 'worst']
    """

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
    # attack key -> {"forward_per_sample": ..., "backward_per_sample": ...}: the passes it cost
    costs: dict[str, dict[str, float]] = field(default_factory=dict)
    # attacks that ran on some models of a grid only (a suite table's ``only``): shown, but left out
    # of the worst case, so that every model's worst case is over the same attacks
    not_in_worst: tuple[str, ...] = ()
    norm: str = "linf"  # the threat model's norm (robdistill.core.threat); ``eps`` is its radius

    @property
    def threat_label(self) -> str:
        """The threat model as tables print it: ``L-inf eps 0.1``, ``L2 eps 0.2``."""
        from robdistill.core.threat import ThreatModel

        return ThreatModel(self.norm, self.eps).label

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def table(self) -> str:
        """One row: clean accuracy, each attack and the worst case, in % with 95% Wilson intervals."""
        return results_table({self.model: self})

    @property
    def passed(self) -> bool:
        """Whether every sanity check passed."""
        return all(check.passed for check in self.checks)

    @property
    def worst(self) -> torch.Tensor:
        """Per-sample AND over clean and every attack: robust to the whole suite. When some attacks
        ran on fewer images (a suite table's ``n_eval``), over the images every attack ran on."""
        flags = self.clean[:self.common_n].clone()
        for key, robust in self.robust.items():
            if key not in self.not_in_worst:
                flags &= robust[:self.common_n]
        return flags

    @property
    def common_n(self) -> int:
        """The images every attack of the worst case ran on: the first ``common_n`` (all ``n`` unless
        an attack of the suite ran on a prefix)."""
        return min([self.n, *(len(flags) for key, flags in self.robust.items() if key not in self.not_in_worst)])

    def samples(self, key: str) -> int:
        """How many images ``key`` (clean, an attack, worst) was measured on."""
        return self.n if key == "clean" else self.common_n if key == "worst" else len(self.robust[key])

    def accuracies(self) -> dict[str, Proportion]:
        rows = {"clean": self.clean, **self.robust}
        if self.robust:
            rows["worst"] = self.worst
        return {key: wilson(int(flags.sum()), len(flags)) for key, flags in rows.items()}

    def metrics(self) -> dict[str, float]:
        """Flat metric names for MLflow: acc/<key>, acc/<key>_ci_low, acc/<key>_ci_high."""
        from robdistill.core.metrics import accuracy_metric_names

        out: dict[str, float] = {}
        for key, p in self.accuracies().items():
            value, low, high = accuracy_metric_names(key)
            out[value] = p.value
            out[low] = p.low
            out[high] = p.high
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "norm": self.norm, "eps": self.eps, "n": self.n,
            "accuracy": {k: p.as_dict() for k, p in self.accuracies().items()},
            "attacks": self.attack_configs, "seconds": self.seconds, "costs": self.costs, "warnings": self.warnings,
            **({"not_in_worst": list(self.not_in_worst)} if self.not_in_worst else {}),
            "sanity_checks": [vars(c) for c in self.checks],
            **({"rows": self.rows} if self.rows is not None else {}),
            "fooled_by": {key: {part: flags.nonzero().squeeze(1).tolist() for part, flags in parts.items()}
                          for key, parts in self.fooled_by.items()},
            "per_sample": {"label": self.labels.tolist(), "clean": self.clean.int().tolist(),
                           **{k: v.int().tolist() for k, v in self.robust.items()}},
        }


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
        {key: {part: _index_flags(indices, len(per.get(key, per["label"]))) for part, indices in parts.items()}
         for key, parts in payload.get("fooled_by", {}).items()}, payload.get("costs", {}),
        tuple(payload.get("not_in_worst", ())), payload.get("norm", "linf"))


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
    if any(len(flags) < s.n for s in shards for flags in s.robust.values()):
        raise UserError("a suite whose attacks run on fewer images than the evaluation (an [[attack]] n_eval) "
                        "cannot be split into shards; run it unsharded or drop the attack's n_eval")
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
         if any(key in s.warnings for s in shards)}, norm=first.norm)
    merged.fooled_by = {key: {part: place(torch.cat([s.fooled_by[key][part] for s in shards])) for part in parts}
                        for key, parts in first.fooled_by.items()}
    merged.costs = {key: {kind: sum(s.costs.get(key, {}).get(kind, 0.0) * s.n for s in shards) / max(n, 1)
                          for kind in costs} for key, costs in first.costs.items()}
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
