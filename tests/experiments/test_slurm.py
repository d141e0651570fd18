"""Sweeps on a real one-node Slurm through submitit (issue 31): every cell finished exactly once
in the store, the report's tables, and a task cancelled mid-cell and resubmitted ending with the
numbers of an uninterrupted run."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner
from slurm_cluster import one_node_slurm

from robdistill.cli.main import main

pytestmark = pytest.mark.slow

GRID = ["sweep", "--teachers", "standard,at", "--perturbs", "keep,nonmax-shuffle", "--seeds", "0,1",
        "--set", "teacher.epochs=1", "--set", "student.epochs=1", "--suite", "smoke", "--n-eval", "24", "--quiet",
        "--executor", "slurm", "--slurm-time", "10", "--slurm-mem", "900M"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with one_node_slurm(tmp_path_factory.mktemp("slurm")) as env:
        yield env


def _cell_runs(uri: str) -> list:
    mlflow.set_tracking_uri(uri)
    return [r for r in mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
            if r.data.tags.get("stage") == "run"]


def _summary(stdout: str) -> list[list[str]]:
    table = stdout.split("sweep summary")[1].split("each perturbation against keep")[0]
    return [line.split() for line in table.splitlines() if line.startswith(("standard", "at "))]


def test_a_slurm_sweep_finishes_every_cell_once(slurm, workdir: Path, monkeypatch) -> None:
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    out = CliRunner().invoke(main, GRID)
    assert out.exit_code == 0, (out.output, out.exception)
    assert "Slurm job array" in out.stderr and "squeue -j" in out.stderr and "[group 4/4]" in out.stderr
    runs = _cell_runs(f"sqlite:///{workdir / 'mlflow.db'}")
    cells = sorted((r.data.tags["teacher"], r.data.tags["perturb"], r.data.tags["seed"]) for r in runs)
    assert cells == sorted((t, p, s) for t in ("standard", "at") for p in ("keep", "nonmax-shuffle") for s in "01")
    assert all(r.info.status == "FINISHED" for r in runs)
    name = out.stdout.split("sweep name ")[1].split()[0]
    report = CliRunner().invoke(main, ["sweep-report", name])
    assert report.exit_code == 0 and _summary(report.stdout) == _summary(out.stdout) and len(_summary(out.stdout)) == 6


def test_a_task_cancelled_mid_cell_and_resubmitted_ends_as_an_uninterrupted_run(slurm, workdir: Path, monkeypatch,
                                                                                 tmp_path_factory) -> None:
    from robdistill.experiments.executors import shared_store

    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    with shared_store(f"sqlite:///{workdir / 'server.db'}", workdir / "logs") as uri:  # a real mlflow server
        grid = [*GRID, "--set", "teacher.epochs=6", "--tracking-uri", uri]  # teachers long enough to cancel one
        submitted = CliRunner().invoke(main, [*grid, "--no-wait"])
        assert submitted.exit_code == 0, (submitted.output, submitted.exception)
        job = submitted.stderr.split("Slurm job array ")[1].split(",")[0]
        deadline = time.monotonic() + 300
        def training() -> list:  # seed 1's teachers in training: the first cell of their group
            mlflow.set_tracking_uri(uri)
            return [r for r in mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
                    if r.data.tags.get("stage") == "teacher" and r.data.tags.get("seed") == "1"
                    and r.info.status == "RUNNING"]

        while not training():
            assert time.monotonic() < deadline, "no teacher of seed 1 started training"
            time.sleep(0.3)
        group = {"standard": 2, "at": 3}[training()[0].data.tags["teacher"]]  # (0, standard) (0, at) (1, standard) ...
        subprocess.run(["scancel", f"{job}_{group}"], check=True, env={**slurm, "PATH": "/usr/bin:/bin"})
        while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True,
                             env={**slurm, "PATH": "/usr/bin:/bin"}).stdout.strip():
            assert time.monotonic() < deadline, "the array did not end"
            time.sleep(0.5)
        finished = [r for r in _cell_runs(uri) if r.info.status == "FINISHED"]
        assert len(finished) < 8, "the cancelled task finished its cells anyway"
        again = CliRunner().invoke(main, grid)  # the same command again, waiting this time
        assert again.exit_code == 0, (again.output, again.exception)
    # the numbers of an uninterrupted run: the same grid serially at the tasks' one thread, elsewhere
    other = tmp_path_factory.mktemp("serial")
    serial = CliRunner().invoke(main, [*GRID[:GRID.index("--executor")], "--set", "teacher.epochs=6", "--threads", "1",
                                       "--tracking-uri",
                                       f"sqlite:///{other / 'mlflow.db'}", "--cache-dir", str(other / "cache")])
    assert serial.exit_code == 0, (serial.output, serial.exception)
    assert _summary(again.stdout) == _summary(serial.stdout)
