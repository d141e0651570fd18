"""PyTorch distributed: a job under ``torchrun`` (2 CPU processes, gloo) ends where a single
process ends -- same teacher and student weights to float tolerance, the same evaluation flags --
with one set of MLflow runs (rank 0's) and one printed report; and an evaluation resumes after its
last finished attack or AutoAttack chunk."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from robdistill.core import distributed
from robdistill.core.state import TrainingState
from robdistill.eval import runner as evaluation
from robdistill.models.checkpoints import load_checkpoint
from robdistill.data.datasets import load_dataset
from robdistill.models.zoo import build_model
from robdistill.config.recipes import parse_recipe

DETERMINISTIC_SUITE = """description = "deterministic suite: exact equality between sharded and whole evaluation"
n_eval = 120
batch_size = 50
seed = 0

[[attack]]
name = "fgsm"

[[attack]]
name = "pgd"
steps = 5
random_start = false
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _robdistill(args: list[str], cwd: Path, nproc: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        command = [sys.executable, "-m", "robdistill.cli", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                   "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "robdistill.cli", *args]
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _runs(store: Path) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    return mlflow.search_runs(experiment_names=["robdistill"], output_format="list")


@pytest.mark.slow
def test_torchrun_two_processes_match_a_single_process(workdir: Path) -> None:
    (workdir / "det.toml").write_text(DETERMINISTIC_SUITE)
    args = ["run", "--teacher", "at", "--perturb", "nonmax-shuffle", "--set", "teacher.epochs=2",
            "--set", "teacher.train_subset=600", "--set", "teacher.attack_steps=3", "--set", "student.epochs=2",
            "--suite", str(workdir / "det.toml"), "--quiet", "--device", "cpu", "--no-registry"]
    jobs = {}
    for name, nproc in (("single", 1), ("ddp", 2)):
        jobs[name] = _robdistill([*args, "--cache-dir", str(workdir / name),
                                  "--tracking-uri", f"sqlite:///{workdir / name}.db"], workdir, nproc)

    # one report, printed by rank 0 only
    assert jobs["ddp"].stdout.count("sanity checks:") == 1
    # teacher (PGD adversarial training) and student: the same weights to float tolerance. The
    # training attack's random start is drawn per rank, so the AT teacher is compared loosely.
    for role, atol in (("teachers", 0.05), ("students", 0.05)):
        (a, _), (b, _) = (load_checkpoint(next((workdir / name / role).glob("*.pt"))) for name in ("single", "ddp"))
        diffs = [(x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values())]
        assert max(diffs) < atol, (role, max(diffs))

    # only rank 0 logged: the same runs, all finished
    single, ddp = _runs(workdir / "single.db"), _runs(workdir / "ddp.db")
    assert sorted(r.info.run_name for r in ddp) == sorted(r.info.run_name for r in single)
    assert all(r.info.status == "FINISHED" for r in ddp)
    metric = lambda runs: next(r for r in runs if r.data.tags.get("stage") == "teacher").data.metrics  # noqa: E731
    assert metric(ddp)["train/acc"] == pytest.approx(metric(single)["train/acc"], abs=0.03)


@pytest.mark.slow
def test_torchrun_standard_training_matches_a_single_process_closely(workdir: Path) -> None:
    """No randomness beyond the data order, which every rank shares: the global batch is split,
    the loss weighted by shard size, the gradients averaged -- the same steps as one process."""
    args = ["train-teacher", "--teacher", "standard", "--set", "epochs=2", "--set", "train_subset=500",
            "--set", "batch_size=64", "--set", "optimizer=sgd", "--set", "lr=0.05", "--quiet", "--device", "cpu",
            "--no-registry"]  # SGD: Adam would amplify float-rounding differences of near-zero gradients
    for name, nproc in (("single", 1), ("ddp", 2)):
        _robdistill([*args, "--cache-dir", str(workdir / name), "--tracking-uri", f"sqlite:///{workdir / name}.db"],
                    workdir, nproc)
    (a, pa), (b, pb) = (load_checkpoint(next((workdir / name / "teachers").glob("*.pt"))) for name in ("single", "ddp"))
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)
    for key in ("train/loss", "train/acc", "val/acc"):
        assert pa["extra"]["final_metrics"][key] == pytest.approx(pb["extra"]["final_metrics"][key], abs=1e-4)

    # the evaluation split over 2 ranks and merged from per-sample flags prints the same table
    checkpoint = next((workdir / "single" / "teachers").glob("*.pt"))
    (workdir / "det.toml").write_text(DETERMINISTIC_SUITE)
    tables = [_robdistill(["evaluate", str(checkpoint), "--suite", str(workdir / "det.toml"),
                           "--quiet", "--device", "cpu", "--tracking-uri", f"sqlite:///{workdir / 'eval'}{n}.db"],
                          workdir, n).stdout for n in (1, 2)]
    table = lambda text: [line for line in text.splitlines() if line.startswith(("teacher:", "model "))]  # noqa: E731
    assert table(tables[0]) and table(tables[0]) == table(tables[1])


def test_outside_torchrun_the_helpers_are_identities() -> None:
    assert distributed.context() == distributed.DistContext() and distributed.is_main()
    x = torch.arange(10)
    assert torch.equal(distributed.gather_rows(x, 10), x)
    assert distributed.broadcast_object("a") == "a" and distributed.all_gather_object(3) == [3]
    assert distributed.all_reduce_sum({"a": 1.5}) == {"a": 1.5}
    # the rows of rank r of a world of w are r::w -- together exactly the batch, each once
    rows = [list(range(10))[distributed.local_rows(10, distributed.DistContext(r, 3))] for r in range(3)]
    assert sorted(sum(rows, [])) == list(range(10))


def _tiny_model():
    info = load_dataset("digits").info
    torch.manual_seed(0)
    return build_model("small-cnn", info.shape, info.num_classes, info.mean, info.std).eval()


class Stop(Exception):
    pass


def test_autoattack_evaluation_resumes_after_its_last_chunk(tmp_path: Path, monkeypatch) -> None:
    data = load_dataset("digits").test.head(48)
    model = _tiny_model()
    (tmp_path / "aa.toml").write_text('description = "aa"\nn_eval = 48\nbatch_size = 16\nautoattack_chunk = 16\n'
                                      '\n[[attack]]\n'
                                      'name = "fgsm"\n\n[[attack]]\nname = "autoattack"\nversion = "custom"\n'
                                      'attacks = ["apgd-ce"]\n')
    suite = parse_recipe("suite", str(tmp_path / "aa.toml"))
    reference = evaluation.run_suite(model, data, suite, 0.1, progress=False,
                                    state=TrainingState(tmp_path / "reference.pt"))

    calls = []
    real_piece = evaluation.attack_piece

    stop_at = [3]  # fgsm, then AutoAttack chunk 1; stop inside chunk 2 (once)

    def piece(attack, model, x, y, batch_size, progress):
        calls.append((attack.name, len(y)))
        if len(calls) == stop_at[0]:
            stop_at[0] = -1
            raise Stop
        return real_piece(attack, model, x, y, batch_size, progress)

    monkeypatch.setattr(evaluation, "attack_piece", piece)
    state = TrainingState(tmp_path / "eval.pt")
    with pytest.raises(Stop):
        evaluation.run_suite(model, data, suite, 0.1, progress=False, state=state)
    saved = torch.load(state.path, weights_only=True)
    assert set(saved["done"]) == {"fgsm"} and len(saved["partial"]["autoattack"]) == 1

    calls.clear()
    resumed = evaluation.run_suite(model, data, suite, 0.1, progress=False, state=state, resume=True)
    # only the two chunks left, then the eps = 0 check (every attack at radius 0, never saved)
    assert calls == [("autoattack", 16), ("autoattack", 16), ("fgsm", 48), ("autoattack", 48)]
    for key in ("fgsm", "autoattack"):
        assert torch.equal(resumed.robust[key], reference.robust[key])
    assert torch.equal(resumed.clean, reference.clean)
    assert all(c.passed for c in resumed.checks)


def test_split_evaluation_merges_to_the_whole_one(digits_teacher, workdir: Path) -> None:
    """`evaluate --shard i/n` on (pretend) machines sharing a store, then `evaluate-report`: the
    same per-sample flags and table as one evaluation of the whole test set."""
    from click.testing import CliRunner

    from robdistill.cli.main import main
    from robdistill.experiments.pipeline import merged_evaluation

    _, _, teacher = digits_teacher
    (workdir / "det.toml").write_text(DETERMINISTIC_SUITE)
    runner = CliRunner()
    common = [str(teacher.path), "--suite", str(workdir / "det.toml"), "--quiet", "--device", "cpu"]
    whole = runner.invoke(main, ["evaluate", *common])
    assert whole.exit_code == 0, whole.output
    names = set()
    for i in (1, 2, 3):
        out = runner.invoke(main, ["evaluate", *common, "--shard", f"{i}/3"])
        assert out.exit_code == 0, out.output
        names.add(out.stdout.split("robdistill evaluate-report ")[1].split()[0])
    assert len(names) == 1  # every shard computes the same evaluation name
    name = names.pop()

    merged = merged_evaluation(None, "robdistill", name)
    reference = next(r for r in _runs(workdir / "mlflow.db") if r.data.tags.get("stage") == "evaluation"
                     and "eval_name" not in r.data.tags)
    (result,) = merged.values()
    assert result.n == 120 and all(c.passed for c in result.checks)
    for key in ("clean", "fgsm", "pgd", "worst"):
        assert result.accuracies()[key].value == pytest.approx(reference.data.metrics[f"acc/{key}"])

    report = runner.invoke(main, ["evaluate-report", name])
    assert report.exit_code == 0, report.output
    row = lambda text: next(line for line in text.splitlines() if line.startswith("teacher:"))  # noqa: E731
    assert row(report.stdout) == row(whole.stdout)  # the results table's row (accuracies and intervals)

    # a shard that never ran is named
    out = runner.invoke(main, ["evaluate", *common, "--shard", "1/2"])
    missing = runner.invoke(main, ["evaluate-report", out.stdout.split("robdistill evaluate-report ")[1].split()[0]])
    assert missing.exit_code == 2 and "shard 2/2" in missing.stderr


def test_a_state_written_by_another_job_size_is_refused(tmp_path: Path) -> None:
    """``fit --resume`` outside torchrun: no state file starts afresh, a single-process file (also an
    older one without ``world_size``) resumes, a file written by 2 processes is refused."""
    import torch.nn.functional as F
    from torch import nn

    from robdistill.core.errors import UserError
    from robdistill.train.loop import fit
    from robdistill.train.objectives import LossOutput

    train = load_dataset("digits").train.head(64)
    recipe = parse_recipe("teacher", "standard", ["epochs=1", "batch_size=32"])

    def step(m, idx, x, y):
        logits = m(x)
        return LossOutput(F.cross_entropy(logits, y), logits.detach(), {})

    def resume(state: TrainingState) -> list[dict[str, float]]:
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        return fit(model, train, recipe, step, seed=0, desc="t", progress=False, state=state, resume=True)

    state = TrainingState(tmp_path / "t.state.pt")
    history = resume(state)  # no state file: a fresh start, which writes one
    saved = torch.load(state.path, weights_only=True)
    assert saved["epoch"] == 1 and saved["world_size"] == 1
    del saved["world_size"]  # an older single-process file
    state.save(saved)
    assert resume(state) == history  # resumed after its last epoch: nothing left to train
    state.save({**saved, "world_size": 2})
    with pytest.raises(UserError, match="written by 2 process"):
        resume(state)


def test_empty_rows_are_attacked_as_nothing() -> None:
    """A rank or shard can own no rows (more processes than images): every attack returns empty flags."""
    from robdistill.attacks import build_attack

    model = _tiny_model()
    x, y = torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)
    assert evaluation.clean_flags(model, x, y, 16).shape == (0,)
    for name in ("fgsm", "pgd", "cw"):
        assert build_attack(name, 0.1).run(model, x, y).robust.shape == (0,)
    piece = evaluation.attack_piece(build_attack("autoattack", 0.1), model, x, y, 16, False)
    assert piece["robust"].shape == (0,) and piece["box"]


def test_more_shards_than_images_is_a_one_line_error(digits_teacher, workdir: Path) -> None:
    from click.testing import CliRunner

    from robdistill.cli.main import main

    _, _, teacher = digits_teacher
    out = CliRunner().invoke(main, ["evaluate", str(teacher.path), "--suite", "smoke", "--n-eval", "3",
                                    "--shard", "4/4", "--quiet"])
    assert out.exit_code == 2 and "more shards than the 3 test images" in out.stderr


@pytest.mark.slow
def test_torchrun_sigkill_then_resume_ends_like_an_uninterrupted_torchrun(workdir: Path) -> None:
    """Each rank's random streams (its training attack) are saved and restored: a killed and
    resumed 2-process AT training ends with the very weights of an uninterrupted one."""
    import signal
    import time

    args = ["train-teacher", "--teacher", "at", "--set", "epochs=4", "--set", "train_subset=400",
            "--set", "attack_steps=2", "--quiet", "--device", "cpu", "--no-registry"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    command = lambda name, *extra: [*torchrun, "--master-port", str(_free_port()), "-m", "robdistill.cli", *args,  # noqa: E731
                                    "--cache-dir", str(workdir / name),
                                    "--tracking-uri", f"sqlite:///{workdir / name}.db", *extra]
    process = subprocess.Popen(command("killed"), cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    state_dir = workdir / "killed" / "state"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        states = list(state_dir.glob("*.state.pt")) if state_dir.is_dir() else []
        try:
            if states and torch.load(states[0], weights_only=True)["epoch"] >= 1:
                break
        except Exception:  # caught mid-rename
            pass
        time.sleep(0.05)
    assert process.poll() is None, "training finished before it could be killed"
    # SIGKILL torchrun and both ranks (the ranks run in their own process groups: a SIGKILLed
    # torchrun cannot take them down, so they are found by their command line)
    marker = str(workdir / "killed")
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    process.wait()
    time.sleep(1)  # let the killed ranks go
    saved = torch.load(next(state_dir.glob("*.state.pt")), weights_only=True)
    assert saved["world_size"] == 2 and saved["epoch"] < 4
    assert not list((workdir / "killed").glob("teachers/*.pt"))  # killed before its checkpoint: --resume trains

    assert not list((workdir / "killed").glob("teachers/*.pt"))  # no rank survived to finish the job
    resumed = subprocess.run(command("killed", "--resume"), cwd=workdir, env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "reused" not in resumed.stdout  # it trained: from the saved epoch on
    _robdistill([*args, "--cache-dir", str(workdir / "fresh"), "--tracking-uri", f"sqlite:///{workdir / 'fresh'}.db"],
                workdir, 2)
    (a, pa), (b, pb) = (load_checkpoint(next((workdir / name / "teachers").glob("*.pt"))) for name in ("killed", "fresh"))
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
