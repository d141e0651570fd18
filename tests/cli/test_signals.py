"""SIGTERM (``kill``, a scheduler's preemption, torchrun's agent) is taken like Ctrl-C: the MLflow
runs end KILLED (never left RUNNING), the training state stays for ``--resume``, exit status 143."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from robdistill.cli.main import main


def test_sigterm_in_process_is_an_interrupt_with_exit_143(workdir: Path, monkeypatch) -> None:
    """The handler FriendlyGroup installs: SIGTERM raises an interrupt, the message names SIGTERM and
    --resume, and the previous handler is back afterwards."""
    import robdistill.experiments.pipeline as pipeline

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2)  # the handler raises before this ends
        raise AssertionError("SIGTERM was not turned into an interrupt")

    monkeypatch.setattr(pipeline, "run_experiment", terminated)
    caught: list[int] = []
    outer = lambda signum, frame: caught.append(signum)  # noqa: E731 - never the test runner's death
    previous = signal.signal(signal.SIGTERM, outer)
    try:
        result = CliRunner().invoke(main, ["run", "--teacher", "standard", "--quiet"])
        assert signal.getsignal(signal.SIGTERM) is outer
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not caught, "SIGTERM reached the handler outside the command"
    assert result.exit_code == 143, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "KILLED" in lines[0] and "--resume" in lines[0], lines


def _running_runs(db: Path) -> int:
    """RUNNING runs in a SQLite store, read without MLflow (no schema migration racing the writer)."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:  # no tables yet, or locked by the writer: look again
        return 0


@pytest.mark.slow
def test_sigterm_marks_the_runs_killed_and_hints_resume(workdir: Path) -> None:
    db, cache = workdir / "mlflow.db", workdir / "cache"
    command = [sys.executable, "-m", "robdistill.cli", "run", "--teacher", "standard", "--set", "teacher.epochs=50",
               "--tracking-uri", f"sqlite:///{db}", "--cache-dir", str(cache), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:  # training, with an epoch's state saved
            if _running_runs(db) and list((cache / "state").glob("*.state.pt")):
                break
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before it could be terminated"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    runs = mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
    statuses = sorted((r.data.tags.get("stage"), r.info.status) for r in runs)
    assert not [s for s in statuses if s[1] == "RUNNING"], statuses
    assert ("run", "KILLED") in statuses and ("teacher", "KILLED") in statuses, statuses
    assert process.returncode == 143, (process.returncode, stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert "SIGTERM" in lines[-1] and "--resume" in lines[-1], stderr[-2000:]
    assert "Traceback" not in stderr
    assert list((cache / "state").glob("*.state.pt"))  # what --resume continues from
