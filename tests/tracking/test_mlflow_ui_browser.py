"""The MLflow UI as people see it, in a real browser: a tiny `run` logged to a real `mlflow server`
on loopback, and the runs view whose address `run` prints rendered by headless Chromium (Debian's
`chromium`; `.ci/run` installs it). The rendered grid is read back from the DOM: MLflow's runs
table is an ag-grid whose rows carry the run id (``row-id``) and whose cells carry the column's key
(``col-id``, e.g. ``metrics.`student/acc/worst```)."""
from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner
from server_helpers import running_server

from robdistill.cli.main import main
from robdistill.tracking import views

TINY = ["--set", "teacher.epochs=1", "--set", "student.epochs=1", "--suite", "smoke", "--n-eval", "16", "--quiet"]
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class GridCells(HTMLParser):
    """``cells[run_id][column key]`` = the text of each rendered cell of the runs grid."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, dict[str, str]] = defaultdict(dict)
        self.stack: list[tuple[str | None, str | None]] = []  # (row id, column key) open at each depth

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        row, col = self.stack[-1] if self.stack else (None, None)
        if found.get("role") == "row" and found.get("row-id"):
            row = found["row-id"]
        if found.get("role") == "gridcell" and found.get("col-id"):
            col = found["col-id"]
        if tag not in VOID_TAGS:
            self.stack.append((row, col))

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID_TAGS and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1][0] and self.stack[-1][1]:
            row, col = self.stack[-1]
            self.cells[row][col] = (self.cells[row].get(col, "") + data).strip()


def rendered_dom(url: str, profile: Path, size: str = "3000,900") -> str:
    """The page at ``url`` after its scripts ran (virtual time), as headless Chromium serializes it."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: apt-get install chromium (Debian), then rerun", pytrace=False)
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", f"--window-size={size}", "--virtual-time-budget=30000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def test_the_view_uses_keys_the_installed_ui_reads() -> None:
    """The shared-view tag prefix, URL parameter and state keys appear in the installed MLflow UI
    bundle (guards an MLflow upgrade that renames them)."""
    build = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    if not build.is_dir():
        pytest.skip("this MLflow has no built UI")
    text = "".join(path.read_text(errors="replace") for path in build.glob("*.js"))
    assert f'"{views.SHARED_VIEW_TAG_PREFIX}"' in text and '"viewStateShareKey"' in text
    for key in views.runs_view_state():
        assert f'"{key}"' in text or f"{key}:" in text, key
    assert 'e+".`"+t+"`"' in text  # a column's key: kind.`name`
    assert '"SHOW_ALL"' in text  # runsHiddenMode's value


@pytest.mark.slow
def test_the_runs_view_run_prints_shows_the_run_with_its_accuracies_and_models(workdir: Path) -> None:
    with running_server(workdir / "server", workers=1) as address:
        result = CliRunner().invoke(main, ["run", "--teacher", "at", "--perturb", "keep", "--tracking-uri", address,
                                           *TINY])
        assert result.exit_code == 0, result.output
        url = next(line for line in result.stdout.splitlines() if line.startswith("open the runs view:")).split()[-1]
        assert url.startswith(address) and "viewStateShareKey=robdistill" in url
        mlflow.set_tracking_uri(address)
        parent = mlflow.search_runs(experiment_names=["robdistill"], filter_string="tags.stage = 'run'",
                                    output_format="list")[0]
        versions = mlflow.MlflowClient().search_model_versions("name = 'robdistill-teacher-digits-at'")
        teacher = [m for m in mlflow.search_logged_models(experiment_ids=[parent.info.experiment_id],
                                                          output_format="list") if m.tags["role"] == "teacher"]
        assert [v.source for v in versions] == [f"models:/{teacher[0].model_id}"]  # registered through a server too
        grid = GridCells()
        grid.feed(rendered_dom(url, workdir / "profile"))
        narrow = GridCells()  # a 1600 px window, MLflow's assistant panel open: the columns the grid renders
        narrow.feed(rendered_dom(url, workdir / "profile-1600", size="1600,1000"))
    print(f"rendered runs view: {json.dumps(grid.cells, indent=1)}")
    # only the `run` row: its children (teacher, student, evaluations) are filtered out by the view
    assert list(grid.cells) == [parent.info.run_id], grid.cells
    row = grid.cells[parent.info.run_id]
    assert "at · keep · s0 · suite smoke" in row["attributes.`Run Name`"]  # after the run colour's swatch
    assert (row["tags.`teacher`"], row["tags.`perturb`"], row["tags.`seed`"]) == ("at", "keep", "0")
    for metric in ("student/acc/worst", "student/acc/clean", "teacher/acc/worst"):
        assert float(row[f"metrics.`{metric}`"]) == pytest.approx(parent.data.metrics[metric]), metric
    # the Models column links both logged models: the teacher by its registered name and version, "+1" the student
    models = row["attributes.`Models`"]
    assert models.startswith("robdistill-teacher-digits-at") and models.endswith("+1"), models
    assert "digits" in row["attributes.`Dataset`"]
    # the answer first: the student's worst-case, PGD and clean accuracies are in view at 1600 px
    in_view = narrow.cells[parent.info.run_id]
    for metric in ("student/acc/worst", "student/acc/pgd", "student/acc/clean"):
        assert f"metrics.`{metric}`" in in_view, sorted(in_view)


def page_text(dom: str) -> str:
    """The visible text of a rendered page (scripts and styles left out), whitespace collapsed."""

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag, attrs):
            self.skip += tag in ("script", "style")

        def handle_endtag(self, tag):
            self.skip -= tag in ("script", "style") and self.skip > 0

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(dom)
    return " ".join(" ".join(parser.parts).split())


@pytest.mark.slow
def test_the_run_page_lists_its_logged_models(workdir: Path) -> None:
    """A `run`'s own page (what `distill` and `evaluate` print for theirs) shows the teacher and the
    student it logged as its models, by name, in a 1600x1000 browser; it and the experiment's
    address open MLflow's model-training pages, which the experiment list's plain address does not
    (MLflow 3.17 ignores the experiment's kind: the README says so)."""
    with running_server(workdir / "server", workers=1) as address:
        result = CliRunner().invoke(main, ["run", "--teacher", "at", "--perturb", "keep", "--tracking-uri", address,
                                           *TINY])
        assert result.exit_code == 0, result.output
        mlflow.set_tracking_uri(address)
        parent = mlflow.search_runs(experiment_names=["robdistill"], filter_string="tags.stage = 'run'",
                                    output_format="list")[0]
        logged = mlflow.search_logged_models(experiment_ids=[parent.info.experiment_id], output_format="list")
        names = sorted(m.name for m in logged if m.source_run_id == parent.info.run_id)
        assert len(names) == 2, names  # the teacher and the student, both outputs of the `run`
        experiment = parent.info.experiment_id
        text = page_text(rendered_dom(views.run_url(address, experiment, parent.info.run_id), workdir / "p1",
                                      size="1600,1000"))
        landing = page_text(rendered_dom(views.experiment_url(address, experiment), workdir / "p2", size="1600,1000"))
        plain = page_text(rendered_dom(f"{address}/#/experiments/{experiment}", workdir / "p3", size="1600,1000"))
    for name in names:
        assert name in text, f"logged model {name} not on the run page: {text[:3000]}"
    assert "Logged models (2)" in text and "Logged models -" not in text
    # the model-training sidebar (Runs, Models, Model registry), not the GenAI one (Overview, Observability, ...)
    for shown in (text, landing):
        assert "Model registry" in shown and "Observability" not in shown, shown[:2000]
    assert "Observability" in plain, plain[:2000]
