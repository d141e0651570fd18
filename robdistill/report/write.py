"""Writing a report: ``.html`` (one self-contained page) or ``.md`` (Markdown, figures beside it),
by each output's suffix; every output path is checked before any work."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from robdistill.core.errors import UserError
from robdistill.report.content import Report

HTML_SUFFIXES = (".html", ".htm")
MARKDOWN_SUFFIXES = (".md", ".markdown")


def check_output_path(path: str | Path) -> Path:
    """A report's file name, checked before anything is read: a .html or .md name in an existing
    folder (a one-line :class:`UserError` otherwise)."""
    path = Path(path)
    if path.suffix.lower() not in HTML_SUFFIXES + MARKDOWN_SUFFIXES:
        raise UserError(f"cannot write '{path}': use a .html or .md file name (e.g. --out report.html)")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"cannot write '{path}': the folder {folder} does not exist; create it or pick another path")
    if path.is_dir():
        raise UserError(f"cannot write '{path}': it is a folder; give a file name")
    return path


def write_report(report: Report, outputs: Sequence[str | Path]) -> list[Path]:
    """Write ``report`` to each of ``outputs`` (.html: one self-contained page; .md: Markdown and
    its figures in ``<stem>_figures/``); returns the report files written."""
    from robdistill.report.html import render_html
    from robdistill.report.markdown import write_markdown

    paths = [check_output_path(p) for p in outputs]
    if not paths:
        raise UserError("give at least one output: --out report.html or --out report.md")
    page = None
    for path in paths:
        if path.suffix.lower() in HTML_SUFFIXES:
            page = render_html(report) if page is None else page
            path.write_text(page, encoding="utf-8")
        else:
            write_markdown(report, path)
    return paths
