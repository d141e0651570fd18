"""Teachers from files (robdistill.sources), on digits: TorchScript archives and state dicts with
their architecture are distilled from and evaluated like trained teachers, their SHA-256 logged;
bad files (an HTML page, a truncated file, a foreign pickle) and failed integrity checks (hash,
expected clean accuracy, determinism, probabilities) are one line, exit status 2, nothing written,
and a pickle's payload never runs."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import robdistill as rd
from robdistill.core.errors import UserError
from robdistill.sources import SourceOptions, find_source
from robdistill.models.files import sha256_of

from sources_helpers import (BAD_FILE_MESSAGES, TINY_EVAL, TINY_STUDENT, assert_nothing_written, assert_ok,  # noqa: I001
                      assert_one_line_error, invoke, runs, sha256, write_bad_files)

pytestmark = pytest.mark.usefixtures("no_network")


def clean_accuracy(model: nn.Module, n: int) -> float:
    test = rd.load_dataset("digits").test.head(n)
    with torch.no_grad():
        return (model.eval()(test.x).argmax(1) == test.y).float().mean().item()


# -- which source claims a spec -------------------------------------------------------------------

def test_every_spec_is_claimed_by_one_source(digits_model_files, tmp_path: Path) -> None:
    files = digits_model_files
    assert find_source("alp").name == "recipe"
    assert find_source("teachers/alp.toml").name == "recipe"
    assert find_source("robustbench:Wong2020Fast").name == "robustbench"
    assert find_source(str(files["torchscript"])).name == "torchscript"
    assert find_source(str(files["state_dict"]), SourceOptions(arch="small-cnn")).name == "state-dict"
    assert find_source(str(files["state_dict"])).name == "checkpoint"  # which then asks for --teacher-model
    assert find_source(str(tmp_path / "absent.pt")).name == "checkpoint"  # which says it does not exist
    with pytest.raises(UserError, match="is not a file"):
        find_source("alp", SourceOptions(arch="small-cnn"))


# -- TorchScript and state-dict teachers, end to end ----------------------------------------------

@pytest.mark.slow
def test_torchscript_teacher_run_logs_its_hash(workdir: Path, digits_model_files) -> None:
    """`run --teacher <TorchScript>` distils and attacks it; the expected clean accuracy (the
    measured one) passes the gate, and every run carries the file's hash."""
    path = digits_model_files["torchscript"]
    expected = clean_accuracy(digits_model_files["model"], 16)
    result = invoke("run", "--teacher", str(path), *TINY_STUDENT, *TINY_EVAL, "--expect-clean", f"{expected:.4f}",
                    "--teacher-sha256", sha256(path))
    assert_ok(result)
    assert f"sha256 {sha256(path)}" in result.output
    (parent,) = runs(workdir, "run")
    assert parent.data.tags["teacher_source"] == "torchscript"
    assert parent.data.tags["teacher_sha256"] == sha256(path)
    assert parent.data.tags["teacher_id"] == str(path)
    assert parent.data.tags["teacher"] == "cnn_scripted"
    params = parent.data.params
    assert params["teacher.source"] == "torchscript" and params["teacher.sha256"] == sha256(path)
    assert float(params["teacher.expected_clean"]) == pytest.approx(expected, abs=1e-4)
    assert float(params["teacher.gate_clean_acc"]) == pytest.approx(expected)
    for stage in ("student", "evaluation"):
        for run in runs(workdir, stage):
            assert run.data.tags["teacher_sha256"] == sha256(path), stage
    teacher_eval = [r for r in runs(workdir, "evaluation") if r.data.tags["role"] == "teacher"]
    assert float(teacher_eval[0].data.metrics["acc/clean"]) == pytest.approx(expected)
    assert not runs(workdir, "teacher")  # an external teacher is loaded, not trained
    assert list((workdir / "cache" / "students").glob("digits-cnn_scripted-keep-default-s0-*.pt"))


@pytest.mark.slow
def test_state_dict_teacher_distill_and_evaluate(workdir: Path, digits_model_files) -> None:
    """`distill --teacher <state dict> --teacher-model small-cnn`, then `evaluate` of the state dict
    (with --model), the TorchScript file and the distilled student's checkpoint together."""
    state = digits_model_files["state_dict"]
    assert_ok(invoke("distill", "--teacher", str(state), "--teacher-model", "small-cnn", *TINY_STUDENT))
    (parent,) = runs(workdir, "distill")
    assert parent.data.tags["teacher_source"] == "state-dict"
    assert parent.data.tags["teacher_sha256"] == sha256(state)
    assert parent.data.params["teacher.arch"] == "small-cnn"
    (student_run,) = runs(workdir, "student")
    assert student_run.data.tags["teacher_sha256"] == sha256(state)
    student = next((workdir / "cache" / "students").glob("*.pt"))
    scripted = digits_model_files["torchscript"]
    result = invoke("evaluate", str(state), str(scripted), str(student), "--model", "small-cnn", *TINY_EVAL,
                    "--quiet", "--sha256", sha256(state), "--sha256", sha256(scripted), "--sha256", sha256(student))
    assert_ok(result)
    evaluations = {r.data.tags["model"]: r for r in runs(workdir, "evaluation") if "model" in r.data.tags}
    assert set(evaluations) == {"state-dict:cnn_state", "torchscript:cnn_scripted", f"student:{student.stem}"}
    for name, path in (("state-dict:cnn_state", state), ("torchscript:cnn_scripted", scripted),
                       (f"student:{student.stem}", student)):
        assert evaluations[name].data.tags["model_sha256"] == sha256(path)
        assert evaluations[name].data.params["model.sha256"] == sha256(path)
    # the same network twice (state dict, TorchScript): the same clean accuracy
    accuracy = {n: r.data.metrics["acc/clean"] for n, r in evaluations.items()}
    assert accuracy["state-dict:cnn_state"] == accuracy["torchscript:cnn_scripted"]


def test_timm_state_dict_is_a_bare_timm_model(tmp_path: Path) -> None:
    """``timm:<name>`` takes a bare timm state dict; the dataset's normalisation is put in front."""
    import timm

    net = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3},
               tmp_path / "timm.pth")
    teacher = rd.load_teacher(tmp_path / "timm.pth", "digits", arch="timm:resnet18", n_check=32)
    assert teacher.provenance.details["layout"] == "timm"
    x = rd.load_dataset("digits").test.x[:4]
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), net.eval()((x - 0.5) / 0.5))
    with pytest.raises(UserError, match="does not fit timm:resnet34"):
        rd.load_teacher(tmp_path / "timm.pth", "digits", arch="timm:resnet34")


# -- bad files: one line, exit 2, nothing written, nothing run ------------------------------------

@pytest.mark.parametrize("kind", list(BAD_FILE_MESSAGES))
def test_bad_files_are_one_line_and_run_nothing(workdir: Path, kind: str) -> None:
    bad = write_bad_files(workdir / "files")
    path = str(bad[kind])
    commands = [["run", "--teacher", path, *TINY_STUDENT, *TINY_EVAL],
                ["run", "--teacher", path, "--teacher-model", "small-cnn", *TINY_STUDENT, *TINY_EVAL],
                ["distill", "--teacher", path, *TINY_STUDENT],
                ["evaluate", path, *TINY_EVAL],
                ["evaluate", path, "--model", "small-cnn", *TINY_EVAL]]
    for args in commands:
        assert_one_line_error(invoke(*args), path, BAD_FILE_MESSAGES[kind])
    with pytest.raises(UserError, match=BAD_FILE_MESSAGES[kind]):
        rd.load_teacher(path, "digits")
    assert not bad["marker"].exists(), "a pickle's payload ran"
    assert_nothing_written(workdir)


def test_the_foreign_pickle_payload_is_real(tmp_path: Path) -> None:
    """The pickles above really would run code: plain pickle.load creates the marker."""
    bad = write_bad_files(tmp_path)
    with open(bad["foreign-pickle"], "rb") as handle:
        pickle.load(handle)
    assert bad["marker"].exists()


def test_plain_state_dict_without_architecture(workdir: Path, digits_model_files) -> None:
    path = str(digits_model_files["state_dict"])
    assert_one_line_error(invoke("run", "--teacher", path, *TINY_EVAL), "not a robdistill checkpoint",
                          "--teacher-model")
    assert_one_line_error(invoke("run", "--teacher", path, "--teacher-model", "lenet", *TINY_EVAL),
                          "does not fit robdistill's lenet", "missing")
    assert_one_line_error(invoke("run", "--teacher", path, "--teacher-model", "nope", *TINY_EVAL),
                          "unknown model 'nope'")
    assert_one_line_error(invoke("run", "--teacher", str(workdir / "absent.pt"), *TINY_EVAL), "does not exist")
    assert_nothing_written(workdir)


# -- the integrity gate ---------------------------------------------------------------------------

def test_hash_mismatch_is_one_line(workdir: Path, digits_model_files) -> None:
    path = str(digits_model_files["torchscript"])
    wrong = "0" * 64
    assert_one_line_error(invoke("run", "--teacher", path, "--teacher-sha256", wrong, *TINY_EVAL),
                          f"has SHA-256 {sha256(Path(path))}, not the expected {wrong}")
    assert_one_line_error(invoke("evaluate", path, "--sha256", wrong, *TINY_EVAL), "not the expected")
    assert_one_line_error(invoke("evaluate", path, "--sha256", wrong, "--sha256", wrong, *TINY_EVAL),
                          "--sha256 given 2 times for 1 models")
    assert_one_line_error(invoke("run", "--teacher", path, "--teacher-sha256", "abc", *TINY_EVAL),
                          "64 hex digits")
    assert_nothing_written(workdir)


def test_expected_clean_mismatch_is_one_line(workdir: Path, digits_model_files) -> None:
    path = str(digits_model_files["torchscript"])
    line = assert_one_line_error(invoke("run", "--teacher", path, "--expect-clean", "0.05", *TINY_EVAL),
                                 "clean accuracy", "on the first 16 test images", "5.0% expected (--expect-clean)",
                                 "normalisation applied outside the model", "not logits", "--expect-clean off")
    assert "wrong --dataset" in line
    assert_one_line_error(invoke("run", "--teacher", path, "--expect-clean", "1.5", *TINY_EVAL),
                          "--expect-clean must be a fraction")
    assert_one_line_error(invoke("run", "--teacher", path, "--expect-clean", "lots", *TINY_EVAL),
                          "--expect-clean must be a fraction")
    assert_nothing_written(workdir)


class Dropout(nn.Module):
    """Random at evaluation too: F.dropout with training=True."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(x.flatten(1)[:, :10] * 10, p=0.5, training=True)


class Probabilities(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1)[:, :10] * 10).softmax(1)


class WrongClasses(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :7]


@pytest.mark.parametrize("module, message", [
    (Dropout(), "is not deterministic: two forwards of the same 16 test images in eval mode differ"),
    (Probabilities(), "outputs probabilities (non-negative, rows sum to 1), not logits"),
    (WrongClasses(), "outputs shape (16, 7) for 16 images, but the dataset has 10 classes"),
])
def test_gate_refuses_models_that_are_not_deterministic_logits(workdir: Path, module: nn.Module,
                                                               message: str) -> None:
    path = workdir / "model.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    assert_one_line_error(invoke("run", "--teacher", str(path), *TINY_STUDENT, *TINY_EVAL), message)
    with pytest.raises(UserError, match="deterministic|probabilities|classes"):
        rd.load_teacher(path, "digits")
    path.unlink()
    assert_nothing_written(workdir)


def test_external_teacher_takes_no_teacher_overrides(workdir: Path, digits_model_files) -> None:
    path = str(digits_model_files["torchscript"])
    assert_one_line_error(invoke("run", "--teacher", path, "--set", "teacher.epochs=2", *TINY_EVAL),
                          "--set teacher.epochs=2", "external teacher", "drop them")
    assert_one_line_error(invoke("train-teacher", "--teacher", path), "train-teacher trains recipes")
    assert_one_line_error(invoke("sweep", "--teachers", path, "--set", "teacher.epochs=2", "--seeds", "0", *TINY_EVAL),
                          "every teacher of the grid is external")
    with pytest.raises(UserError, match="external teacher"):
        rd.load_teacher(path, "digits", epochs=2)
    assert_nothing_written(workdir)


def test_precision_flag_spares_an_external_teacher(workdir: Path, digits_model_files, monkeypatch) -> None:
    """--precision sets the recipes' precision; an external teacher has none to set (no error)."""
    import robdistill.experiments.pipeline as pipeline

    seen = {}

    def stop(settings, spec, **kwargs):
        seen["spec"] = spec
        raise UserError("stopped here")

    monkeypatch.setattr(pipeline, "run_experiment", stop)
    assert_one_line_error(invoke("run", "--teacher", str(digits_model_files["torchscript"]), "--precision", "fp32",
                                 *TINY_EVAL), "stopped here")
    overrides = seen["spec"].overrides
    assert not overrides.stage("teacher") and overrides.stage("student")["precision"] == "fp32"
    assert "student.precision=fp32" in overrides.texts


# -- Python -------------------------------------------------------------------------------------

def test_load_teacher_attaches_provenance_and_logs_it(digits_model_files) -> None:
    path = digits_model_files["torchscript"]
    expected = clean_accuracy(digits_model_files["model"], 100)
    teacher = rd.load_teacher(path, "digits", sha256=sha256_of(path), expect_clean=expected, n_check=100)
    prov = teacher.provenance
    assert (prov.source, prov.id, prov.sha256) == ("torchscript", str(path), sha256(path))
    assert prov.details["gate_clean_acc"] == pytest.approx(expected) and prov.details["gate_clean_n"] == 100

    class Collect:
        def __init__(self):
            self.params, self.tags = {}, {}

        def log_params(self, prefix, values):
            self.params.update({f"{prefix}.{k}": v for k, v in values.items()})

        def set_tag(self, key, value):
            self.tags[key] = value

        def log_metrics(self, values, step=None):
            pass

        def log_json(self, payload, artifact_file):
            pass

        def log_table(self, columns, artifact_file):
            pass

        def log_file(self, path, artifact_path=None):
            pass

    tracker = Collect()
    data = rd.load_dataset("digits")
    student = rd.distill(teacher, data, epochs=1, train_subset=64, tracker=tracker)
    assert tracker.params["teacher.sha256"] == sha256(path) and tracker.tags["teacher_source"] == "torchscript"
    rd.evaluate(teacher, data, suite="smoke", n_eval=8, tracker=tracker)
    assert tracker.tags["model_sha256"] == sha256(path)
    assert isinstance(student, nn.Module)
