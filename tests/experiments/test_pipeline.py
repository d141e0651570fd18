"""End to end through the CLI on digits with tiny recipes: every teacher x perturbation, teacher
reuse, the MLflow run layout, terminal run states on failure, and the other commands."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from robdistill.cli.main import main

TEACHERS = ["standard", "at", "alp", "aalp"]
PERTURBS = ["keep", "nonmax-shuffle", "nonmax-flatten"]
TINY = ["--set", "teacher.epochs=1", "--set", "student.epochs=1", "--suite", "smoke", "--n-eval", "24",
        "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def outcome_checkpoint(printed: str, role: str) -> str:
    """The checkpoint path `run` printed for ``role`` (``teacher checkpoint: <path>``)."""
    line = next(line for line in printed.splitlines() if line.startswith(f"{role} checkpoint: "))
    return line.split(": ", 1)[1].split(" (")[0]


def runs(workdir: Path):
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["robdistill"], output_format="list")


@pytest.mark.slow
def test_every_teacher_and_perturbation(workdir: Path) -> None:
    for teacher in TEACHERS:
        for i, perturb in enumerate(PERTURBS):
            result = invoke("run", "--teacher", teacher, "--perturb", perturb, *TINY)
            assert result.exit_code == 0, (teacher, perturb, result.output, result.exception)
            out = result.stdout
            assert "teacher  24" in out and "student  24" in out, out
            assert "sanity checks: all passed" in out, out
            assert ("(reused from cache)" in out) == (i > 0), out
    all_runs = runs(workdir)
    assert all(r.info.status == "FINISHED" for r in all_runs)
    parents = [r for r in all_runs if r.data.tags.get("stage") == "run"]
    assert len(parents) == len(TEACHERS) * len(PERTURBS)
    assert {(r.data.tags["teacher"], r.data.tags["perturb"]) for r in parents} == {
        (t, p) for t in TEACHERS for p in PERTURBS}
    # one teacher trained per recipe, reused by the other perturbations
    teacher_runs = [r for r in all_runs if r.data.tags.get("stage") == "teacher"]
    assert sum(r.data.tags["reused"] == "false" for r in teacher_runs) == len(TEACHERS)
    assert len(list((workdir / "cache" / "teachers").glob("*.pt"))) == len(TEACHERS)
    # every run links its teacher and student as MLflow logged models (the UI's Models column); a
    # trained model carries its checkpoint, a reused teacher says where it came from instead
    models = mlflow.search_logged_models(experiment_ids=[parents[0].info.experiment_id], max_results=100,
                                         output_format="list")
    client = mlflow.MlflowClient()
    with_files = {m.model_id: bool(client.list_logged_model_artifacts(m.model_id)) for m in models}
    by_role = {role: [m for m in models if m.tags["role"] == role] for role in ("teacher", "student")}
    assert len(by_role["teacher"]) == len(by_role["student"]) == len(parents)
    assert {m.source_run_id for m in by_role["student"]} == {r.info.run_id for r in parents}
    assert all(with_files[m.model_id] for m in by_role["student"])
    trained = [m for m in by_role["teacher"] if with_files[m.model_id]]
    assert len(trained) == len(TEACHERS) and all("reused_from" not in m.tags for m in trained)
    assert all(m.tags.get("reused_from") == "cache" for m in by_role["teacher"] if not with_files[m.model_id])


@pytest.mark.slow
def test_run_layout_in_mlflow(workdir: Path) -> None:
    result = invoke("run", "--teacher", "alp", "--perturb", "nonmax-shuffle", *TINY)
    assert result.exit_code == 0, result.output
    all_runs = runs(workdir)
    parent = next(r for r in all_runs if r.data.tags.get("stage") == "run")
    assert parent.info.run_id in result.stdout
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["stage"] for r in children) == ["evaluation", "evaluation", "student", "teacher"]
    # names lead with teacher, perturbation and seed (they are read, never parsed)
    # after the cell, what sets this run apart from a default one: a smoke test reads as one
    assert parent.info.run_name == ("alp · nonmax-shuffle · s0 · suite smoke, n 24, teacher.epochs=1, "
                                    "student.epochs=1")
    assert sorted(r.info.run_name for r in children) == [
        "eval student alp · nonmax-shuffle · s0", "eval teacher alp · s0", "student alp · nonmax-shuffle · s0",
        "teacher alp · s0"]
    # the description: the results table in Markdown, as `run` prints it
    note = parent.data.tags["mlflow.note.content"]
    assert "| model | n | clean |" in note and "| student | 24 |" in note and "| teacher | 24 |" in note
    assert "Sanity checks: all passed" in note
    # the dataset as MLflow dataset inputs: training (train + val) and test (the evaluated images)
    inputs = mlflow.get_run(parent.info.run_id).inputs.dataset_inputs
    contexts = {i.tags[0].value: i.dataset for i in inputs}
    assert set(contexts) == {"training", "test"} and {d.name for d in contexts.values()} == {"digits"}
    assert json.loads(contexts["test"].profile) == {"test": 24}
    assert len(contexts["training"].digest) == 16 and contexts["training"].digest != contexts["test"].digest
    for child in children:
        if child.data.tags["stage"] in ("teacher", "student"):
            assert [i.dataset.name for i in mlflow.get_run(child.info.run_id).inputs.dataset_inputs] == ["digits"]
    # parameters: the full resolved recipes
    params = parent.data.params
    assert params["teacher.objective"] == "alp" and params["teacher.eps"] == "0.1"
    assert params["student.temperature"] == "4.0" and params["perturb"] == "nonmax-shuffle"
    # final metrics with intervals, for teacher and student
    metrics = parent.data.metrics
    for role in ("teacher", "student"):
        for key in ("clean", "fgsm", "pgd", "cw", "worst"):
            low, value, high = (metrics[f"{role}/acc/{key}{s}"] for s in ("_ci_low", "", "_ci_high"))
            assert 0.0 <= low <= value <= high <= 1.0
        assert metrics[f"{role}/acc/worst"] <= metrics[f"{role}/acc/pgd"] <= metrics[f"{role}/acc/clean"]
    # per-epoch training metrics
    teacher_run = next(r for r in children if r.data.tags["stage"] == "teacher")
    history = mlflow.MlflowClient().get_metric_history(teacher_run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1]
    assert "val/pgd_acc" in teacher_run.data.metrics
    # artifacts: checkpoint, results JSON, table, logit-statistics plot
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.json", "results_table.json", "logit_statistics.png"} <= names
    # the teacher and the student as logged models of the parent run (the UI's Models column), each
    # with its checkpoint (its only artifact) and its accuracies
    models = {m.tags["role"]: m for m in mlflow.search_logged_models(
        experiment_ids=[parent.info.experiment_id], output_format="list")}
    assert models["teacher"].name == "teacher-alp-s0" and models["student"].name == "student-alp-nonmax-shuffle-s0"
    for role, model in models.items():
        assert model.source_run_id == parent.info.run_id and str(model.status) == "READY"
        assert [f.path for f in client.list_logged_model_artifacts(model.model_id)] == [
            Path(outcome_checkpoint(result.stdout, role)).name]
        assert {m.key: m.value for m in model.metrics}["acc/worst"] == metrics[f"{role}/acc/worst"]
        assert {m.run_id for m in model.metrics} == {next(
            r.info.run_id for r in children if r.info.run_name.startswith(f"eval {role}"))}  # its evaluation's
    assert not [key for key in metrics if key.startswith("acc/")]  # the parent's stay teacher/... and student/...
    local = Path(client.download_artifacts(parent.info.run_id, "results.json", str(workdir)))
    saved = json.loads(local.read_text())
    flags = saved["student"]["per_sample"]["pgd"]
    assert sum(flags) / len(flags) == pytest.approx(metrics["student/acc/pgd"])


@pytest.mark.slow
def test_failure_marks_runs_failed_and_interrupt_marks_killed(workdir: Path, monkeypatch) -> None:
    import robdistill.experiments.pipeline as pipeline

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "distill_student", explode)
    result = invoke("run", "--teacher", "standard", *TINY)
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "distill_student", interrupt)
    result = invoke("run", "--teacher", "standard", *TINY)
    assert result.exit_code == 130
    assert "KILLED" in result.stderr
    statuses = sorted((r.data.tags["stage"], r.info.status) for r in runs(workdir))
    assert statuses == [("run", "FAILED"), ("run", "KILLED"), ("teacher", "FINISHED"), ("teacher", "FINISHED")]
    assert mlflow.active_run() is None


@pytest.mark.slow
def test_train_distill_evaluate_commands(workdir: Path) -> None:
    result = invoke("train-teacher", "--teacher", "at", "--set", "epochs=1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "teacher checkpoint" in result.stdout and "reused" not in result.stdout
    result = invoke("distill", "--teacher", "at", "--perturb", "nonmax-flatten", "--set", "teacher.epochs=1",
                    "--set", "student.epochs=1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "(reused from cache)" in result.stdout
    student = next((workdir / "cache" / "students").glob("*.pt"))
    teacher = next((workdir / "cache" / "teachers").glob("*.pt"))
    result = invoke("evaluate", str(teacher), str(student), "--suite", "smoke", "--n-eval", "16", "--quiet")
    assert result.exit_code == 0, result.output
    assert "teacher:" in result.stdout and "student:" in result.stdout
    assert all(r.info.status == "FINISHED" for r in runs(workdir))
    by_stage = {r.data.tags.get("stage"): r for r in runs(workdir)}
    # the address printed shows the run it names (the runs view would filter an `evaluate` run out)
    assert f"/runs/{by_stage['evaluate'].info.run_id}" in result.stdout.splitlines()[-1]
    assert by_stage["distill"].info.run_name == "distill at · nonmax-flatten · s0"
    note = by_stage["evaluate"].data.tags["mlflow.note.content"]
    assert "| model | n | clean |" in note and f"| teacher:{teacher.stem} | 16 |" in note
    (test_input,) = mlflow.get_run(by_stage["evaluate"].info.run_id).inputs.dataset_inputs
    assert test_input.dataset.name == "digits" and json.loads(test_input.dataset.profile) == {"test": 16}


@pytest.mark.slow
def test_same_seed_same_numbers(workdir: Path, tmp_path_factory, monkeypatch) -> None:
    first = invoke("run", "--teacher", "at", "--perturb", "nonmax-shuffle", *TINY)
    assert first.exit_code == 0, first.output
    other = tmp_path_factory.mktemp("again")
    monkeypatch.setenv("ROBDISTILL_CACHE", str(other / "cache"))  # force retraining the teacher:
    second = invoke("run", "--teacher", "at", "--perturb", "nonmax-shuffle", "--no-registry", *TINY)  # no reuse
    assert second.exit_code == 0
    table = lambda out: out.split("results")[1].split("sanity")[0]  # noqa: E731
    assert "(reused from cache)" not in second.stdout
    assert table(first.stdout) == table(second.stdout)


def test_run_under_the_l2_threat_model(workdir: Path) -> None:
    """`run --threat-model l2`: the teacher trains, the student validates and every attack runs in the
    L2 ball of the dataset's L2 radius; the table says so; the L2 teacher is cached apart from the
    L-inf one; the runs carry the threat model."""
    l2 = invoke("run", "--teacher", "at", "--perturb", "nonmax-shuffle", "--threat-model", "l2", *TINY)
    assert l2.exit_code == 0, (l2.output, l2.exception)
    assert "95% Wilson interval; L2 eps 0.5)" in l2.stdout, l2.stdout
    assert "sanity checks: all passed" in l2.stdout
    linf = invoke("run", "--teacher", "at", "--perturb", "nonmax-shuffle", *TINY)
    assert "95% Wilson interval; L-inf eps 0.1)" in linf.stdout and "(reused from cache)" not in linf.stdout
    assert outcome_checkpoint(l2.stdout, "teacher") != outcome_checkpoint(linf.stdout, "teacher")
    parents = {r.data.tags["threat_model"]: r for r in runs(workdir) if r.data.tags.get("stage") == "run"}
    assert set(parents) == {"l2", "linf"}
    assert parents["l2"].info.run_name.startswith("at · nonmax-shuffle · s0 · l2 · suite smoke")
    assert parents["linf"].info.run_name.startswith("at · nonmax-shuffle · s0 · suite smoke")
    assert parents["l2"].data.params["eps"] == "0.5" and parents["l2"].data.params["suite.threat_model"] == "l2"
    evaluations = [r for r in runs(workdir) if r.data.tags.get("threat_model") == "l2" and "acc/pgd" in r.data.metrics]
    assert len(evaluations) == 2  # teacher and student
    client = mlflow.MlflowClient()
    path = client.download_artifacts(evaluations[0].info.run_id, "results.json", str(workdir))
    payload = json.loads(Path(path).read_text())
    assert payload["norm"] == "l2" and {a["norm"] for a in payload["attacks"].values()} == {"l2"}


def test_the_estimate_is_logged_beside_the_measured_time(workdir: Path) -> None:
    """`run` and `sweep` log the estimate they printed before starting; the report puts a sweep's
    beside the wall time its run took (issue 33)."""
    loud = [a for a in TINY if a != "--quiet"]
    ran = invoke("run", "--teacher", "standard", "--perturb", "keep", *loud)
    assert ran.exit_code == 0, (ran.output, ran.exception)
    swept = invoke("sweep", "--teachers", "standard", "--perturbs", "keep", "--seeds", "0", *loud)
    assert swept.exit_code == 0, (swept.output, swept.exception)
    parents = {r.data.tags["stage"]: r for r in runs(workdir) if r.data.tags.get("stage") in ("run", "sweep")
               and "mlflow.parentRunId" not in r.data.tags}
    for stage in ("run", "sweep"):
        metrics = parents[stage].data.metrics
        assert 0 < metrics["estimate/low_seconds"] <= metrics["estimate/high_seconds"], (stage, metrics)
    name = parents["sweep"].data.tags["sweep_name"]
    reported = invoke("report", name, "--out", str(workdir / "r.md"))
    assert reported.exit_code == 0, (reported.output, reported.exception)
    costs = (workdir / "r.md").read_text().split("<a id=\"costs\"></a>")[1]
    assert "Estimated before it started, and measured" in costs and parents["sweep"].info.run_id in costs
