"""Reading a model file someone else made, safely: its SHA-256 (checked against a pinned value
before anything is parsed), HTML pages and truncated files told apart from weights, and tensors
loaded with ``torch.load(weights_only=True)``, so a pickle that would run code runs nothing."""
from __future__ import annotations

import hashlib
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

from robdistill.core.errors import UserError

CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
# what the first bytes of a web page look like (after whitespace and a UTF-8 byte-order mark)
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<!--", b"<meta", b"<script")


def sha256_of(path: Path) -> str:
    """The file's SHA-256, hex, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256_value(expected: str) -> str:
    """A pinned hash as 64 lower-case hex digits (``sha256:`` prefix allowed)."""
    value = expected.strip().lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(value):
        raise UserError(f"an expected SHA-256 is 64 hex digits (e.g. from `sha256sum FILE`); got '{expected}'")
    return value


def require_file(path: Path, what: str) -> Path:
    """``path`` as a readable file, else a one-line error saying what is wrong with it."""
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, not a file; give the model file inside it")
    if not path.exists():
        raise UserError(f"{what} {path} does not exist" + ("" if path.suffix else
                                                           "; give a path to a model file or a recipe name"))
    if not path.is_file():
        raise UserError(f"{what} {path} is not a regular file; give a model file")
    return path


def _not_pytorch(path: Path, detail: str) -> UserError:
    """A file torch cannot read: a text file says so; a broken archive or pickle names what failed."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    try:
        head.decode("utf-8")
        text = b"\x00" not in head
    except UnicodeDecodeError:
        text = False
    if text:
        return UserError(f"{path} is a text file, not PyTorch weights (torch.save writes a binary archive); "
                         f"give the model file")
    return UserError(f"{path} is not a PyTorch file or is truncated ({detail}); check the file you gave")


def verified_sha256(path: Path, expected: str | None) -> str:
    """The file's hash; with ``expected``, a mismatch is an error before the file is parsed."""
    actual = sha256_of(path)
    if expected is not None and actual != check_sha256_value(expected):
        raise UserError(f"{path} has SHA-256 {actual}, not the expected {check_sha256_value(expected)}: it is "
                        f"not the file you pinned (a different version, or a broken download); fetch it again")
    return actual


def looks_like_html(path: Path) -> bool:
    """Whether the file starts like a web page (a download that saved a site's page, not the file)."""
    with open(path, "rb") as handle:
        head = handle.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith(_HTML_STARTS)


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``): a zip with ``code/`` and
    ``constants.pkl``, which a plain ``torch.save`` archive does not have."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def check_not_html(path: Path) -> None:
    if looks_like_html(path):
        raise UserError(f"{path} is an HTML page, not model weights (a download that saved the site's page; "
                        f"download the file itself again, e.g. with a browser or the hosting site's own tool)")


def read_weights(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors: an HTML page, a
    truncated or foreign file, or a pickle of Python objects beyond tensors and containers
    (which is refused, never run)."""
    import torch

    check_not_html(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on a foreign file's pickle protocol
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower() or _pickles_objects(path):
            raise UserError(f"{path} holds Python objects beyond tensors (a pickle that could run code when "
                            f"loaded); it was not loaded. Save a plain state dict instead: "
                            f"torch.save(model.state_dict(), FILE)") from None
        raise _not_pytorch(path, "an unreadable pickle") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError,
            TypeError, IndexError, UnicodeDecodeError) as exc:
        detail = first_line(exc) if isinstance(exc, (RuntimeError, OSError, EOFError)) else type(exc).__name__
        raise _not_pytorch(path, detail) from None


# the opcodes with which a pickle names and calls Python objects (what weights_only refuses)
_OBJECT_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"})


def _pickles_objects(path: Path, limit: int = 1 << 24) -> bool:
    """Whether ``path`` starts with a well-formed pickle that names Python objects: read with
    ``pickletools`` (which parses and executes nothing), to tell a foreign pickle from garbage."""
    import io
    import pickletools

    with open(path, "rb") as handle:
        data = handle.read(limit)
    try:
        return any(op.name in _OBJECT_OPCODES for op, _, _ in pickletools.genops(io.BytesIO(data)))
    except Exception:  # not a pickle (or cut off): ValueError, and whatever a garbage opcode raises
        return False


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 120 else line[:117] + "..."
