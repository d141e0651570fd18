"""The ``robdistill`` command line (click): the command group, its one-line errors and SIGTERM
handling, and every command (one module each under ``robdistill.cli.commands``). Bad input ends
in one line on stderr that says how to fix it, exit status 2, no traceback."""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import click

from robdistill.cli.commands import COMMANDS
from robdistill.core.errors import UserError

EPILOG = "Runs are logged to MLflow (default sqlite:///mlflow.db); see README.md."


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's preemption, torchrun's agent) taken like Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    """Raise :class:`Terminated` once; a second SIGTERM during the cleanup is ignored (SIGKILL is
    the hard stop) so the MLflow runs still end KILLED."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main
    thread; the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resume_hint(group: click.Group, ctx: click.Context) -> str:
    """``; run the same command with --resume to continue`` for commands that can resume, else ''."""
    command = group.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    if command is None or not any(p.name == "resume" for p in command.params):
        return ""
    return "; run the same command with --resume to continue from the last saved state"


class FriendlyGroup(click.Group):
    """Turns :class:`UserError` into ``error: <message>`` and exit 2; Ctrl-C into exit 130 and
    SIGTERM into exit 143, both with the MLflow runs marked KILLED (never left RUNNING)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with sigterm_as_interrupt():
                return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            if os.environ.get("RANK", "0") == "0":  # under torchrun one line, from rank 0
                cause = "terminated (SIGTERM)" if terminated else "interrupted"
                hint = resume_hint(self, ctx)  # the commands that can resume are the ones with runs
                click.echo(f"{cause}: the MLflow run was marked KILLED{hint}" if hint else cause, err=True)
            sys.exit(128 + int(signal.SIGTERM) if terminated else 130)


@click.group(cls=FriendlyGroup, epilog=EPILOG)
@click.version_option(package_name="robdistill")
def main() -> None:
    """How much adversarial robustness does a student inherit when it is distilled, on clean
    inputs only, from an adversarially trained teacher -- and which parts of the teacher's logits
    carry it?

    \b
    Quick start (embedded digits dataset, a few minutes on a laptop CPU):
      robdistill run --teacher alp --perturb nonmax-shuffle
      robdistill list

    \b
    Several processes or GPUs (DistributedDataParallel; only rank 0 logs):
      torchrun --nproc-per-node 2 -m robdistill.cli run --teacher at --perturb keep
    """
    import warnings

    warnings.formatwarning = one_line_warning


def one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     line: str | None = None) -> str:
    """Warnings on the command line as one line each (``warning: ...``), without the source line."""
    return f"warning: {message}\n"



for _command in COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
