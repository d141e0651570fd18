"""Fault tolerance: training state after every epoch, and --resume ending exactly where an
uninterrupted run ends -- in-process, and with a real process killed by SIGKILL mid-training."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from robdistill.models.checkpoints import load_checkpoint
from robdistill.train.loop import TIMED_METRICS
from robdistill.data.datasets import load_dataset
from robdistill.core.errors import UserError
from robdistill.models.zoo import build_model
from robdistill.config.recipes import parse_recipe
from robdistill.core.state import TrainingState
from robdistill.train.loop import fit
from robdistill.train.objectives import OBJECTIVES, TrainContext
from robdistill.core.modes import private_generator


class Interrupt(Exception):
    pass


def tiny_fit(state: TrainingState | None, resume: bool, stop_after: int | None = None):
    splits = load_dataset("digits")
    train = splits.train.head(200)
    info = splits.info
    torch.manual_seed(0)
    model = build_model("small-cnn", info.shape, info.num_classes, info.mean, info.std)
    recipe = parse_recipe("teacher", "at", ["epochs=3", "batch_size=50", "attack_steps=2"])
    ctx = TrainContext(eps=0.1, step_size=0.05, steps=2, generator=private_generator(1, "cpu"))
    if state is not None:
        state.generators["attack"] = ctx.generator

    def on_epoch_end(epoch, metrics):
        if stop_after is not None and epoch == stop_after:
            raise Interrupt

    history = fit(model, train, recipe, lambda m, idx, x, y: OBJECTIVES.get("at")(m, x, y, ctx), seed=0,
                  desc="t", progress=False, state=state, resume=resume, on_epoch_end=on_epoch_end)
    return model, history


def test_resume_in_process_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    reference, reference_history = tiny_fit(None, resume=False)
    state = TrainingState(tmp_path / "t.state.pt")
    with pytest.raises(Interrupt):
        tiny_fit(state, resume=False, stop_after=2)
    # the state after epoch 1 was written; epoch 2 raised before its save
    assert torch.load(state.path, weights_only=True)["epoch"] == 1
    resumed, history = tiny_fit(TrainingState(state.path), resume=True)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    drop = lambda h: [{k: v for k, v in m.items() if k not in TIMED_METRICS} for m in h]  # noqa: E731
    assert drop(history) == drop(reference_history)


def test_unreadable_state_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.state.pt"
    path.write_bytes(b"junk")
    with pytest.raises(UserError, match="unreadable"):
        TrainingState(path).load()


def _teacher_command(cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "robdistill.cli", "train-teacher", "--teacher", "at", "--set", "epochs=4",
            "--set", "train_subset=600", "--quiet", "--cache-dir", str(cache), *extra]


@pytest.mark.slow
def test_sigkill_then_resume_ends_like_an_uninterrupted_run(workdir: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cache = workdir / "killed"
    process = subprocess.Popen(_teacher_command(cache), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    state_dir = cache / "state"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:  # wait for epoch 2's state, then kill
        states = list(state_dir.glob("*.state.pt")) if state_dir.is_dir() else []
        if states and torch.load(states[0], weights_only=True)["epoch"] >= 2:
            break
        time.sleep(0.2)
    assert process.poll() is None, "training finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list((cache / "teachers").glob("*.pt")) if (cache / "teachers").is_dir() else True

    resumed = subprocess.run(_teacher_command(cache, "--resume"), env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(state_dir.glob("*.state.pt"))  # cleared once the checkpoint is written
    fresh = subprocess.run(_teacher_command(workdir / "fresh"), env=env, capture_output=True, text=True,
                           timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-2000:]

    (a, pa), (b, pb) = (load_checkpoint(next((workdir / d / "teachers").glob("*.pt"))) for d in ("killed", "fresh"))
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    final = lambda p: {k: v for k, v in p["extra"]["final_metrics"].items() if k not in TIMED_METRICS}  # noqa: E731
    assert final(pa) == final(pb)

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    resumed_runs = [r for r in runs if r.data.tags.get("resumed") == "true"]
    assert len(resumed_runs) == 1  # the killed run itself, continued and finished
    history = mlflow.MlflowClient().get_metric_history(resumed_runs[0].info.run_id, "train/loss")
    assert {m.step for m in history} == {1, 2, 3, 4}  # an epoch cut short may be logged twice


AA_SUITE = """description = "resumable AutoAttack"
n_eval = 256
batch_size = 32
autoattack_chunk = 32

[[attack]]
name = "fgsm"

[[attack]]
name = "autoattack"
version = "custom"
attacks = ["apgd-ce"]
"""


@pytest.mark.slow
def test_sigkill_during_autoattack_then_resume_ends_like_an_uninterrupted_evaluation(digits_teacher,
                                                                                    workdir: Path) -> None:
    _, _, teacher = digits_teacher
    (workdir / "aa.toml").write_text(AA_SUITE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = lambda cache, *extra: [sys.executable, "-m", "robdistill.cli", "evaluate", str(teacher.path),  # noqa: E731
                                     "--suite", str(workdir / "aa.toml"), "--quiet", "--cache-dir", str(cache), *extra]
    cache = workdir / "killed"
    process = subprocess.Popen(command(cache), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_dir = cache / "state"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:  # two AutoAttack chunks saved: kill
        states = list(state_dir.glob("eval-*.state.pt")) if state_dir.is_dir() else []
        try:
            saved = torch.load(states[0], weights_only=True) if states else None
        except Exception:  # caught mid-rename: look again
            saved = None
        if saved and len(saved.get("partial", {}).get("autoattack", [])) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the evaluation finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()

    resumed = subprocess.run(command(cache, "--resume"), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(state_dir.glob("eval-*.state.pt"))  # cleared once logged
    fresh = subprocess.run(command(workdir / "fresh"), env=env, capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    row = lambda text: next(line for line in text.splitlines() if line.startswith("teacher:"))  # noqa: E731
    assert row(resumed.stdout) == row(fresh.stdout)

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    evals = [r for r in runs if r.data.tags.get("stage") == "evaluation"]
    assert sum(r.data.tags.get("resumed") == "true" for r in evals) == 1  # the killed evaluation, continued
    assert any(r.info.status == "KILLED" and r.data.tags.get("stage") == "evaluate" for r in runs)
