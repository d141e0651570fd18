"""``robustbench:<Name>`` teachers (robdistill.sources.robustbench), nothing downloaded: a real
RobustBench architecture (Wong2020Fast, a PreActResNet-18 of the CIFAR-10 L-inf zoo) with random
weights, saved by the test in RobustBench's layout and format, loads, is distilled from for one
epoch on small CIFAR-10-format files and is evaluated, with the file's hash logged. Its random
weights fail RobustBench's expected clean accuracy (83.3%): the gate's one-line error, until
``--expect-clean off``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import robdistill as rd
from robdistill.core.errors import UserError
from robdistill.sources import robustbench

from sources_helpers import (TINY_EVAL, TINY_STUDENT, assert_nothing_written, assert_ok,  # noqa: I001
                             assert_one_line_error, invoke, runs, sha256)

NAME = "Wong2020Fast"
pytestmark = [pytest.mark.usefixtures("no_network"),
              pytest.mark.skipif(not robustbench.installed(),
                                 reason="the optional robustbench extra is not installed (pip install -c "
                                        "constraints.txt -e '.[robustbench]' && pip install -c constraints.txt "
                                        "--no-deps robustbench==1.1.1)")]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """``<tmp>/models/cifar10/Linf/Wong2020Fast.pt``: random weights in RobustBench's own format
    (a ``state_dict`` entry with DataParallel's ``module.`` prefix, without the architecture's
    normalisation buffers, as the published file)."""
    zoo = robustbench.model_zoo()
    torch.manual_seed(0)
    model = zoo.model_dicts[zoo.BenchmarkDataset("cifar10")][zoo.ThreatModel("Linf")][NAME]["model"]()
    state = {f"module.{k}": v for k, v in model.state_dict().items() if k not in ("mu", "sigma")}
    path = robustbench.checkpoint_path(tmp_path / "models", "cifar10", "Linf", NAME)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state, "epoch": 15}, path)
    return tmp_path / "models"


def common(cifar10_root: Path, model_dir: Path) -> list[str]:
    return ["--dataset", "cifar10", "--data-root", str(cifar10_root), "--model-dir", str(model_dir)]


@pytest.mark.slow
def test_robustbench_teacher_run_and_evaluate(workdir: Path, cifar10_root: Path, model_dir: Path) -> None:
    path = robustbench.checkpoint_path(model_dir, "cifar10", "Linf", NAME)
    args = ["--teacher", f"robustbench:{NAME}", *common(cifar10_root, model_dir), "--set", "student.model=small-cnn",
            *TINY_STUDENT, *TINY_EVAL]
    # random weights: RobustBench's expected clean accuracy is refused, before anything is written
    assert_one_line_error(invoke("run", *args), f"robustbench:{NAME}: clean accuracy",
                          "83.3% expected (RobustBench's model info)", "normalisation applied outside the model",
                          "--expect-clean off")
    assert_nothing_written(workdir)

    # the teacher is attacked by `evaluate` below: here only its student
    result = invoke("run", *args, "--expect-clean", "off", "--teacher-sha256", sha256(path), "--skip-teacher-eval")
    assert_ok(result)
    (parent,) = runs(workdir, "run")
    tags, params = parent.data.tags, parent.data.params
    assert tags["teacher_source"] == "robustbench" and tags["teacher_id"] == f"robustbench:{NAME}"
    assert tags["teacher_sha256"] == sha256(path) and tags["teacher"] == f"robustbench-{NAME}"
    assert params["teacher.threat_model"] == "Linf" and params["teacher.path"] == str(path.resolve())
    roles = {r.data.tags["role"]: r for r in runs(workdir, "evaluation")}
    assert set(roles) == {"student"}
    assert roles["student"].data.tags["teacher_sha256"] == sha256(path)
    (student_run,) = runs(workdir, "student")
    assert student_run.data.tags["teacher_sha256"] == sha256(path)
    assert list((workdir / "cache" / "students").glob(f"cifar10-robustbench-{NAME}-keep-default-s0-*.pt"))

    assert_ok(invoke("evaluate", f"robustbench:{NAME}", *common(cifar10_root, model_dir), "--expect-clean", "off",
                     *TINY_EVAL, "--quiet"))
    (evaluation,) = [r for r in runs(workdir, "evaluation") if r.data.tags.get("model") == f"robustbench:{NAME}"]
    assert evaluation.data.tags["model_sha256"] == sha256(path)
    assert evaluation.data.params["model.source"] == "robustbench"


def test_load_teacher_in_python_and_distill(cifar10_root: Path, model_dir: Path) -> None:
    data = rd.load_dataset("cifar10", root=cifar10_root)
    teacher = rd.load_teacher(f"robustbench:{NAME}", data, model_dir=model_dir, expect_clean="off")
    path = robustbench.checkpoint_path(model_dir, "cifar10", "Linf", NAME)
    assert teacher.provenance.sha256 == sha256(path) and teacher.provenance.source == "robustbench"
    assert not teacher.training
    # RobustBench models take [0, 1] images: the normalisation is inside (Wong2020Fast's mu, sigma)
    torch.testing.assert_close(teacher.mu.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))
    student = rd.distill(teacher, data, epochs=1, train_subset=32, model="small-cnn")
    assert student(data.test.x[:2]).shape == (2, 10)
    with pytest.raises(UserError, match="83.3% expected"):
        rd.load_teacher(f"robustbench:{NAME}", data, model_dir=model_dir)


def test_robustbench_errors_are_one_line(workdir: Path, cifar10_root: Path, model_dir: Path) -> None:
    base = common(cifar10_root, model_dir)
    line = assert_one_line_error(invoke("run", "--teacher", "robustbench:Rice2020Overfitting", *base, *TINY_EVAL),
                                 "no checkpoint at", str(model_dir / "cifar10" / "Linf" / "Rice2020Overfitting.pt"),
                                 "download it yourself", "Google Drive")
    assert "robustbench.utils.load_model('Rice2020Overfitting'" in line
    assert_one_line_error(invoke("run", "--teacher", "robustbench:Wong2020Fsat", *base, *TINY_EVAL),
                          "RobustBench has no cifar10 Linf model 'Wong2020Fsat'", "did you mean Wong2020Fast")
    assert_one_line_error(invoke("run", "--teacher", f"robustbench:{NAME}", "--model-dir", str(model_dir), *TINY_EVAL),
                          "RobustBench has no digits models", "--dataset cifar10")
    assert_one_line_error(invoke("run", "--teacher", f"robustbench:{NAME}", *base, "--threat-model", "L2",
                                 *TINY_EVAL), "RobustBench has no cifar10 L2 model 'Wong2020Fast'")
    assert_one_line_error(invoke("run", "--teacher", "robustbench:Chen2020Adversarial", *base, *TINY_EVAL),
                          "an ensemble of 3 checkpoints")
    assert_one_line_error(invoke("run", "--teacher", "robustbench:Debenedetti2022Light_XCiT-S12", *base, *TINY_EVAL),
                          "timm's pretrained weights")
    assert_one_line_error(invoke("run", "--teacher", f"robustbench:{NAME}", *base, "--teacher-sha256", "1" * 64,
                                 *TINY_EVAL), "not the expected")
    path = robustbench.checkpoint_path(model_dir, "cifar10", "Linf", NAME)
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, path)
    assert_one_line_error(invoke("run", "--teacher", f"robustbench:{NAME}", *base, *TINY_EVAL),
                          f"does not fit robustbench:{NAME}'s architecture")
    path.write_text("<html><body>Google Drive can't scan this file for viruses.</body></html>")
    assert_one_line_error(invoke("evaluate", f"robustbench:{NAME}", *base, *TINY_EVAL), "is an HTML page")
    assert_nothing_written(workdir)


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, workdir: Path, cifar10_root: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "robustbench" else real(name, *a))
    robustbench.model_zoo.cache_clear()
    try:
        line = assert_one_line_error(invoke("run", "--teacher", f"robustbench:{NAME}", "--dataset", "cifar10",
                                            "--data-root", str(cifar10_root), *TINY_EVAL),
                                     f"robustbench:{NAME} needs the optional extra: pip install -e '.[robustbench]'")
        assert "--no-deps robustbench==1.1.1" in line
    finally:
        monkeypatch.undo()
        robustbench.model_zoo.cache_clear()
    assert_nothing_written(workdir)


def test_model_info_ships_clean_accuracies() -> None:
    assert robustbench.expected_clean("cifar10", "Linf", NAME) == pytest.approx(0.8334)
    assert robustbench.expected_clean("cifar10", "Linf", "no-such-model") is None


L2_NAME = "Rice2020Overfitting"  # a PreActResNet-18 of RobustBench's CIFAR-10 L2 leaderboard


@pytest.mark.slow
def test_an_l2_robustbench_teacher_is_read_from_the_l2_folder_and_attacked_in_l2(
        workdir: Path, cifar10_root: Path, tmp_path: Path) -> None:
    """`--threat-model l2` reads ``<model-dir>/cifar10/L2/<Name>.pt`` and runs every stage under L2 at
    CIFAR-10's L2 radius 0.5 (RobustBench's); the provenance says which leaderboard."""
    zoo = robustbench.model_zoo()
    torch.manual_seed(0)
    model = zoo.model_dicts[zoo.BenchmarkDataset("cifar10")][zoo.ThreatModel("L2")][L2_NAME]["model"]()
    path = robustbench.checkpoint_path(tmp_path / "models", "cifar10", "L2", L2_NAME)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items() if k not in ("mu", "sigma")}},
               path)
    base = common(cifar10_root, tmp_path / "models")
    result = invoke("run", "--teacher", f"robustbench:{L2_NAME}", *base, "--threat-model", "l2", "--expect-clean",
                    "off", "--set", "student.model=small-cnn", *TINY_STUDENT, *TINY_EVAL)
    assert_ok(result)
    assert "95% Wilson interval; L2 eps 0.5)" in result.stdout
    (parent,) = runs(workdir, "run")
    assert parent.data.params["teacher.threat_model"] == "L2" and parent.data.params["teacher.path"] == str(path.resolve())
    assert parent.data.tags["threat_model"] == "l2" and parent.data.params["eps"] == "0.5"
    # the same name under the default threat model is looked for on the L-inf leaderboard
    assert_one_line_error(invoke("run", "--teacher", f"robustbench:{L2_NAME}", *base, "--expect-clean", "off",
                                 *TINY_EVAL), "no checkpoint at", str(tmp_path / "models" / "cifar10" / "Linf"))
