"""The names of the accuracy metrics, spelled once: ``acc/<key>`` with its 95% interval
``acc/<key>_ci_low`` / ``acc/<key>_ci_high``, scoped by a prefix where several models share a run
(``teacher/acc/pgd``, ``standard/keep/acc/pgd``); and the artifact an evaluation is logged as.

A plain-string module at the bottom layer, so that the evaluation (which produces the metrics)
and the tracking layer (which logs and reads them, :mod:`robdistill.tracking.schema`) agree
without the evaluation depending on tracking."""
from __future__ import annotations

from typing import Mapping

# the accuracy keys a reader looks for, in a reader's order: clean first, the attacks, worst last
ACCURACY_METRICS = ("clean", "pgd", "cw", "autoattack", "worst")
# the order tables put attack columns in where no suite says (the bundled suites' order: weakest first)
ATTACK_ORDER = ("fgsm", "pgd", "cw", "autoattack", "transfer")
ACCURACY = "acc"
CI_LOW_SUFFIX = "_ci_low"
CI_HIGH_SUFFIX = "_ci_high"
SCOPE_SEPARATOR = "/"
# the artifact an evaluation's JSON form (EvaluationResult.to_json, per-sample flags included) is logged as
RESULTS_ARTIFACT = "results.json"


def accuracy_prefix(*scope: str) -> str:
    """``acc/``, or with a scope ``teacher/acc/``, ``standard/keep/acc/``."""
    return SCOPE_SEPARATOR.join([*scope, ACCURACY]) + SCOPE_SEPARATOR


def accuracy_metric(key: str, *scope: str) -> str:
    """The accuracy metric of ``key``: ``acc/pgd``; ``accuracy_metric("pgd", "teacher")`` is
    ``teacher/acc/pgd``."""
    return accuracy_prefix(*scope) + key


def interval_metric_names(metric: str) -> tuple[str, str]:
    """The names of the 95% interval's bounds of an accuracy metric: (``<metric>_ci_low``,
    ``<metric>_ci_high``)."""
    return metric + CI_LOW_SUFFIX, metric + CI_HIGH_SUFFIX


def accuracy_metric_names(key: str, *scope: str) -> tuple[str, str, str]:
    """(value, interval low, interval high) metric names of accuracy ``key``:
    ``acc/<key>``, ``acc/<key>_ci_low``, ``acc/<key>_ci_high``."""
    metric = accuracy_metric(key, *scope)
    return (metric, *interval_metric_names(metric))


def is_interval_metric(name: str) -> bool:
    """Whether ``name`` is an interval bound (``..._ci_low`` / ``..._ci_high``)."""
    return name.endswith((CI_LOW_SUFFIX, CI_HIGH_SUFFIX))


def scoped_metric(scope: str, name: str) -> str:
    """``name`` under ``scope``: ``scoped_metric("teacher", "acc/pgd")`` is ``teacher/acc/pgd``."""
    return f"{scope}{SCOPE_SEPARATOR}{name}"


def scoped_metrics(scope: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """Every metric of ``metrics`` under ``scope`` (one model's metrics on a run of several)."""
    return {scoped_metric(scope, name): value for name, value in metrics.items()}
