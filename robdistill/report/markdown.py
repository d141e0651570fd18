"""A report as Markdown (GitHub-flavoured tables), its figures as PNG files in a folder beside it
(``<stem>_figures/``), linked relatively: what ``benchmarks/results/`` files are made of."""
from __future__ import annotations

from pathlib import Path

from robdistill.report.content import CHECK_COLUMNS, Checks, Code, Figure, Paragraph, Report, Section, Table


def figures_dir(path: Path) -> Path:
    """Where the figures of the Markdown report ``path`` go: ``<stem>_figures/`` beside it."""
    return path.with_name(f"{path.stem}_figures")


def _cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(table: Table) -> str:
    lines = [f"### {table.title}", "",
             "| " + " | ".join(_cell(h) for h in table.header) + " |",
             "|" + "---|" * len(table.header)]
    for row in table.rows:
        cells = [_cell(c) for c in row]
        if table.badge_column is not None and table.badge_column < len(cells):
            cells[table.badge_column] = f"**{cells[table.badge_column]}**"
        lines.append("| " + " | ".join(cells) + " |")
    if table.caption:
        lines += ["", f"*{table.caption}*"]
    return "\n".join(lines)


def _checks(checks: Checks) -> str:
    lines = ["### status of every evaluation", "", "| " + " | ".join(CHECK_COLUMNS) + " |",
             "|" + "---|" * len(CHECK_COLUMNS)]
    lines += [f"| {_cell(e.label)} | **{e.status}** | {e.passed_text} | {_cell(e.failed_text)} | {e.run_id} |"
              for e in checks.evaluations]
    warnings = [(e.label, w) for e in checks.evaluations for w in e.warnings]
    if warnings:
        lines += ["", "Warnings:", ""] + [f"- {_cell(label)}: {_cell(w)}" for label, w in warnings]
    names = list(dict.fromkeys(c.name for e in checks.evaluations for c in e.checks))
    if names:
        lines += ["", "The checks each evaluation ran: " + "; ".join(f"`{n}`" for n in names) + "."]
    return "\n".join(lines)


def _block(block: object, folder: str) -> str:
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Code):
        caption = f"{block.caption}\n\n" if block.caption else ""
        return f"{caption}```text\n{block.text}\n```"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return f"### {block.title}\n\n![{block.title}]({folder}/{block.name})\n\n*{block.caption}*"
    if isinstance(block, Checks):
        return _checks(block)
    raise TypeError(f"unknown report block {type(block).__name__}")


def _section(number: int, section: Section, folder: str) -> str:
    return f'<a id="{section.id}"></a>\n\n## {number}. {section.title}\n\n' + "\n\n".join(
        _block(block, folder) for block in section.blocks)


def render_markdown(report: Report, folder: str = "figures") -> str:
    """The report as Markdown; figures are linked as ``<folder>/<figure name>``."""
    toc = "\n".join(f"{i}. [{s.title}](#{s.id})" for i, s in enumerate(report.sections, 1))
    body = "\n\n".join(_section(i, s, folder) for i, s in enumerate(report.sections, 1))
    return f"# {report.title}\n\n{report.subtitle}\n\n**Contents**\n\n{toc}\n\n{body}\n"


def write_markdown(report: Report, path: Path) -> list[Path]:
    """``path`` and its figures (``<stem>_figures/*.png``); returns every file written."""
    folder = figures_dir(path)
    figures = report.figures()
    written = []
    if figures:
        folder.mkdir(exist_ok=True)
        for figure in figures:
            (folder / figure.name).write_bytes(figure.png)
            written.append(folder / figure.name)
    path.write_text(render_markdown(report, folder.name))
    return [path, *written]
