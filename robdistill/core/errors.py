"""Errors meant for the user: the CLI prints them as one line, without a traceback."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class UserError(Exception):
    """Bad input (a name, a value, a file) with a message that says how to fix it.

    The command line prints it as one line and exits with status 2; the API raises it as it is.

    Example:
        >>> import robdistill as rd
        >>> try:
        ...     rd.load_dataset("mnits")
        ... except rd.UserError as error:
        ...     print(error)
        unknown dataset 'mnits'; choose one of: cifar10, digits, fashion-mnist, mnist, svhn
    """


def check_finite(values: torch.Tensor, what: str) -> None:
    """A one-line :class:`UserError` when ``values`` holds NaN or infinity."""
    import torch

    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        rows = int(bad.reshape(len(values), -1).any(1).sum()) if values.ndim else 1
        raise UserError(f"{what}: {rows} of {len(values) if values.ndim else 1} non-finite; check the model's "
                        f"weights, its normalisation and the learning rate")
