"""What the MLflow UI shows of a run: names that read when cut short, the parent's description (its
results in Markdown), and the dataset as an MLflow dataset input. (A whole tiny `run` is checked in
tests/experiments/test_pipeline.py::test_run_layout_in_mlflow.)"""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import torch

from robdistill.eval.results import EvaluationResult
from robdistill.eval.tables import markdown_table, results_markdown
from robdistill.analysis.study import TEACHER_ROW, Cell, sweep_markdown
from robdistill.tracking import schema
from robdistill.tracking import store as tracking


def result(clean: list[int], pgd: list[int]) -> EvaluationResult:
    n = len(clean)
    return EvaluationResult("m", 0.1, torch.zeros(n, dtype=torch.long), torch.tensor(clean, dtype=torch.bool),
                            {"pgd": torch.tensor(pgd, dtype=torch.bool)}, {}, {})


def test_run_names_lead_with_teacher_perturbation_and_seed() -> None:
    assert schema.pipeline_run_name("alp", "nonmax-shuffle", 0, "default") == "alp · nonmax-shuffle · s0"
    assert schema.pipeline_run_name("alp", "keep", 2, "wide") == "alp · keep · s2 · wide"
    assert schema.pipeline_run_name("at", "keep", 0, "default", "l2", ["suite smoke", "teacher.epochs=2"]) == \
        "at · keep · s0 · l2 · suite smoke, teacher.epochs=2"
    assert schema.teacher_run_name("alp", 0) == "teacher alp · s0"
    assert schema.student_run_name("alp", "nonmax-shuffle", 0) == "student alp · nonmax-shuffle · s0"
    assert schema.role_evaluation_run_name("teacher", "alp", "keep", 1) == "eval teacher alp · s1"
    assert schema.role_evaluation_run_name("student", "alp", "keep", 1) == "eval student alp · keep · s1"
    assert schema.distill_run_name("at", "keep", 0) == "distill at · keep · s0"
    assert schema.sweep_run_name(["at", "alp"], ["keep", "nonmax-shuffle"], [0, 1], None) == \
        "sweep at,alp · keep,nonmax-shuffle · s0,1"
    assert schema.sweep_run_name(["at"], ["keep"], [0], (1, 2)) == "sweep shard 1/2 · at · keep · s0"


def test_descriptions_are_the_printed_tables_in_markdown() -> None:
    assert markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    note = results_markdown({"teacher": result([1, 1, 0, 1], [1, 0, 0, 1]), "student": result([1, 1, 1, 1], [0] * 4)})
    assert "| model | n | clean | pgd | worst |" in note
    assert "| student | 4 | 100.0 [" in note and "Sanity checks:" in note
    cells = [Cell("at", "keep", 0, result([1, 1, 1, 1], [1, 0, 0, 0]), "r0"),
             Cell("at", "nonmax-shuffle", 0, result([1, 1, 1, 1], [1, 1, 1, 0]), "r1"),
             Cell("at", TEACHER_ROW, 0, result([1, 1, 1, 1], [1, 1, 1, 1]), "r0")]
    note = sweep_markdown(cells)
    assert "| teacher | perturb | seeds | n | clean | pgd | worst |" in note
    assert "| at | nonmax-shuffle | 0 | 4 |" in note and "claim 3" in note
    assert "(no keep cells" in sweep_markdown(cells[1:])


def test_description_and_dataset_input_on_a_run(workdir: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_experiment("view")
    with mlflow.start_run() as run:
        tracking.set_description("| a |\n|---|\n| 1 |")
        tracking.log_dataset("digits", "0123456789abcdef", {"train": 10, "val": 2, "test": 3}, "training")
    with mlflow.start_run() as long_run:
        tracking.set_description("\n".join(f"| row {i} |" for i in range(2000)))
    assert mlflow.get_run(run.info.run_id).data.tags[schema.TAG_NOTE] == "| a |\n|---|\n| 1 |"
    (found,) = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert (found.dataset.name, found.dataset.digest) == ("digits", "0123456789abcdef")
    assert json.loads(found.dataset.profile) == {"train": 10, "val": 2, "test": 3}
    assert [(t.key, t.value) for t in found.tags] == [("mlflow.data.context", "training")]
    cut = mlflow.get_run(long_run.info.run_id).data.tags[schema.TAG_NOTE]
    assert len(cut) <= 8000 and cut.endswith("*(cut short: see the run's artifacts)*")
    assert "| row 0 |" in cut and "| row 1999 |" not in cut
