"""Turning stored sweep results into a document: ``robdistill report <sweep name>... --out
report.html --out report.md``.

``build_report`` reads the named sweeps back from the tracking store into a :class:`Report` (typed
content: sections of paragraphs, tables, figures and sanity-check lists); ``write_report`` lays
the same content out as a self-contained HTML page and as Markdown with its figures beside it::

    from robdistill.report import build_report, write_report

    report = build_report(["sweep-8a669774be1e"], tracking_uri="sqlite:///mlflow.db")
    write_report(report, ["study.html", "benchmarks/results/study.md"])
"""
from __future__ import annotations

from robdistill.core.lazy import lazy_exports

_PUBLIC = {
    "build_report": "robdistill.report.build", "sweep_command": "robdistill.report.build",
    "write_report": "robdistill.report.write", "check_output_path": "robdistill.report.write",
    "render_html": "robdistill.report.html", "render_markdown": "robdistill.report.markdown",
    "Report": "robdistill.report.content", "Section": "robdistill.report.content",
    "Table": "robdistill.report.content", "Figure": "robdistill.report.content",
    "Paragraph": "robdistill.report.content", "Code": "robdistill.report.content",
    "Checks": "robdistill.report.content", "EvaluationChecks": "robdistill.report.content",
    "Check": "robdistill.report.content",
}

__all__ = list(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, ())
