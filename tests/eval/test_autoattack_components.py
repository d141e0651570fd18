"""AutoAttack's cost per component (issue 33 item 1): an evaluation times each component of its
AutoAttack apart, logged beside the attack's own time as ``seconds/autoattack/<component>``."""
from __future__ import annotations

import torch
from torch import nn

import robdistill as rd
from robdistill.tracking.schema import seconds_metrics


def test_autoattack_components_are_timed_apart() -> None:
    data = rd.load_dataset("digits")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = data.test.x[:24]
    with torch.no_grad():
        y = model(x).argmax(1)  # every image starts correct
    test = rd.Split(x, y)
    splits = rd.Splits(data.info, data.train, data.val, test)
    attack = rd.attacks.AutoAttack(eps=0.02, version="custom", attacks=["apgd-ce", "apgd-t"])
    result = rd.evaluate(model, splits, attacks=[attack], progress=False)
    parts = {key: value for key, value in result.seconds.items() if key.startswith("autoattack/")}
    assert set(parts) == {"autoattack/apgd-ce", "autoattack/apgd-t"}, result.seconds
    assert all(value > 0 for value in parts.values())
    assert sum(parts.values()) <= result.seconds["autoattack"]  # inside the attack's own time
    assert "seconds/autoattack/apgd-t" in seconds_metrics(result.seconds)
