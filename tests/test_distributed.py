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

from robdistill import distributed, evaluation
from robdistill.checkpoints import load_checkpoint
from robdistill.data import load_dataset
from robdistill.models import build_model
from robdistill.recipes import load_recipe
from robdistill.training import TrainingState

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
    suite = load_recipe("suite", str(tmp_path / "aa.toml"))
    reference = evaluation.evaluate(model, data, suite, 0.1, progress=False,
                                    state=TrainingState(tmp_path / "reference.pt"))

    calls = []
    real_piece = evaluation._attack_piece

    def piece(attack, model, x, y, batch_size, progress):
        calls.append((attack.name, len(y)))
        if len(calls) == 3:  # fgsm, then AutoAttack chunk 1; stop inside chunk 2
            raise Stop
        return real_piece(attack, model, x, y, batch_size, progress)

    monkeypatch.setattr(evaluation, "_attack_piece", piece)
    state = TrainingState(tmp_path / "eval.pt")
    with pytest.raises(Stop):
        evaluation.evaluate(model, data, suite, 0.1, progress=False, state=state)
    saved = torch.load(state.path, weights_only=True)
    assert set(saved["done"]) == {"fgsm"} and len(saved["partial"]["autoattack"]) == 1

    calls.clear()
    resumed = evaluation.evaluate(model, data, suite, 0.1, progress=False, state=state, resume=True)
    assert calls == [("autoattack", 16), ("autoattack", 16)]  # only the two chunks left
    for key in ("fgsm", "autoattack"):
        assert torch.equal(resumed.robust[key], reference.robust[key])
    assert torch.equal(resumed.clean, reference.clean)
    assert all(c.passed for c in resumed.checks)


def test_split_evaluation_merges_to_the_whole_one(digits_teacher, workdir: Path) -> None:
    """`evaluate --shard i/n` on (pretend) machines sharing a store, then `evaluate-report`: the
    same per-sample flags and table as one evaluation of the whole test set."""
    from click.testing import CliRunner

    from robdistill.cli import main
    from robdistill.pipeline import merged_evaluation

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
