"""A report as one self-contained HTML page: inline CSS, no script, figures as base64 data URIs,
no address outside the page (it renders offline, from a file or an e-mail)."""
from __future__ import annotations

import base64
import html
import re

from robdistill.report.content import (BADGES, CHECK_COLUMNS, Checks, Code, EvaluationChecks, Figure, Paragraph, Report, Section,
                                       Table)

CSS = """
:root { --fg: #1d2329; --muted: #5b6670; --line: #d8dee4; --head: #f3f5f7; --accent: #1f5fa8;
        --ok: #1a7f37; --bad: #c62828; --warn: #9a6700; --grey: #6e7781; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.5;
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.6em; margin: 0.2em 0; }
h2 { font-size: 1.3em; margin-top: 2.2em; padding-bottom: 0.25em; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.02em; margin: 1.6em 0 0.5em; }
a { color: var(--accent); }
.subtitle, .caption, figcaption { color: var(--muted); font-size: 0.9em; }
nav.toc { background: var(--head); border: 1px solid var(--line); border-radius: 6px; padding: 10px 18px;
          margin: 18px 0; display: inline-block; }
nav.toc ol { margin: 0.3em 0; padding-left: 1.4em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.86em; margin: 0.3em 0; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
td { font-variant-numeric: tabular-nums; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 16em; }
tbody tr:nth-child(even) td { background: #fafbfc; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.88em; }
code { background: var(--head); padding: 0 3px; border-radius: 3px; }
pre { background: var(--head); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      white-space: pre-wrap; overflow-wrap: anywhere; }
figure { margin: 1.2em 0; }
figure.compact { display: inline-block; vertical-align: top; width: 49%; margin-right: 0.5%; }
figure.compact h3 { font-size: 0.92em; margin-top: 0.4em; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 0.85em; font-weight: 600;
         color: #fff; white-space: nowrap; }
.badge-passed, .badge-reproduced { background: var(--ok); }
.badge-failed { background: var(--bad); }
.badge-not-reproduced, .badge-warning { background: var(--warn); }
.badge-inconclusive { background: var(--grey); }
details { margin: 0.2em 0; }
summary { cursor: pointer; }
ul.checks { list-style: none; padding-left: 0.6em; margin: 0.3em 0 0.8em; }
ul.checks li { margin: 2px 0; }
.detail { color: var(--muted); }
"""


def _inline(text: str) -> str:
    """Escaped text with `code` spans."""
    parts = re.split(r"`([^`]*)`", text)
    return "".join(f"<code>{html.escape(part)}</code>" if i % 2 else html.escape(part) for i, part in enumerate(parts))


def badge(word: str) -> str:
    return f'<span class="badge badge-{html.escape(word.lower().replace(" ", "-"))}">{html.escape(word)}</span>'


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            text = str(cell)
            if i == table.badge_column and text in BADGES:
                cells.append(f"<td>{badge(text)}</td>")
            else:
                wide = ' class="wrap"' if len(text) > 60 else ""
                cells.append(f"<td{wide}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f'<p class="caption">{_inline(table.caption)}</p>' if table.caption else ""
    return (f"<h3>{html.escape(table.title)}</h3>\n<div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
            f"<tbody>\n" + "\n".join(body) + f"\n</tbody></table></div>\n{caption}")


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    kind = ' class="compact"' if figure.compact else ""
    return (f'<figure{kind}><h3>{html.escape(figure.title)}</h3>'
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(figure.title, quote=True)}">'
            f"<figcaption>{_inline(figure.caption)}</figcaption></figure>")


def _evaluation(evaluation: EvaluationChecks) -> str:
    items = [f"<li>{badge('passed' if c.passed else 'FAILED')} {html.escape(c.name)} "
             f"<span class=\"detail\">({html.escape(c.detail)})</span></li>" for c in evaluation.checks]
    items += [f"<li>{badge('warning')} {html.escape(w)}</li>"
              for w in evaluation.warnings]
    passed = sum(c.passed for c in evaluation.checks)
    return (f"<details><summary>{badge(evaluation.status)} {html.escape(evaluation.label)}: {passed} of "
            f"{len(evaluation.checks)} checks passed <span class=\"detail\">(run {html.escape(evaluation.run_id)})"
            f"</span></summary><ul class=\"checks\">" + "".join(items) + "</ul></details>")


def _checks(checks: Checks) -> str:
    rows = [f"<tr><td>{html.escape(e.label)}</td><td>{badge(e.status)}</td><td>{e.passed_text}</td>"
            f"<td class=\"wrap\">{html.escape(e.failed_text)}</td><td>{html.escape(e.run_id)}</td></tr>"
            for e in checks.evaluations]
    head = "".join(f"<th>{name}</th>" for name in CHECK_COLUMNS)
    table = (f"<h3>status of every evaluation</h3><div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>\n"
             + "\n".join(rows) + "\n</tbody></table></div>")
    details = "<h3>every check</h3>\n" + "\n".join(_evaluation(e) for e in checks.evaluations)
    return table + "\n" + details


def _block(block: object) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Code):
        caption = f'<p class="caption">{_inline(block.caption)}</p>' if block.caption else ""
        return f"{caption}<pre>{html.escape(block.text)}</pre>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return _figure(block)
    if isinstance(block, Checks):
        return _checks(block)
    raise TypeError(f"unknown report block {type(block).__name__}")


def _section(number: int, section: Section) -> str:
    return (f'<section id="{section.id}"><h2>{number}. {html.escape(section.title)}</h2>\n'
            + "\n".join(_block(block) for block in section.blocks) + "\n</section>")


def render_html(report: Report) -> str:
    """The whole page as a string."""
    toc = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in report.sections)
    body = "\n".join(_section(i, s) for i, s in enumerate(report.sections, 1))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(report.title)}</title>
<link rel="icon" href="data:,">
<style>{CSS}</style>
</head>
<body>
<main>
<h1>{html.escape(report.title)}</h1>
<p class="subtitle">{_inline(report.subtitle)}</p>
<nav class="toc"><strong>Contents</strong><ol>{toc}</ol></nav>
{body}
</main>
</body>
</html>
"""
