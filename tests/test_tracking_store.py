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

from robdistill.cli import main
from robdistill.compare import filter_string, ui_command

TINY = ["--set", "teacher.epochs=1", "--set", "student.epochs=1", "--suite", "smoke", "--n-eval", "16", "--quiet"]
ROBDISTILL = [sys.executable, "-m", "robdistill.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    """The server and its workers: they share the session started for them."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_filter_string() -> None:
    assert filter_string("run", None, []) == "tags.stage = 'run'"
    assert filter_string(None, "abc", ["teacher=alp", " seed = 1"]) == (
        "tags.sweep_id = 'abc' and tags.teacher = 'alp' and tags.seed = '1'")


def test_ui_command() -> None:
    assert ui_command("http://127.0.0.1:5000", 5000) is None
    command = ui_command("sqlite:///mlflow.db", 5055)
    assert command[-7:] == ["ui", "--backend-store-uri", "sqlite:///mlflow.db", "--host", "127.0.0.1",
                            "--port", "5055"]


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
    assert "at -> default" in only_at and "standard -> default" not in only_at
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
    finally:
        stop(process)


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



@pytest.mark.slow
def test_teachers_are_registered_and_reused_from_the_registry(workdir: Path) -> None:
    """A teacher trained with one cache is found by a run with an empty cache (another machine
    sharing the store) through the model registry, by its recipe hash."""
    first = invoke("train-teacher", "--teacher", "at", "--set", "epochs=1", "--quiet", "--cache-dir", "machine-a")
    assert first.exit_code == 0, first.output
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name = 'robdistill-teacher-digits-at'")
    assert len(versions) == 1
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
