"""Counting host reads (issue 33 item 2): the tensor methods that read a value back to the host (a
device synchronisation on a GPU), wrapped on ``torch.Tensor`` and counted when robdistill's own
code calls them."""
from __future__ import annotations

import sys

import torch

SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")


def count_host_reads(patch, caller_prefix: str = "robdistill", methods: tuple[str, ...] = SYNCING) -> dict[str, int]:
    """``{"<calling module>.<method>": calls}``, filled while ``patch`` (a monkeypatch context) holds:
    calls from modules named ``caller_prefix...`` only (torch's own reads, an optimizer reading its
    CPU step count, are not ours and not counted)."""
    calls: dict[str, int] = {}
    for name in methods:
        original = getattr(torch.Tensor, name)

        def wrapped(self, *args, __original=original, __name=name, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith(caller_prefix):
                calls[f"{caller}.{__name}"] = calls.get(f"{caller}.{__name}", 0) + 1
            return __original(self, *args, **kwargs)

        patch.setattr(torch.Tensor, name, wrapped)
    return calls
