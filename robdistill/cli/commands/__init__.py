"""One module per command of the ``robdistill`` command line, each a click command over the library
(its options from :mod:`robdistill.cli.options`, its printing from :mod:`robdistill.cli.output`)."""
from robdistill.cli.commands.compare import compare
from robdistill.cli.commands.distill import distill
from robdistill.cli.commands.evaluate import evaluate
from robdistill.cli.commands.evaluate_report import evaluate_report
from robdistill.cli.commands.list import list_
from robdistill.cli.commands.regress import regress
from robdistill.cli.commands.report import report
from robdistill.cli.commands.run import run
from robdistill.cli.commands.sweep import sweep
from robdistill.cli.commands.sweep_report import sweep_report
from robdistill.cli.commands.sweep_status import sweep_status_command
from robdistill.cli.commands.train_teacher import train_teacher
from robdistill.cli.commands.ui import ui

COMMANDS = (run, sweep, train_teacher, distill, evaluate, compare, report, sweep_report, sweep_status_command,
            evaluate_report, regress, ui, list_)

__all__ = ["COMMANDS"]
