"""The integrity gate every external model passes before it is distilled from or evaluated: logits
of the right shape, finite, not probabilities, deterministic across two forwards in eval mode,
and, when an expected clean accuracy is known (RobustBench's model info, or ``--expect-clean``),
a measured clean accuracy whose 95% Wilson interval holds it. Each failure is one line."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robdistill.core.errors import UserError
from robdistill.core.stats import wilson
from robdistill.data.datasets import Split
from robdistill.sources.registry import LoadedModel, Provenance, SourceOptions

GATE_BATCH = 64  # test images of the shape / determinism checks
CLEAN_CHECK_IMAGES = 1000  # test images of the clean-accuracy check when no suite names them
DETERMINISM_RTOL, DETERMINISM_ATOL = 1e-4, 1e-5
CAUSES = ("usual causes: the wrong --dataset or test data, normalisation applied outside the model (it must take "
          "[0, 1] images), or outputs that are not logits")


@dataclass(frozen=True)
class Expectation:
    """The clean accuracy a model should have, and who says so."""

    value: float
    source: str


def expectation(loaded: LoadedModel, options: SourceOptions) -> Expectation | None:
    """``--expect-clean`` if given, else the source's own value; None when unknown or switched off."""
    if not options.check_clean:
        return None
    if options.expect_clean is not None:
        return Expectation(options.expect_clean, "--expect-clean")
    if loaded.expected_clean is not None:
        return Expectation(loaded.expected_clean, loaded.expected_from)
    return None


def _forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).float()


def check_outputs(model: torch.nn.Module, name: str, x: torch.Tensor, num_classes: int) -> None:
    """Logits (N, C): the right shape, finite, not probabilities, the same on a second forward."""
    model.eval()
    first, second = _forward(model, x), _forward(model, x)
    if first.ndim != 2 or first.shape != (len(x), num_classes):
        raise UserError(f"{name} outputs shape {tuple(first.shape)} for {len(x)} images, but the dataset has "
                        f"{num_classes} classes: expected ({len(x)}, {num_classes}) logits; check --dataset")
    if not torch.isfinite(first).all():
        raise UserError(f"{name} outputs NaN or infinite logits on clean test images; the weights are broken")
    if (first >= 0).all() and torch.allclose(first.sum(1), torch.ones_like(first[:, 0]), atol=1e-3):
        raise UserError(f"{name} outputs probabilities (non-negative, rows sum to 1), not logits; remove its final "
                        f"softmax (attacks and distillation need logits)")
    if not torch.allclose(first, second, rtol=DETERMINISM_RTOL, atol=DETERMINISM_ATOL):
        diff = (first - second).abs().max().item()
        raise UserError(f"{name} is not deterministic: two forwards of the same {len(x)} test images in eval mode "
                        f"differ by up to {diff:.3g} (dropout or another random layer left on, or a randomised "
                        f"defence); robdistill needs a deterministic model")


def check_clean(model: torch.nn.Module, name: str, test: Split, expected: Expectation) -> dict[str, float]:
    """The clean accuracy on ``test``: an error when ``expected`` lies outside its 95% Wilson interval."""
    from robdistill.models.inference import logits_of

    correct = int((logits_of(model, test.x).argmax(1) == test.y).sum())
    measured = wilson(correct, len(test))
    if not measured.low <= expected.value <= measured.high:
        raise UserError(f"{name}: clean accuracy {measured.value:.1%} [95% CI {measured.low:.1%}, {measured.high:.1%}] "
                        f"on the first {len(test)} test images, but {expected.value:.1%} expected ({expected.source}); "
                        f"{CAUSES}; or pass --expect-clean off to skip this check")
    return {"gate_clean_acc": measured.value, "gate_clean_n": len(test)}


def admit(loaded: LoadedModel, test: Split, num_classes: int, options: SourceOptions) -> Provenance:
    """Run the gate on ``loaded`` with the evaluated ``test`` images; the provenance with what the
    gate measured (``expected_clean``, ``gate_clean_acc``) added. The model stays in eval mode."""
    name = loaded.provenance.id
    if len(test) == 0:
        raise UserError(f"no test images to check {name} on; evaluate at least one (--n-eval)")
    check_outputs(loaded.model, name, test.x[:GATE_BATCH], num_classes)
    expected = expectation(loaded, options)
    details: dict[str, object] = {"deterministic": True}
    if expected is not None:
        details.update(expected_clean=expected.value, expected_clean_from=expected.source,
                       **check_clean(loaded.model, name, test, expected))
    loaded.provenance = loaded.provenance.with_details(**details)
    return loaded.provenance
