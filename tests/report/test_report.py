"""`robdistill report`: one self-contained HTML page and a Markdown file (figures beside it) with
the same tables as `sweep-report`, the claims, eps curves, figures, the consistency table, every
evaluation's sanity checks and the commands and versions; bad input is one line, exit 2."""
from __future__ import annotations

import base64
import html
import re
import shutil
import struct
import subprocess
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from robdistill.cli.main import main

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "teacher.epochs=1", "--set", "student.epochs=1", "--suite", "smoke", "--n-eval", "24", "--quiet"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, from its IHDR chunk; an AssertionError for anything else."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


def invoke(args: list[str]):
    return CliRunner().invoke(main, args)


def table_lines(text: str, heading: str) -> list[list[str]]:
    """The rows (cells split on 2+ spaces) of a table `sweep-report` printed under ``heading``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 3:]:  # heading, header, dashes
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    """A tiny real sweep (digits, 1 epoch, smoke suite, 24 images; standard and at x keep and
    nonmax-flatten x seeds 0, 1), an eps sweep of one of its students and one of its teachers, the
    `sweep-report` output and `report --out r.html --out r.md`, in a private store."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("ROBDISTILL_CACHE", str(root / "cache"))
        patch.setenv("ROBDISTILL_RECIPES", str(REPO))
        patch.setenv("MLFLOW_EXPERIMENT_ID", "")
        patch.delenv("MLFLOW_EXPERIMENT_ID")
        swept = invoke(["sweep", "--teachers", "standard,at", "--perturbs", "keep,nonmax-flatten", "--seeds", "0,1",
                        *TINY])
        assert swept.exit_code == 0, (swept.output, swept.exception)
        name = re.search(r"sweep name (sweep-[0-9a-f]+)", swept.stdout).group(1)
        student = next((root / "cache" / "students").glob("digits-at-keep-default-s0-*.pt"))
        teacher = next((root / "cache" / "teachers").glob("digits-standard-s1-*.pt"))
        eps = invoke(["evaluate", str(student), str(teacher), "--eps-sweep", "0,0.1", "--suite", "smoke",
                      "--n-eval", "24", "--quiet"])
        assert eps.exit_code == 0, (eps.output, eps.exception)
        eps_l2 = invoke(["evaluate", str(student), "--eps-sweep", "0,0.5", "--threat-model", "l2", "--suite", "smoke",
                         "--n-eval", "24", "--quiet"])
        assert eps_l2.exit_code == 0, (eps_l2.output, eps_l2.exception)
        printed = invoke(["sweep-report", name])
        assert printed.exit_code == 0, (printed.output, printed.exception)
        reported = invoke(["report", name, "--out", "r.html", "--out", "r.md"])
        assert reported.exit_code == 0, (reported.output, reported.exception)
        assert reported.stdout.split() == ["wrote", "r.html", "wrote", "r.md"]
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        runs = mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
        yield {"root": root, "name": name, "printed": printed.stdout, "runs": runs,
               "html": (root / "r.html").read_text(), "md": (root / "r.md").read_text()}


def printed_tables(printed: str) -> list[list[list[str]]]:
    headings = ["sweep summary", "each perturbation against keep", "teacher logits on the evaluated",
                "sample-wise confidence agreement"]
    return [table_lines(printed, heading) for heading in headings]


@pytest.mark.slow
def test_html_is_self_contained_and_every_image_is_an_embedded_png(study) -> None:
    page = study["html"]
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert references, "no src/href at all?"
    for ref in references:
        assert ref.startswith(("#", "data:")), ref  # nothing from a network or another file
    assert not re.search(r"<script|<link[^>]+stylesheet|@import|url\(", page, re.I)
    images = re.findall(r"<img\b[^>]*>", page)
    assert len(images) == 8  # eps curves (L-inf and L2), logit statistics, a confidence grid, 4 confidence scatters
    for tag in images:
        src = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert src, tag[:120]
        width, height = png_size(base64.b64decode(src.group(1), validate=True))
        assert width > 100 and height > 100


@pytest.mark.slow
def test_html_holds_the_tables_sweep_report_prints_and_the_claims(study) -> None:
    page = study["html"]
    cells = {html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", page)}
    for table in printed_tables(study["printed"]):
        assert table
        for row in table:
            for cell in row:
                assert cell in cells, cell
    for section in ("overview", "summary", "claims", "eps", "figures", "consistency", "checks", "provenance"):
        assert f'<section id="{section}">' in page and f'href="#{section}"' in page  # and in the contents
    claims = page.split('<section id="claims">')[1].split("</section>")[0]
    assert "verdicts at a glance" in claims
    verdicts = re.findall(r'<td>(\d)</td><td>at</td>.*?class="badge badge-([\w-]+)"', claims)
    assert {claim for claim, _ in verdicts} == {"1", "2", "3"}  # one verdict row per claim for the AT teacher
    assert all(word in ("reproduced", "not-reproduced", "inconclusive") for _, word in verdicts)
    assert "families of comparisons" in claims and "Holm p" in claims
    # eps curves: the student and the teacher swept by `evaluate --eps-sweep`, matched to their cells
    eps = page.split('<section id="eps">')[1].split("</section>")[0]
    assert "<img" in eps and "<td>at / keep / seed 0</td>" in eps and "<td>standard / (teacher) / seed 1</td>" in eps
    # a model swept under L2 too: a curve and a figure per threat model
    assert "Accuracy versus eps (L-inf)" in eps and "Accuracy versus eps (L2)" in eps
    assert "<td>at / keep / seed 0 (L2)</td><td>l2</td><td>0.5</td>" in eps
    consistency = page.split('<section id="consistency">')[1].split("</section>")[0]
    assert consistency.count("<td>consistent</td>") == 6  # teacher and perturbation rows, seeds averaged


@pytest.mark.slow
def test_html_gives_every_evaluations_checks_and_the_commands_and_versions(study) -> None:
    page = study["html"]
    evaluations = [r for r in study["runs"] if r.data.tags.get("stage") == "evaluation"
                   and r.data.tags.get("sweep_name") == study["name"]]
    assert len(evaluations) == 12  # 4 teachers, 8 students
    checks = page.split('<section id="checks">')[1].split("</section>")[0]
    for run in evaluations:
        status = "passed" if run.data.tags["sanity_checks"] == "passed" else "FAILED"
        row = re.search(rf"<tr><td>[^<]*</td><td><span class=\"badge badge-(\w+)\">\w+</span></td>.*?"
                        rf"<td>{run.info.run_id}</td></tr>", checks)
        assert row and row.group(1) == status.lower(), run.info.run_id
    assert checks.count("<details>") == 12
    provenance = page.split('<section id="provenance">')[1].split("</section>")[0]
    sweep_run = next(r for r in study["runs"] if r.data.tags.get("stage") == "sweep")
    assert sweep_run.info.run_id in provenance and sweep_run.data.tags["git_commit"] in provenance
    overview = page.split('<section id="overview">')[1].split("</section>")[0]
    assert f"<td>FINISHED</td><td>{sweep_run.info.run_id}</td>" in overview  # each sweep run's status
    assert html.escape(sweep_run.data.tags["command"]) in provenance  # the process's command line
    assert sweep_run.data.tags["versions"].startswith("robdistill ") and "torch " in sweep_run.data.tags["versions"]
    assert html.escape(sweep_run.data.tags["versions"]) in provenance
    assert ("equivalent: robdistill sweep --dataset digits --teachers standard,at --perturbs keep,nonmax-flatten "
            "--seeds 0,1 --student default --suite smoke --n-eval 24 --set teacher.epochs=1 --set student.epochs=1"
            ) in provenance
    assert f"robdistill report {study['name']} --tracking-uri sqlite:///" in provenance


@pytest.mark.slow
def test_markdown_has_the_same_tables_and_its_figures_exist(study) -> None:
    md, page = study["md"], study["html"]
    for table in printed_tables(study["printed"]):
        for row in table:
            assert "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" in md, row
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(re.findall(r"<img\b", page))  # the same figures
    for link in links:
        assert link.startswith("r_figures/"), link
        png_size((study["root"] / link).read_bytes())
    for section in ("overview", "summary", "claims", "eps", "figures", "consistency", "checks", "provenance"):
        assert f'<a id="{section}"></a>' in md and f"(#{section})" in md
    assert md.count("| **passed** |") + md.count("| **FAILED** |") == 12
    assert "verdicts at a glance" in md and "equivalent: robdistill sweep --dataset digits" in md


def _sweep_store(workdir: Path) -> None:
    """A store whose one sweep run exists only as tags: enough for the errors that list sweeps."""
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_experiment("robdistill")
    with mlflow.start_run(tags={"stage": "sweep", "sweep_name": "sweep-0123456789ab", "dataset": "digits",
                                "teachers": "standard,at", "perturbs": "keep", "seeds": "0,1"}):
        pass


@pytest.mark.parametrize("args, message", [
    (["sweep-nope", "--out", "r.html"], r"no sweep named sweep-nope .* sweeps there, newest first: "
                                        r"sweep-0123456789ab \(digits: standard,at x keep, seeds 0,1\)"),
    (["--out", "r.html"], r"name at least one sweep: .*sweep-0123456789ab"),
])
def test_an_unknown_sweep_lists_those_there_are(workdir: Path, args: list[str], message: str) -> None:
    _sweep_store(workdir)
    out = invoke(["report", *args])
    assert out.exit_code == 2, out.output
    assert re.search(message, out.stderr) and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (workdir / "r.html").exists()


@pytest.mark.parametrize("args, message", [
    (["sweep-0123456789ab", "--out", "report.txt"], "cannot write 'report.txt': use a .html or .md file name"),
    (["sweep-0123456789ab", "--out", "r.html", "--out", "report.pdf"], "use a .html or .md file name"),
    (["sweep-0123456789ab", "--out", "missing/r.md"], "the folder missing does not exist"),
    (["sweep-0123456789ab"], "give an output: --out report.html"),
])
def test_bad_outputs_are_one_line_before_the_store_is_read(workdir: Path, args: list[str], message: str) -> None:
    out = invoke(["report", *args])
    assert out.exit_code == 2, out.output
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert list(workdir.iterdir()) == []  # no store opened, nothing written


def test_a_missing_store_is_one_line(workdir: Path) -> None:
    out = invoke(["report", "sweep-0123456789ab", "--out", "r.html", "--tracking-uri",
                  f"sqlite:///{workdir / 'nothing.db'}"])
    assert out.exit_code == 2 and "no tracking store at" in out.stderr, out.output
    assert len(out.stderr.strip().splitlines()) == 1


def test_the_equivalent_sweep_command_is_rebuilt_from_the_parameters() -> None:
    from robdistill.report import sweep_command

    params = {"dataset": "digits", "teachers": "at,alp", "perturbs": "keep", "seeds": "0,1", "student": "default",
              "suite": "fast", "eps": "null", "n_eval": "100", "overrides": '["student.temperature=2"]'}
    assert sweep_command(params, "2/3", True) == (
        "robdistill sweep --dataset digits --teachers at,alp --perturbs keep --seeds 0,1 --student default --suite "
        "fast --n-eval 100 --set student.temperature=2 --skip-teacher-eval --shard 2/3")


def test_both_renderers_show_the_same_content() -> None:
    """A report built by hand: the HTML and the Markdown carry the same cells, badges and figures."""
    from robdistill.report import Check, Checks, Code, EvaluationChecks, Figure, Paragraph, Report, Section, Table
    from robdistill.report import render_html, render_markdown

    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(buffer, format="png")
    plt.close(fig)
    checks = Checks([EvaluationChecks("at / keep / seed 0", "run1", [Check("pgd: x_adv in [0, 1]", True, "ok")]),
                     EvaluationChecks("at / (teacher) / seed 0", "run2",
                                      [Check("pgd not above fgsm", False, "9 vs 3 robust")], ["pgd: masking?"])])
    report = Report("T <&>", "sub `x`", [
        Section("one", "One", [Paragraph("a `b|c` d"), Table("t", ["a", "b|c"], [["1 [0, 2]", "not reproduced"]],
                                                             "cap", badge_column=1)]),
        Section("two", "Two", [Figure("f.png", "F", "fig cap", buffer.getvalue()), Code("robdistill sweep"), checks]),
    ])
    page, md = render_html(report), render_markdown(report, "r_figures")
    assert "T &lt;&amp;&gt;" in page and "<code>b|c</code>" in page
    assert ('<span class="badge badge-not-reproduced">not reproduced</span>' in page
            and "| 1 [0, 2] | **not reproduced** |" in md)
    assert "| a | b\\|c |" in md and "![F](r_figures/f.png)" in md
    # the status table's row, the evaluation's summary line and the failed check itself
    assert page.count('<span class="badge badge-failed">FAILED</span>') == 3
    assert "| at / (teacher) / seed 0 | **FAILED** | 0 / 1 | pgd not above fgsm (9 vs 3 robust) | run2 |" in md
    assert "pgd: masking?" in page and "pgd: masking?" in md


CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.tagName))), true);
const original = console.error;
console.error = (...args) => { window.__errors.push(args.join(' ')); original(...args); };
window.addEventListener('load', () => {
  const images = [...document.images];
  const loaded = images.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().height > 0);
  const tables = [...document.querySelectorAll('table')];
  const shown = tables.filter(t => t.getBoundingClientRect().height > 0);
  const out = document.createElement('pre');
  out.id = 'browser-check';
  out.textContent = JSON.stringify({images: images.length, loaded: loaded.length, tables: tables.length,
                                    shown: shown.length, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.slow
def test_report_renders_in_headless_chromium(study, tmp_path: Path) -> None:
    """report.html in a real browser: every image decodes and has a size, every table is laid out,
    and nothing is logged to the console (the check script goes into a copy, not the report)."""
    import json

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: apt-get install chromium (Debian), then rerun", pytrace=False)
    page = study["html"].replace("<body>", "<body>" + CHECK_SCRIPT, 1)
    copy = tmp_path / "checked.html"
    copy.write_text(page)
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", copy.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', proc.stdout)
    assert found, (proc.returncode, proc.stderr[-2000:])
    result = json.loads(html.unescape(found.group(1)))
    assert result["images"] == 8 and result["loaded"] == result["images"], result
    assert result["tables"] >= 8 and result["shown"] == result["tables"], result
    assert result["errors"] == [], result
