"""The tracking workflow: `compare` and `ui` on the local SQLite store, and runs shared through a
real `mlflow server` on loopback (started here, stopped after), including two concurrent writers."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from robdistill.cli.main import main
from robdistill.tracking.search import filter_string, ui_command

from server_helpers import free_port, stop, wait_for_http

TINY = ["--set", "teacher.epochs=1", "--set", "student.epochs=1", "--suite", "smoke", "--n-eval", "16", "--quiet"]
ROBDISTILL = [sys.executable, "-m", "robdistill.cli"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_filter_string() -> None:
    assert filter_string("run", None, []) == "tags.stage = 'run'"
    assert filter_string(None, "abc", ["teacher=alp", " seed = 1"]) == (
        "tags.sweep_id = 'abc' and tags.teacher = 'alp' and tags.seed = '1'")


def test_ui_command() -> None:
    assert ui_command("http://127.0.0.1:5000", 5000) is None
    command = ui_command("sqlite:///mlflow.db", 5055)
    assert command[-9:] == ["ui", "--backend-store-uri", "sqlite:///mlflow.db", "--host", "127.0.0.1",
                            "--port", "5055", "--workers", "1"]


def test_compare_errors(workdir: Path) -> None:
    out = invoke("compare")
    assert out.exit_code == 2 and "no tracking store at sqlite:///" in out.stderr
    assert not (workdir / "mlflow.db").exists()  # reading never creates a store
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("robdistill")
    out = invoke("compare", "--experiment", "nope")
    assert out.exit_code == 2 and "no experiment 'nope'" in out.stderr
    out = invoke("compare", "--tag", "teacher")
    assert out.exit_code == 2 and "write it as key=value" in out.stderr
    out = invoke("compare", "--out", "x.txt")
    assert out.exit_code == 2 and "use a .csv or .md" in out.stderr


@pytest.mark.slow
def test_compare_reads_runs_back_from_the_local_store(workdir: Path) -> None:
    for teacher in ("standard", "at"):
        assert invoke("run", "--teacher", teacher, "--perturb", "keep", *TINY).exit_code == 0
    out = invoke("compare", "--out", "runs.csv", "--out", "runs.md")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "name", "status", "dataset"]
    assert "student/acc/pgd" in lines[0] and "teacher/acc/clean" in lines[0]
    assert len([line for line in lines if "FINISHED" in line]) == 2
    csv_rows = (workdir / "runs.csv").read_text().splitlines()
    assert len(csv_rows) == 3 and (workdir / "runs.md").read_text().startswith("| run | name |")
    only_at = invoke("compare", "--tag", "teacher=at").stdout
    assert "at · keep · s0" in only_at and "standard · keep" not in only_at
    # the numbers are the run's own metrics
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run = next(r for r in mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
               if r.data.tags.get("stage") == "run" and r.data.tags["teacher"] == "at")
    assert f"{100 * run.data.metrics['student/acc/pgd']:.1f} [" in only_at


@pytest.mark.slow
def test_ui_serves_the_local_store(workdir: Path) -> None:
    assert invoke("run", "--teacher", "standard", "--perturb", "keep", *TINY).exit_code == 0
    port = free_port()
    process = subprocess.Popen([*ROBDISTILL, "ui", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=10",
                                    timeout=10) as response:
            assert b"robdistill" in response.read()
        # as few processes as serve one user: MLflow's CLI and one uvicorn worker, no job runners
        # (MLflow 3's defaults start about 15)
        if Path("/proc").is_dir():
            assert len(_descendants(process.pid)) <= 3, _descendants(process.pid)
    finally:
        stop(process)


def _descendants(pid: int) -> set[int]:
    """``pid``'s children, grandchildren ... (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _live_members(pgids: set[int]) -> list[str]:
    """Processes (zombies aside) still in any of the process groups ``pgids``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            fields = text.rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) in pgids:
                members.append(text.split(")")[0] + ")")
    return members


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # only a listener makes bind fail
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_sigterm_stops_the_ui_and_its_workers(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen([*ROBDISTILL, "ui", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    groups = {process.pid}
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
        for pid in _descendants(process.pid):  # the server and its workers, in whatever groups
            try:
                groups.add(os.getpgid(pid))
            except ProcessLookupError:
                pass
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (_live_members(groups) or not _port_free(port)):
            time.sleep(0.2)
        assert not _live_members(groups), _live_members(groups)
        assert _port_free(port)
        assert status == 128 + signal.SIGTERM
    finally:
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if process.poll() is None:
            process.wait()


def test_experiments_are_tagged_as_model_training(workdir: Path) -> None:
    """MLflow 3's UI opens an experiment without a kind in its GenAI view; ours are model training."""
    from robdistill.tracking import store as tracking

    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(uri)
    tracking.configure(uri, "robdistill")
    with tracking.tracked_run("tiny"):
        tracking.log_metrics({"acc": 0.5})
    kind = lambda name: client.get_experiment_by_name(name).tags.get("mlflow.experimentKind")  # noqa: E731
    assert kind("robdistill") == "custom_model_development"
    client.create_experiment("older")  # made before robdistill tagged them: tagged when used
    tracking.configure(uri, "older")
    assert kind("older") == "custom_model_development"
    client.create_experiment("mine", tags={"mlflow.experimentKind": "genai_development"})
    tracking.configure(uri, "mine")
    assert kind("mine") == "genai_development"  # the user's choice is kept


def test_experiment_kind_is_the_one_the_installed_ui_knows() -> None:
    """The tag key and value appear in the installed MLflow UI bundle (guards an MLflow upgrade)."""
    from robdistill.tracking.store import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND

    bundles = list((Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js").glob("main.*.js"))
    if not bundles:
        pytest.skip("this MLflow has no built UI")
    text = bundles[0].read_text(errors="replace")
    assert f'"{EXPERIMENT_KIND_TAG}"' in text and f'CUSTOM_MODEL_DEVELOPMENT="{MODEL_TRAINING_KIND}"' in text


@pytest.mark.slow
def test_two_concurrent_runs_share_one_server(workdir: Path, mlflow_server: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([*ROBDISTILL, "run", "--teacher", teacher, "--perturb", "nonmax-shuffle",
                                   "--cache-dir", str(workdir / f"cache-{teacher}"), *TINY],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for teacher in ("standard", "at")]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("stage") == "run"]
    assert sorted(r.data.tags["teacher"] for r in parents) == ["at", "standard"]
    assert all(r.info.status == "FINISHED" for r in runs)
    # artifacts went through the server's artifact store
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"results.json", "results_table.json", "logit_statistics.png"} <= names
    out = invoke("compare", "--tracking-uri", mlflow_server)
    assert out.exit_code == 0 and out.stdout.count("FINISHED") == 2


# What a real `mlflow server` answered when two shards logged the same new dataset at once (4
# processes, 1 in 12 attempts): its SQL store looks the dataset up, then inserts it.
INSERT_CONFLICT = ("BAD_REQUEST: (sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                   "datasets.name, datasets.digest\n[SQL: INSERT INTO datasets (dataset_uuid, experiment_id, name, "
                   "digest, ...) VALUES (?, ?, ?, ?, ...)]")


@pytest.mark.parametrize("error, calls, logged", [(INSERT_CONFLICT, 2, True), ("BAD_REQUEST: something else", 1, False)])
def test_a_dataset_insert_lost_to_a_concurrent_writer_is_logged_again(tmp_path: Path, monkeypatch, error: str,
                                                                       calls: int, logged: bool) -> None:
    """The lost race of two writers inserting one dataset is retried (the dataset now exists and is
    reused); any other store error is raised at once."""
    from mlflow.exceptions import MlflowException

    from robdistill.tracking import store

    store.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", "race")
    real, seen = mlflow.log_input, []

    def lose_the_first_insert(*args, **kwargs):
        seen.append(args)
        if len(seen) == 1:
            raise MlflowException(error)
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", lose_the_first_insert)
    with mlflow.start_run() as run:
        if logged:
            store.log_dataset("digits", "d" * 64, {"train": 10}, "training")
        else:
            with pytest.raises(MlflowException, match="something else"):
                store.log_dataset("digits", "d" * 64, {"train": 10}, "training")
    assert len(seen) == calls
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.tags[0].value) for i in inputs] == ([("digits", "training")] if logged else [])


@pytest.mark.slow
def test_teachers_are_registered_and_reused_from_the_registry(workdir: Path) -> None:
    """A teacher trained with one cache is found by a run with an empty cache (another machine
    sharing the store) through the model registry, by its recipe hash."""
    first = invoke("train-teacher", "--teacher", "at", "--set", "epochs=1", "--quiet", "--cache-dir", "machine-a")
    assert first.exit_code == 0, first.output
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name = 'robdistill-teacher-digits-at'")
    assert len(versions) == 1 and versions[0].source.startswith("models:/")  # the teacher's logged model
    key = versions[0].tags["teacher_key"]
    second = invoke("train-teacher", "--teacher", "at", "--set", "epochs=1", "--quiet", "--cache-dir", "machine-b")
    assert second.exit_code == 0 and "(reused from the model registry)" in second.stdout
    runs = [r for r in mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
            if r.data.tags.get("stage") == "teacher"]
    assert sorted(r.data.tags.get("reused_from", "trained") for r in runs) == ["registry", "trained"]
    copied = list((workdir / "machine-b" / "teachers").glob("*.pt"))
    assert len(copied) == 1 and key in copied[0].name
    assert copied[0].read_bytes() == next((workdir / "machine-a" / "teachers").glob("*.pt")).read_bytes()
    # a different recipe is not confused with it
    third = invoke("train-teacher", "--teacher", "at", "--set", "epochs=2", "--quiet", "--cache-dir", "machine-b")
    assert third.exit_code == 0 and "(reused" not in third.stdout


def test_a_run_lands_in_its_experiment_when_another_process_created_it_first(workdir: Path, monkeypatch) -> None:
    """MLflow's set_experiment, losing the create race to another process, returns the experiment
    without making it active; configure must still make it active (else the runs go to "Default")."""
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    from robdistill.tracking import store as tracking

    uri = os.environ["MLFLOW_TRACKING_URI"]
    created = mlflow.MlflowClient(uri).create_experiment("raced")  # the other process, first
    real = TrackingServiceClient.get_experiment_by_name
    missed: list[str] = []

    def lookup(self, name):  # this process's first lookup ran before the other one's create
        if name == "raced" and not missed:
            missed.append(name)
            return None
        return real(self, name)

    monkeypatch.setattr(TrackingServiceClient, "get_experiment_by_name", lookup)
    mlflow.set_tracking_uri(uri)
    tracking.configure(uri, "raced")
    with mlflow.start_run() as run:
        pass
    assert run.info.experiment_id == created


def test_a_refused_logged_model_keeps_its_checkpoint_as_a_run_artifact(tmp_path: Path, monkeypatch) -> None:
    """A store that refuses logged models (an older server, a broken artifact store) loses no
    checkpoint: log_model warns, returns None and keeps the file as an artifact of the active run."""
    from mlflow.exceptions import MlflowException

    from robdistill.tracking import logged_models, schema, store

    def refuse(*args, **kwargs):
        raise MlflowException("logged models are not supported by this store")

    store.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", "refusing")
    monkeypatch.setattr(mlflow, "initialize_logged_model", refuse)
    checkpoint = tmp_path / "teacher.pt"
    checkpoint.write_bytes(b"weights")
    with mlflow.start_run() as run:
        model_id = logged_models.log_model("teacher at s0", schema.ROLE_TEACHER, run.info.run_id,
                                           checkpoint=checkpoint, params={}, tags={})
        metadata_only = logged_models.log_model("teacher x s0", schema.ROLE_TEACHER, run.info.run_id,
                                                checkpoint=None, params={}, tags={})
    assert model_id is None and metadata_only is None
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, schema.CHECKPOINT_ARTIFACT_DIR)]
    assert artifacts == [f"{schema.CHECKPOINT_ARTIFACT_DIR}/teacher.pt"]


def test_a_logged_model_is_an_output_of_its_run(tmp_path: Path) -> None:
    """The run page lists a run's outputs under "Logged models": the model must be one of them, not
    only name the run as its source (issue 34: the page said "Logged models -")."""
    from robdistill.tracking import logged_models, schema, store

    store.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", "outputs")
    checkpoint = tmp_path / "teacher.pt"
    checkpoint.write_bytes(b"weights")
    with mlflow.start_run() as run:
        model_id = logged_models.log_model("teacher at s0", schema.ROLE_TEACHER, run.info.run_id,
                                           checkpoint=checkpoint, params={}, tags={})
    outputs = mlflow.get_run(run.info.run_id).outputs
    assert model_id is not None and [m.model_id for m in outputs.model_outputs] == [model_id]


WRITER = """
import sys, time
from pathlib import Path
import mlflow
from robdistill.tracking import store
go, uri, k = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
store.configure(uri, "eight-writers")             # all create the same new experiment at once
with mlflow.start_run(run_name=f"writer {k}"):
    store.log_dataset("digits", "e" * 64, {"train": 10}, "training")  # and insert the same new dataset
    mlflow.log_metric("k", k)
"""


@pytest.mark.slow
def test_eight_concurrent_writers_on_one_server(workdir: Path, mlflow_server: str) -> None:
    """Issue 31, item 3: the races met with several writers on one store (experiment creation, the
    dataset insert) with 8 processes released at the same instant: every run lands FINISHED in the one
    experiment with its dataset."""
    import sys

    go = workdir / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(go), mlflow_server, str(k)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
               for k in range(8)]
    time.sleep(3)  # every writer imported and waiting
    go.touch()
    outputs = [w.communicate(timeout=300) for w in writers]
    assert [w.returncode for w in writers] == [0] * 8, [err[-1500:] for _, err in outputs if err]
    mlflow.set_tracking_uri(mlflow_server)
    experiments = [e for e in mlflow.search_experiments() if e.name == "eight-writers"]
    assert len(experiments) == 1
    runs = mlflow.search_runs(experiment_ids=[experiments[0].experiment_id], output_format="list")
    assert sorted(int(r.data.metrics["k"]) for r in runs) == list(range(8))
    assert all(r.info.status == "FINISHED" and [d.dataset.name for d in r.inputs.dataset_inputs] == ["digits"]
               for r in runs)
