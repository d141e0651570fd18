"""Precision (issue 16): bf16 crafts and trains, fp32 decides. The verdict tests use a model whose
bf16 and fp32 forwards disagree on every sample, so an attack that judged in bf16 would fail them."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import robdistill as rd
from robdistill.attacks import build_attack
from robdistill.config.recipes import SuiteRecipe
from robdistill.core.errors import UserError
from robdistill.core.precision import PRECISIONS, Precision, PrecisionWarning, resolve_precision
from robdistill.eval.runner import run_suite

pytestmark = pytest.mark.filterwarnings("ignore::robdistill.core.precision.PrecisionWarning")


class Disagreeing(nn.Module):
    """Logits (s + 100, s + 100.01), s = sum of the pixels: fp32 says class 1 everywhere, whatever
    the input; bf16 (8 bits of mantissa: 100 and 100.01 are the same number) says a tie, which
    argmax reads as class 0. Labels are 1, so fp32 finds every sample correct and unattackable."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 2)
        with torch.no_grad():
            self.linear.weight.fill_(1.0)
            self.linear.bias.copy_(torch.tensor([100.0, 100.01]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def _data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    return x, torch.ones(n, dtype=torch.long)


def test_the_model_really_disagrees_across_precisions() -> None:
    model, (x, y) = Disagreeing(), _data()
    assert bool((model(x).argmax(1) == y).all())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert bool((model(x).argmax(1) != y).all())


@pytest.mark.parametrize("name, params", [("fgsm", {}), ("pgd", {"steps": 3}), ("cw", {"steps": 3}),
                                          ("pgd", {"steps": 3, "restarts": 2})])
def test_gradient_attacks_judge_in_fp32(name: str, params: dict) -> None:
    """bf16 calls every iterate fooled; the fp32 verdict (which confirms each before dropping a
    sample, and judges the final iterate) finds every sample robust, as fp32 crafting does."""
    model, (x, y) = Disagreeing(), _data()
    fp32 = build_attack(name, 0.1, **params).run(model, x, y, progress=False).robust
    bf16 = build_attack(name, 0.1, precision="bf16", **params).run(model, x, y, progress=False).robust
    assert bool(fp32.all()) and torch.equal(bf16, fp32)


def test_transfer_judges_the_target_in_fp32() -> None:
    model, (x, y) = Disagreeing(), _data()
    attack = build_attack("transfer", 0.1, surrogate=Disagreeing(), steps=2, precision="bf16")
    assert bool(attack.run(model, x, y, progress=False).robust.all())


def test_autoattack_rejudges_in_fp32_and_attacks_the_disputed_again(capsys) -> None:
    """The library, attacking the bf16 forward, calls every sample wrong; fp32 disagrees on all of
    them, so they are attacked again in fp32 (and survive: the fp32 margin never moves)."""
    model, (x, y) = Disagreeing(), _data(6)
    attack = build_attack("autoattack", 0.1, version="custom", attacks=["apgd-ce"], precision="bf16")
    attack._iterations = 3
    out = attack.run(model, x, y, batch_size=6, progress=True)
    assert bool(out.robust.all())
    printed = capsys.readouterr().out
    assert "6 samples judged differently in fp32, attacked again in fp32" in printed
    assert "apgd-ce done" in printed  # one line per finished component


def test_zero_eps_probe_keeps_the_precision() -> None:
    attack = build_attack("pgd", 0.1, steps=5, precision="bf16")
    assert attack.zero_eps_probe(2).precision.name == "bf16"
    model, (x, y) = Disagreeing(), _data()
    assert bool(attack.zero_eps_probe(2).run(model, x, y, progress=False).robust.all())


def test_bf16_pgd_finds_what_fp32_pgd_finds_on_a_real_model() -> None:
    """On a small trained CNN the bf16-crafted PGD-10 flags agree with fp32 up to a few samples
    (the agreement benchmark measures this on every study model)."""
    data = rd.load_dataset("digits")
    model = rd.train_teacher("standard", data, seed=0, epochs=2)
    x, y = data.test.x[:200], data.test.y[:200]
    fp32 = rd.attacks.PGD(0.1, steps=10).run(model, x, y, progress=False).robust
    bf16 = rd.attacks.PGD(0.1, steps=10, precision="bf16").run(model, x, y, progress=False).robust
    assert int((fp32 != bf16).sum()) <= 4
    assert 0 < int(fp32.sum()) < 200  # the attack is neither trivial nor hopeless here


def test_bf16_training_runs_leaves_the_layout_and_differs_from_fp32() -> None:
    data = rd.load_dataset("digits")
    kwargs = dict(seed=0, epochs=1, train_subset=128, attack_steps=4)
    fp32 = rd.train_teacher("at", data, **kwargs)
    bf16 = rd.train_teacher("at", data, precision="bf16", **kwargs)
    weights = [p for p in bf16.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous() for p in weights)  # channels-last undone after training
    assert all(torch.isfinite(p).all() for p in bf16.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(fp32.parameters(), bf16.parameters()))
    student = rd.distill(bf16, data, perturb="nonmax-shuffle", seed=0, epochs=1, train_subset=128, precision="bf16")
    assert "val/pgd_acc" in student.history[-1]


def test_fp32_recipes_keep_their_cache_keys() -> None:
    """The precision field at fp32 is left out of cache keys: keys computed before the field existed
    (these two, by the code of commit 633effe) still find their teachers."""
    from robdistill.catalog import checked_recipe as load_recipe
    from robdistill.data.datasets import DATASETS
    from robdistill.experiments.stages import teacher_key

    assert teacher_key(load_recipe("teacher", "at"), DATASETS.get("digits"), 0) == "3994bf941c581004"
    assert teacher_key(load_recipe("teacher", "trades"), DATASETS.get("fashion-mnist"), 3) == "f76ece600740667f"
    bf16 = load_recipe("teacher", "at", ["precision=bf16"])
    assert teacher_key(bf16, DATASETS.get("digits"), 0) != "3994bf941c581004"


def test_evaluation_logs_precision_and_cost() -> None:
    """PGD-k on samples it never fools: 1 clean forward + k + 1 iterate forwards, k backwards per
    sample in fp32; in bf16 each of the k iterates bf16 calls fooled costs one fp32 confirmation.
    The suite's precision is in every attack's logged configuration."""
    model, (x, y) = Disagreeing(), _data()
    from robdistill.data.datasets import Split

    for precision, forwards in (("fp32", 5 + 2), ("bf16", 5 + 2 + 5)):
        suite = SuiteRecipe(name="t", attack=({"name": "pgd", "steps": 5},), precision=precision)
        result = run_suite(model, Split(x, y), suite, 0.1, progress=False)
        cost = result.costs["pgd"]
        assert (cost["forward_per_sample"], cost["backward_per_sample"]) == (forwards, 5)
        assert cost["gflop_per_sample"] > 0  # the passes at the model's FLOPs (robdistill.models.flops)
        assert result.attack_configs["pgd"]["precision"] == precision
        assert result.to_json()["costs"]["pgd"]["backward_per_sample"] == 5
        assert result.passed, [c for c in result.checks if not c.passed]


def test_unknown_precision_is_one_line() -> None:
    with pytest.raises(UserError, match="unknown precision 'fp8'; choose one of: bf16, fp32"):
        resolve_precision("fp8")
    with pytest.raises(UserError, match="precision"):
        rd.load_recipe("suite", "fast", precision="fp16")
    assert isinstance(PRECISIONS.get("bf16"), Precision)


def test_emulated_bf16_warns_once(monkeypatch) -> None:
    from robdistill.core import precision

    precision._warn_if_emulated.cache_clear()
    monkeypatch.setattr(precision, "native_bf16", lambda device_type: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            with PRECISIONS.get("bf16").autocast("cpu"):
                pass
    assert [str(w.message) for w in caught if issubclass(w.category, PrecisionWarning)] == [
        "precision bf16: this CPU has no native bf16 (needs AVX-512-BF16/AMX or a bf16 GPU), so bf16 runs "
        "slower than fp32 here; use --precision fp32"]
    precision._warn_if_emulated.cache_clear()


def test_cli_offers_every_registered_precision() -> None:
    """The CLI's choices are the registry's own names (no copy to keep equal)."""
    from robdistill.cli.main import main

    run = main.commands["run"]
    choices = next(p.type.choices for p in run.params if p.name == "precision")
    assert list(choices) == PRECISIONS.names()


def test_fp32_channels_last_is_fp32_math() -> None:
    """fp32-cl only changes the layout: not a reduced precision, so the attacks take the fp32 path."""
    fp32_cl = PRECISIONS.get("fp32-cl")
    assert not fp32_cl.reduced and fp32_cl.channels_last
    model, (x, y) = Disagreeing(), _data()
    assert bool(build_attack("pgd", 0.1, steps=2, precision="fp32-cl").run(model, x, y, progress=False).robust.all())
