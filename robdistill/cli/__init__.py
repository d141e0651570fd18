"""The command line: a thin layer over the library (`robdistill --help`)."""
from robdistill.cli.main import main

__all__ = ["main"]
