"""Sweeps on a local pool of processes (issue 31): the pool's shape, its refusals, and the same
numbers as a serial sweep at the same thread count, every cell finished exactly once."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from robdistill.cli.main import main
from robdistill.core.errors import UserError
from robdistill.experiments.executors import LocalPool

GRID = ["sweep", "--teachers", "standard,at", "--perturbs", "keep,nonmax-shuffle", "--seeds", "0",
        "--set", "teacher.epochs=1", "--set", "student.epochs=1", "--suite", "smoke", "--n-eval", "24", "--quiet"]


def test_pool_shape_follows_the_cores() -> None:
    assert LocalPool.for_machine(2, cores=2) == LocalPool(2, 1)
    assert LocalPool.for_machine(None, cores=4) == LocalPool(4, 1)
    assert LocalPool.for_machine(2, cores=8) == LocalPool(2, 4)
    assert LocalPool.for_machine(3, cores=2) == LocalPool(3, 1)
    with pytest.raises(UserError, match="--workers must be >= 1"):
        LocalPool.for_machine(0, cores=2)


@pytest.mark.parametrize("args, message", [
    (["--executor", "local", "--shard", "1/2"], "drop --shard"),
    (["--workers", "2"], "add --executor local"),
    (["--executor", "local", "--workers", "0"], "--workers must be >= 1"),
])
def test_pool_refusals_are_one_line(workdir: Path, args: list[str], message: str) -> None:
    out = CliRunner().invoke(main, [*GRID, *args])
    assert out.exit_code == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.output


def _summary(stdout: str) -> list[list[str]]:
    table = stdout.split("sweep summary")[1].split("each perturbation against keep")[0]
    return [line.split() for line in table.splitlines() if line.startswith(("standard", "at "))]


@pytest.mark.slow
def test_a_local_pool_gives_the_serial_numbers_each_cell_once(workdir: Path, tmp_path_factory) -> None:
    threads = LocalPool.for_machine(2).threads
    pooled = CliRunner().invoke(main, [*GRID, "--executor", "local", "--workers", "2"])
    assert pooled.exit_code == 0, (pooled.output, pooled.exception)
    assert "2 worker processes" in pooled.stderr and "[group 2/2] seed 0, teacher at:" in pooled.stderr
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
    cells = [(r.data.tags["teacher"], r.data.tags["perturb"]) for r in runs if r.data.tags.get("stage") == "run"]
    assert sorted(cells) == [("at", "keep"), ("at", "nonmax-shuffle"), ("standard", "keep"),
                             ("standard", "nonmax-shuffle")]  # each once
    assert all(r.info.status == "FINISHED" for r in runs)
    # the same grid serially, in another store and cache, at the workers' thread count
    other = tmp_path_factory.mktemp("serial")
    serial = CliRunner().invoke(main, [*GRID, "--threads", str(threads), "--tracking-uri",
                                       f"sqlite:///{other / 'mlflow.db'}", "--cache-dir", str(other / "cache")])
    assert serial.exit_code == 0, (serial.output, serial.exception)
    assert _summary(pooled.stdout) == _summary(serial.stdout) and len(_summary(serial.stdout)) == 6
    # run again: every cell is read back, none runs
    again = CliRunner().invoke(main, [*GRID, "--executor", "local", "--workers", "2"])
    assert again.exit_code == 0, (again.output, again.exception)
    runs = mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
    assert len([r for r in runs if r.data.tags.get("stage") == "run"]) == 4
    assert _summary(again.stdout) == _summary(pooled.stdout)


def test_a_teacher_in_training_elsewhere_is_waited_for(digits_teacher, workdir: Path) -> None:
    """Another process holds the teacher's lock (it is training it): obtain_teacher waits for it."""
    import subprocess
    import sys
    import time

    from robdistill.config.recipes import parse_recipe
    from robdistill.experiments.stages import obtain_teacher, teacher_cache_path

    splits, settings, _ = digits_teacher
    recipe = parse_recipe("teacher", "standard", ["epochs=1"])
    lock = f"{teacher_cache_path(recipe, splits.info, settings)}.lock"
    holder = subprocess.Popen([sys.executable, "-c", f"import time; from filelock import FileLock\n"
                               f"with FileLock({lock!r}):\n    print('held', flush=True); time.sleep(3)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.perf_counter()
    handle = obtain_teacher(recipe, splits, settings)
    assert time.perf_counter() - started > 1.5 and handle.reused  # waited, then reused the cached one
    holder.wait(timeout=30)
