"""The CLI in-process and what a bad-input test asserts about it: exit status 2 with one line
``error: ...`` naming the fix, no traceback, and nothing half-written."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from robdistill.cli.main import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_ok(result) -> None:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)


def assert_one_line_error(result, *fragments: str) -> str:
    """The one error line (returned), after checking it has every fragment."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_nothing_written(workdir: Path) -> None:
    assert not (workdir / "mlflow.db").exists()
    assert not (workdir / "cache").exists()
    assert not (workdir / "mlruns").exists()
