"""Every public name of ``import robdistill as rd`` (and of ``rd.attacks``) documents itself the way
timm and torchattacks do: Args / Returns / Example, and every Example runs, as written, here."""
from __future__ import annotations

import doctest
import inspect

import pytest

import robdistill as rd

pytestmark = pytest.mark.usefixtures("single_thread")

ATTACK_NAMES = ("FGSM", "PGD", "CW", "AutoAttack", "Transfer", "build_attack")


def public_objects() -> dict[str, object]:
    subpackages = {n for n in rd.__all__ if inspect.ismodule(getattr(rd, n))}
    names = {f"rd.{n}": getattr(rd, n) for n in rd.__all__ if n != "__version__" and n not in subpackages}
    names.update({f"rd.attacks.{n}": getattr(rd.attacks, n) for n in ATTACK_NAMES})
    return names


def takes_parameters(cls: type) -> bool:
    """Whether the class's constructor takes anything (a Protocol or ``MlflowTracker()`` does not)."""
    if issubclass(cls, BaseException) or getattr(cls, "_is_protocol", False):
        return False
    try:
        return any(p.name != "self" for p in inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return False


def test_dir_shows_only_the_public_names() -> None:
    assert dir(rd) == sorted(rd.__all__)
    assert not [n for n in dir(rd) if n.startswith("_") and n != "__version__"]
    assert "lazy_exports" not in dir(rd) and "TYPE_CHECKING" not in dir(rd)


@pytest.mark.parametrize("name", sorted(public_objects()))
def test_public_name_has_args_returns_and_example(name: str) -> None:
    obj = public_objects()[name]
    doc = inspect.getdoc(obj) or ""
    assert "Example:" in doc and ">>> " in doc, f"{name}: no runnable Example section"
    if inspect.isclass(obj):
        if takes_parameters(obj):
            assert "Args:" in doc or "Attributes:" in doc, f"{name}: no Args / Attributes section"
    else:
        assert "Args:" in doc and "Returns:" in doc, f"{name}: no Args / Returns section"


@pytest.mark.parametrize("name", sorted(public_objects()))
def test_public_example_runs(name: str, workdir) -> None:
    """The docstring's examples, run by doctest in a scratch directory (``...`` matches anything)."""
    obj = public_objects()[name]
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(obj, name, globs={})
    assert tests and tests[0].examples, f"{name}: no examples found"
    for test in tests:
        runner.run(test)
    outcome = runner.summarize(verbose=False)
    assert outcome.failed == 0, f"{name}: {outcome.failed} of {outcome.attempted} examples failed (output above)"
