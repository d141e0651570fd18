"""Attack batches sized to the device (issue 33 item 3): probed upward on CUDA, backed off on
out-of-memory, and the flags those of a fixed run at the batch that fitted. A model that "runs out of
memory" above a batch size while crafting (gradients on) stands in for a GPU here."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robdistill.config.recipes import SuiteRecipe
from robdistill.data.datasets import Split
from robdistill.eval.runner import backed_off, run_suite, probed_batch, suite_attacks

pytestmark = pytest.mark.usefixtures("single_thread")


class Picky(nn.Module):
    """``inner``, but a crafting forward (gradients on) of more than ``limit`` images raises CUDA's
    out-of-memory error, as a GPU would for an attack batch too large."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.refused = inner, limit, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and len(x) > self.limit:
            self.refused += 1
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (a batch of {len(x)}; simulated)")
        return self.inner(x)


def suite(batch_size: int) -> SuiteRecipe:
    return SuiteRecipe(name="t", batch_size=batch_size, attack=({"name": "fgsm"}, {"name": "pgd", "steps": 3},
                                                                {"name": "cw", "steps": 3}))


def test_an_attack_that_runs_out_of_memory_is_run_again_at_half_the_batch(quick_cnn, digits) -> None:
    model = quick_cnn(0)
    data = Split(digits.test.x[:96], digits.test.y[:96])
    picky = Picky(model, limit=16)
    backed = run_suite(picky, data, suite(64), 0.1, progress=False)  # 64 -> 32 -> 16
    fixed = run_suite(model, data, suite(16), 0.1, progress=False)
    assert picky.refused >= 2
    for key in ("fgsm", "pgd", "cw"):
        assert torch.equal(backed.robust[key], fixed.robust[key]), key
        assert backed.costs[key]["batch_size"] == 16.0 and fixed.costs[key]["batch_size"] == 16.0
    assert backed.passed, [c for c in backed.checks if not c.passed]


def test_the_probe_doubles_the_batch_while_it_fits(quick_cnn, digits) -> None:
    x, y = digits.test.x[:200], digits.test.y[:200]
    attack = suite_attacks(suite(8), 0.1)["pgd"]
    assert probed_batch(attack, Picky(quick_cnn(0), limit=40), x, y, 8, probe=True) == 32  # 64 does not fit
    assert probed_batch(attack, Picky(quick_cnn(0), limit=1000), x, y, 8, probe=True, cap=128) == 128
    assert probed_batch(attack, quick_cnn(0), x, y, 8) == 8  # a CPU keeps the suite's batch


def test_only_out_of_memory_is_retried() -> None:
    calls = []

    def run(batch: int) -> int:
        calls.append(batch)
        if batch > 5:
            raise RuntimeError("CUDA error: out of memory")
        return batch

    assert backed_off(run, 24) == (3, 3) and calls == [24, 12, 6, 3]
    with pytest.raises(ValueError):
        backed_off(lambda b: (_ for _ in ()).throw(ValueError("not memory")), 8)
