"""`robdistill list`."""
from __future__ import annotations

import shutil
import sys
import textwrap

import click



LISTS = ("datasets", "models", "teachers", "students", "perturbations", "attacks", "suites", "objectives", "augmentations",
         "precisions", "threat-models", "sources")


@click.command("list")
@click.argument("what", required=False, type=click.Choice(LISTS))
def list_(what: str | None) -> None:
    """List what can be named on the command line (all kinds, or one)."""
    from robdistill.catalog import catalog

    for kind, entries in catalog().items():
        if what and kind != what:
            continue
        click.echo(f"{kind}:")
        width = max((len(n) for n in entries), default=0)
        columns = max(shutil.get_terminal_size((100, 24)).columns, width + 40)
        for name, text in entries.items():  # whole sentences; on a terminal wrapped under their column
            lines = (textwrap.wrap(text, columns - width - 4) if sys.stdout.isatty() else [text]) or [""]
            click.echo(f"  {name.ljust(width)}  {lines[0]}".rstrip())
            for line in lines[1:]:
                click.echo(f"  {'':{width}}  {line}")
