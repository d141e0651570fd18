"""The package as a new user installs it: a wheel built from the sources, installed (not editable)
into a fresh environment, run from a folder with no recipes in it. The bundled recipes and suites
(and RobustBench's model info) must come from inside the installed package.

The fresh environment is a venv of this interpreter whose only link to the project's environment is
a ``.pth`` line naming its site-packages (for the dependencies: nothing is downloaded). The
checkout is on no path there: ``.pth`` files of a directory added that way are not processed, so
the project's editable install stays out."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_RUN = ["--set", "teacher.epochs=1", "--set", "student.epochs=1", "--set", "teacher.train_subset=64",
            "--set", "student.train_subset=64", "--suite", "smoke", "--n-eval", "16", "--quiet"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("setuptools") is None,
                                 reason="building the wheel offline needs setuptools in this environment "
                                        "(pip install setuptools)")]


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (args, result.returncode, result.stdout[-3000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the fresh venv, an environment for its commands) with the wheel installed."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"  # a copy: building never writes build/ or egg-info into the checkout
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "robdistill", source / "robdistill",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("ROBDISTILL_RECIPES", "ROBDISTILL_CACHE", "MLFLOW_TRACKING_URI", "PYTHONPATH",
                        "MLFLOW_EXPERIMENT_ID")}
    env["PIP_NO_INDEX"] = "1"  # nothing downloads: the build uses this environment's setuptools
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w",
          str(base / "dist")], base, env)
    wheel = next((base / "dist").glob("robdistill-*.whl"))
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base, env)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base,
                   env).stdout.strip()
    Path(purelib, "_robdistill_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--force-reinstall", str(wheel)], base, env)
    return venv, env


def test_wheel_carries_its_data_and_runs_from_anywhere(installed: tuple[Path, dict[str, str]],
                                                       tmp_path: Path) -> None:
    venv, env = installed
    where = tmp_path / "elsewhere"  # no teachers/, students/ or benchmarks/ here
    where.mkdir()
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "robdistill")
    found = _run([python, "-c", "import robdistill, robdistill.config.recipes as r; "
                                "print(robdistill.__file__); print(r.available('teacher')['alp'])"], where, env)
    module, alp = found.stdout.split()
    assert module.startswith(str(venv)) and alp.startswith(str(venv)), found.stdout
    assert str(REPO) not in found.stdout
    info = _run([python, "-c", "from robdistill.sources.robustbench import expected_clean; "
                               "print(expected_clean('cifar10', 'Linf', 'Wong2020Fast'))"], where, env)
    assert info.stdout.strip() == "0.8334"
    listed = _run([cli, "list"], where, env).stdout
    for name in ("alp", "standard", "default", "smoke", "fast", "paper"):
        assert f"  {name} " in listed, name
    result = _run([cli, "run", "--teacher", "alp", *TINY_RUN], where, env)
    assert "teacher checkpoint:" in result.stdout and "MLflow run:" in result.stdout
    assert (where / "mlflow.db").exists() and list((where / ".robdistill" / "students").glob("*.pt"))
