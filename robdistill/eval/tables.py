"""Plain-text tables of evaluation results: accuracy in % with the 95% Wilson interval."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from robdistill.core.errors import UserError

if TYPE_CHECKING:
    from robdistill.eval.results import EvaluationResult


def format_cell(value: float, low: float, high: float) -> str:
    return f"{100 * value:5.1f} [{100 * low:4.1f}, {100 * high:5.1f}]"


def results_rows(results: dict[str, EvaluationResult]) -> tuple[list[str], list[list[str]]]:
    keys: list[str] = []
    for result in results.values():
        for key in result.accuracies():
            if key not in keys:
                keys.append(key)
    keys.sort(key=lambda k: (k == "worst", k != "clean"))  # clean first, worst last
    header = ["model", "n"] + [_column(key, results) for key in keys]
    rows = []
    for name, result in results.items():
        acc = result.accuracies()
        rows.append([name, str(result.n)] + [format_cell(acc[k].value, acc[k].low, acc[k].high)
                                              if k in acc else "-" for k in keys])
    return header, rows


def _column(key: str, results: dict[str, EvaluationResult]) -> str:
    """A metric's column title, with the images it was measured on when an attack of the suite
    ran on fewer than the evaluation's (``autoattack (first 2000)``)."""
    counts = {r.samples(key) for r in results.values() if key in r.accuracies() and r.samples(key) < r.n}
    return f"{key} (first {'/'.join(str(c) for c in sorted(counts))})" if counts else key


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def results_table(results: dict[str, EvaluationResult]) -> str:
    """Rows per model, columns clean / each attack / worst: 'acc% [low, high]'."""
    return format_table(*results_rows(results))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """The same table in Markdown (``--out x.md``, a parent run's description)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def results_markdown(results: dict[str, EvaluationResult]) -> str:
    """A parent run's description: :func:`results_table` in Markdown and the sanity checks."""
    failures = failed_checks(results)
    threats = ", ".join(dict.fromkeys(result.threat_label for result in results.values()))
    return (f"Accuracy %, 95% Wilson interval; {threats}\n\n" + markdown_table(*results_rows(results))
            + "\n\nSanity checks: " + ("all passed" if not failures else "FAILED: " + "; ".join(failures)))


def results_table_records(results: dict[str, EvaluationResult]) -> dict[str, list]:
    """Column-oriented records for ``mlflow.log_table``."""
    columns: dict[str, list] = {"model": [], "n": [], "metric": [], "accuracy": [], "ci_low": [], "ci_high": []}
    for name, result in results.items():
        for key, p in result.accuracies().items():
            for column, value in zip(columns, [name, result.samples(key), key, p.value, p.low, p.high]):
                columns[column].append(value)
    return columns


def failed_checks(results: dict[str, EvaluationResult]) -> list[str]:
    return [f"{name}: {c.name} ({c.detail})" for name, r in results.items() for c in r.checks if not c.passed]


def consistency_table(analyses: dict) -> str:
    """AALP Tables 1 / 4: per model and set, share and mean clean / adversarial quantities."""
    header = ["model", "set", "share %", "clean p(y)", "adv p(y)", "clean CE", "adv CE", "pairing"]
    rows = []
    for name, analysis in analyses.items():
        for set_name, row in analysis.consistency.table().items():
            rows.append([name, set_name, f"{100 * row['share']:.1f}"] + [
                f"{row[k]:.3f}" for k in ("clean_prob", "adv_prob", "clean_ce", "adv_ce", "pairing_loss")])
    return format_table(header, rows)


def eps_table(curves: dict) -> str:
    """Rows per model and eps, columns clean / each attack / worst: 'acc% [low, high]'."""
    header: list[str] = []
    rows = []
    for name, by_eps in curves.items():
        for eps in sorted(by_eps):
            sub_header, sub_rows = results_rows({name: by_eps[eps]})
            header = ["model", "eps"] + sub_header[1:]
            rows.append([name, f"{eps:g}"] + sub_rows[0][1:])
    return format_table(header, rows)


TABLE_SUFFIXES = (".csv", ".md", ".markdown")


def check_table_path(path: Path) -> None:
    """An output table's name is checked before any work: a .csv or .md name in an existing folder."""
    if path.suffix not in TABLE_SUFFIXES:
        raise UserError(f"cannot write '{path}': use a .csv or .md file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"cannot write '{path}': the folder {folder} does not exist; create it or pick another path")


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """CSV or Markdown by the file's suffix (.csv, .md)."""
    check_table_path(path)
    if path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])
    else:
        path.write_text(markdown_table(header, rows) + "\n")
