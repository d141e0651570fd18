"""The cost table of a study (issue 33, item 1): wall time per stage from the runs' times, each
attack's seconds, core-hours from the runs' threads."""
from __future__ import annotations

from types import SimpleNamespace

from robdistill.tracking.costs import stage_costs, total_row


def _run(seconds: float, tags: dict[str, str] | None = None, metrics: dict[str, float] | None = None,
         status: str = "FINISHED") -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(start_time=1_000, end_time=1_000 + int(seconds * 1000), status=status),
                           data=SimpleNamespace(tags=tags or {}, metrics=metrics or {}))


def test_stage_costs_by_hand() -> None:
    teachers = [_run(3600, {"threads": "2", "reused": "false"}), _run(60, {"threads": "2", "reused": "true"}),
                _run(1800, {"threads": "2"}, status="KILLED")]
    students = [_run(360, {"threads": "1"}), _run(360)]  # one from before runs recorded threads
    evaluations = [_run(900, {"threads": "1"}, {"seconds/pgd": 300.0, "seconds/cw": 200.0, "acc/pgd": 0.5}),
                   _run(300, {"threads": "1"}, {"seconds/pgd": 100.0})]
    costs = stage_costs(teachers, students, evaluations)
    rows = {row[0].strip(): row for row in (c.row() for c in costs)}
    assert rows["teacher training"] == ["teacher training", "1", "1.00", "60.0", "2", "2.00"]  # reused, killed: out
    assert rows["distillation"][1:3] == ["2", "0.20"] and rows["distillation"][4:] == ["1 and ?", ">= 0.10"]
    assert rows["evaluations"] == ["evaluations", "2", "0.33", "10.0", "1", "0.33"]
    assert rows["pgd"][1:3] == ["2", "0.11"] and rows["cw"][1:3] == ["1", "0.06"]
    assert total_row(costs)[:3] == ["total", "5", "1.53"]


def test_compare_orders_attacks_as_the_suites_do() -> None:
    """FGSM before PGD, CW and AutoAttack (it used to come after AutoAttack, alphabetically)."""
    from robdistill.tracking.search import accuracy_columns

    run = SimpleNamespace(data=SimpleNamespace(metrics={f"acc/{k}": 0.5 for k in
                                                        ("autoattack", "worst", "cw", "fgsm", "clean", "pgd", "zeta")}))
    assert accuracy_columns([run]) == ["acc/clean", "acc/fgsm", "acc/pgd", "acc/cw", "acc/autoattack", "acc/zeta",
                                       "acc/worst"]
