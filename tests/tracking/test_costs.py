"""The cost table of a study (issue 33, item 1): wall time per stage from the runs' times, each
attack's seconds, core-hours from the runs' threads."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from robdistill.tracking.costs import stage_costs, total_row


def _run(seconds: float, tags: dict[str, str] | None = None, metrics: dict[str, float] | None = None,
         status: str = "FINISHED") -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(start_time=1_000, end_time=1_000 + int(seconds * 1000), status=status),
                           data=SimpleNamespace(tags=tags or {}, metrics=metrics or {}))


def test_stage_costs_by_hand() -> None:
    teachers = [_run(3600, {"threads": "2", "reused": "false"}), _run(60, {"threads": "2", "reused": "true"}),
                _run(1800, {"threads": "2"}, status="KILLED")]
    students = [_run(360, {"threads": "1"}), _run(360)]  # one from before runs recorded threads
    evaluations = [_run(900, {"threads": "1"}, {"seconds/pgd": 300.0, "seconds/cw": 200.0, "acc/pgd": 0.5,
                                                "cost/pgd_images_per_second": 2.0, "cost/pgd_gflop_per_sample": 0.5}),
                   _run(300, {"threads": "1"}, {"seconds/pgd": 100.0, "cost/pgd_images_per_second": 4.0,
                                                "cost/pgd_gflop_per_sample": 1.5})]
    costs = stage_costs(teachers, students, evaluations)
    rows = {row[0].strip(): row for row in (c.row() for c in costs)}
    # reused and killed teachers are out; stages without logged rates show '-' for the compute columns
    assert rows["teacher training"] == ["teacher training", "1", "1.00", "60.0", "2", "2.00", "-", "-", "-"]
    assert rows["distillation"][1:3] == ["2", "0.20"] and rows["distillation"][4:6] == ["1 and ?", ">= 0.10"]
    assert rows["evaluations"] == ["evaluations", "2", "0.33", "10.0", "1", "0.33", "-", "-", "-"]
    assert rows["pgd"][1:3] == ["2", "0.11"] and rows["cw"][1:3] == ["1", "0.06"]
    # pgd: 600 + 400 images in 400 s; 600 x 0.5 + 400 x 1.5 = 900 GFLOP over 1,000 images and 400 s
    assert rows["pgd"][6:] == ["2.5", "0.9", "2.25"]
    assert rows["cw"][6:] == ["-", "-", "-"]
    assert total_row(costs)[:3] == ["total", "5", "1.53"]


def test_cost_metrics_rates_and_peak_fraction() -> None:
    from robdistill.tracking.schema import cost_metrics

    costs = {"pgd": {"forward_per_sample": 21.0, "backward_per_sample": 20.0, "gflop_per_sample": 2.0}}
    out = cost_metrics(costs, {"pgd": 10.0}, {"pgd": 500}, peak_flops=1e12)
    assert out["cost/pgd_images_per_second"] == 50.0
    assert out["cost/pgd_tflops_per_second"] == 0.1  # 2 GFLOP x 500 images / 10 s
    assert out["cost/pgd_peak_fraction"] == 0.1
    assert "cost/pgd_peak_fraction" not in cost_metrics(costs, {"pgd": 10.0}, {"pgd": 500})  # a CPU: peak unknown


def test_flops_of_a_linear_model_and_the_compact_cnn() -> None:
    """FLOPs per image: 2 per multiply-add, the input gradient as dear as the forward for these
    layers, training's backward twice; the compact 28x28 CNN at 2.3 M multiply-adds (issue 28)."""
    import torch

    from robdistill.models.flops import model_flops
    from robdistill.models.zoo import build_model

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    flops = model_flops(net, (1, 8, 8))
    assert (flops.forward, flops.input_backward, flops.train_backward) == (1280.0, 1280.0, 2560.0)
    compact = build_model("compact-cnn", (1, 28, 28), 10, (0.5,), (0.5,))
    assert model_flops(compact, (1, 28, 28)).forward / 2 == 2_335_184
    assert compact.training and all(p.grad is None for p in compact.parameters())  # left as it was


def test_compare_orders_attacks_as_the_suites_do() -> None:
    """FGSM before PGD, CW and AutoAttack (it used to come after AutoAttack, alphabetically)."""
    from robdistill.tracking.search import accuracy_columns

    run = SimpleNamespace(data=SimpleNamespace(metrics={f"acc/{k}": 0.5 for k in
                                                        ("autoattack", "worst", "cw", "fgsm", "clean", "pgd", "zeta")}))
    assert accuracy_columns([run]) == ["acc/clean", "acc/fgsm", "acc/pgd", "acc/cw", "acc/autoattack", "acc/zeta",
                                       "acc/worst"]


def test_an_evaluation_logs_flops_per_image_from_its_passes() -> None:
    import torch

    import robdistill as rd

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    result = rd.evaluate(net, rd.load_dataset("digits"), attacks=rd.attacks.PGD(eps=0.1, steps=3), n_eval=32,
                         progress=False)
    cost = result.costs["pgd"]
    assert cost["forward_per_sample"] > 0 and cost["backward_per_sample"] > 0  # only the clean-correct are attacked
    assert cost["gflop_per_sample"] * 1e9 == pytest.approx(1280 * (cost["forward_per_sample"]
                                                                  + cost["backward_per_sample"]))


def test_a_training_epoch_logs_its_passes_rate_and_flops() -> None:
    """Standard training: one forward and one backward per image, so the FLOPs per image are the
    forward's plus a training backward's (input and weight gradients); an AT epoch adds its attack's."""
    import robdistill as rd
    from robdistill.models.flops import model_flops

    data = rd.load_dataset("digits")
    standard = rd.train_teacher("standard", data, epochs=1, train_subset=128, progress=False)
    epoch = standard.history[-1]
    assert (epoch["train/forward_per_image"], epoch["train/backward_per_image"]) == (1.0, 1.0)
    flops = model_flops(standard, data.info.shape)
    assert epoch["train/gflop_per_image"] * 1e9 == pytest.approx(flops.forward + flops.train_backward)
    assert epoch["train/images_per_second"] > 0 and epoch["train/tflops_per_second"] > 0
    at = rd.train_teacher("at", data, epochs=1, train_subset=128, attack_steps=3, attack_step_size=0.04,
                          progress=False).history[-1]
    assert at["train/backward_per_image"] == 4.0  # 3 attack steps (input gradients) and the weights' step
    assert at["train/forward_per_image"] >= 4.0
