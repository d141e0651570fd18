"""PGD and CW with no host read inside their step loop (issue 33 item 2), the path a GPU takes
(``PGD.masked_devices``): run here on the CPU by naming it, and held to the dropping loop's flags."""
from __future__ import annotations

import pytest
import torch
from sync_helpers import SYNCING, count_host_reads

import robdistill as rd
from robdistill.attacks.gradient import PGD


@pytest.fixture(scope="module")
def trained():
    data = rd.load_dataset("digits")
    model = rd.train_teacher("standard", data, seed=0, epochs=3, progress=False)
    return model, data.test.x, data.test.y


def syncs_of(monkeypatch, call) -> dict[str, int]:
    """Calls made from robdistill.attacks of tensor methods that read values back to the host,
    ``nonzero`` included (its result's size is read back)."""
    with monkeypatch.context() as patch:
        calls = count_host_reads(patch, "robdistill.attacks", (*SYNCING, "nonzero"))
        call()
    return calls


@pytest.mark.parametrize("attack", ["pgd", "cw"])
def test_the_masked_loop_reads_nothing_back_per_step(attack, trained, monkeypatch) -> None:
    model, x, y = trained

    def run(steps: int, masked: bool) -> dict[str, int]:
        monkeypatch.setattr(PGD, "masked_devices", ("cpu",) if masked else ())
        built = rd.attacks.build_attack(attack, 0.1, steps=steps, restarts=2)
        return syncs_of(monkeypatch, lambda: built.run(model, x[:64], y[:64], batch_size=64, progress=False))

    two, six = run(2, True), run(6, True)
    assert two == six, (two, six)  # one read per restart, none per step
    assert run(2, False) != run(6, False)  # the dropping loop reads per step: the instrument sees it


@pytest.mark.parametrize("attack", ["pgd", "cw"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_masked_and_dropping_loops_give_the_same_verdicts(attack, norm, trained, monkeypatch) -> None:
    """Same random starts, same steps for every image still robust; only the batch the model sees
    differs (all images against the survivors), which may move a last bit: at most 2 of 359 flags."""
    model, x, y = trained
    eps = 0.1 if norm == "linf" else 0.5
    out = {}
    for masked in (True, False):
        monkeypatch.setattr(PGD, "masked_devices", ("cpu",) if masked else ())
        out[masked] = rd.attacks.build_attack(attack, eps, steps=10, restarts=2, norm=norm).run(
            model, x, y, batch_size=128, progress=False)
    differ = int((out[True].robust != out[False].robust).sum())
    assert differ <= 2, differ
    assert 0 < int(out[True].robust.sum()) < len(y)  # a case with both robust and fooled images
    distance = (out[True].x_adv - x).flatten(1)
    radius = distance.abs().amax(1) if norm == "linf" else distance.norm(dim=1)
    assert float(radius.max()) <= eps + 1e-5
    # the images both loops call fooled carry the iterate that fooled them
    fooled = ~out[True].robust & ~out[False].robust
    with torch.no_grad():
        assert not (model(out[True].x_adv[fooled]).argmax(1) == y[fooled]).any()
