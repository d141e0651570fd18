"""Bad input on the command line: one line naming the fix, exit status 2, no traceback, and nothing
half-written (no MLflow store, no cache, no run left RUNNING)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_nothing_written, assert_one_line_error, invoke

TINY = ["--set", "teacher.epochs=1", "--set", "student.epochs=1", "--suite", "smoke", "--n-eval", "16", "--quiet"]


@pytest.mark.parametrize("args, fragments", [
    (["--teacher", "nope"], ["unknown teacher 'nope'", "alp"]),
    (["--teacher", "alp", "--perturb", "nope"], ["unknown perturbation 'nope'", "nonmax-shuffle"]),
    (["--teacher", "alp", "--dataset", "nope"], ["unknown dataset 'nope'", "digits"]),
    (["--teacher", "alp", "--eps", "1.5"], ["--eps must lie in [0, 1]"]),
    (["--teacher", "alp", "--eps", "-0.1"], ["--eps must lie in [0, 1]"]),
    (["--teacher", "alp", "--threat-model", "l2", "--eps", "-0.1"], ["--eps must be a finite number >= 0 under L2"]),
    (["--teacher", "alp", "--set", "teacher.attack_steps=0"], ["attack_steps must be >= 1"]),
    (["--teacher", "alp", "--set", "teacher.colour=red"], ["unknown field 'colour'"]),
    (["--teacher", "alp", "--set", "epochs=2"], ["prefix the field", "teacher.epochs=2"]),
    (["--teacher", "alp", "--student", "nope"], ["unknown student 'nope'"]),
    (["--teacher", "alp", "--suite", "nope"], ["unknown suite 'nope'"]),
    (["--teacher", "alp", "--n-eval", "-3"], ["--n-eval must be >= 0"]),
    (["--teacher", "alp", "--device", "cuda:0"], ["--device"]),
])
def test_bad_run_arguments(workdir: Path, args: list[str], fragments: list[str]) -> None:
    if "cuda:0" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    assert_one_line_error(invoke("run", *args, "--quiet"), *fragments)
    assert_nothing_written(workdir)


def test_an_unknown_threat_model_is_refused_by_the_option(workdir: Path) -> None:
    out = invoke("run", "--teacher", "alp", "--threat-model", "l3", "--quiet")
    assert out.exit_code == 2 and "'l3' is not one of 'linf', 'l2', 'corruptions'" in out.stderr
    assert_nothing_written(workdir)


def test_bad_suites(workdir: Path) -> None:
    (workdir / "unknown_attack.toml").write_text('[[attack]]\nname = "laser"\n')
    assert_one_line_error(invoke("run", "--teacher", "alp", "--suite", "unknown_attack.toml"),
                          "unknown attack 'laser'")
    (workdir / "zero_steps.toml").write_text('[[attack]]\nname = "pgd"\nsteps = 0\n')
    assert_one_line_error(invoke("run", "--teacher", "alp", "--suite", "zero_steps.toml"),
                          "pgd needs steps >= 1")
    (workdir / "bad_eps.toml").write_text('eps = 2.0\n[[attack]]\nname = "fgsm"\n')
    assert_one_line_error(invoke("run", "--teacher", "alp", "--suite", "bad_eps.toml"), "eps must lie in [0, 1]")
    assert_nothing_written(workdir)


def test_malformed_and_unreadable_recipes(workdir: Path) -> None:
    (workdir / "broken.toml").write_text("objective = 'alp\n")
    assert_one_line_error(invoke("run", "--teacher", "broken.toml"), "not valid TOML")
    unreadable = workdir / "locked.toml"
    unreadable.write_text('objective = "alp"\n')
    unreadable.chmod(0)
    try:
        if unreadable.stat().st_mode and shutil.which("id") and subprocess.run(
                ["id", "-u"], capture_output=True, text=True).stdout.strip() == "0":
            pass  # root can read anything: the OSError path is covered by test_recipes
        else:
            assert_one_line_error(invoke("run", "--teacher", "locked.toml"), "cannot read")
    finally:
        unreadable.chmod(0o644)
    assert_one_line_error(invoke("run", "--teacher", "missing.toml"), "does not exist")
    assert_nothing_written(workdir)


def test_missing_dataset_files(workdir: Path) -> None:
    empty = workdir / "data"
    empty.mkdir()
    for dataset in ("mnist", "cifar10", "svhn"):
        assert_one_line_error(invoke("run", "--teacher", "alp", "--dataset", dataset, "--data-root", str(empty)),
                              "--download", "--data-root")
    assert_nothing_written(workdir)


def test_bad_checkpoint(workdir: Path) -> None:
    """Each says what is wrong with the path, and none suggests a download that never happened."""
    (workdir / "junk.pt").write_bytes(b"not a checkpoint")
    (workdir / "broken.pt").write_bytes(b"PK\x03\x04\x00\xff\xfe" * 20)
    (workdir / "models.pt").mkdir()
    for args, message in ((["evaluate", "junk.pt"], "is a text file, not PyTorch weights"),
                          (["evaluate", "broken.pt"], "is not a PyTorch file or is truncated"),
                          (["evaluate", "absent.pt"], "does not exist"),
                          (["evaluate", "models.pt"], "is a directory, not a file"),
                          (["run", "--teacher", "models.pt"], "is a directory, not a file")):
        result = invoke(*args)
        assert_one_line_error(result, message)
        assert "download" not in result.stderr, result.stderr
    (workdir / "models.pt").rmdir()
    for name in ("junk.pt", "broken.pt"):
        (workdir / name).unlink()
    assert_nothing_written(workdir)


def test_unreachable_tracking_server(workdir: Path) -> None:
    result = invoke("train-teacher", "--teacher", "standard", "--set", "epochs=1", "--quiet",
                    "--tracking-uri", "http://127.0.0.1:9")
    assert_one_line_error(result, "cannot use tracking store http://127.0.0.1:9")


@pytest.mark.parametrize("cache", ["taken", "taken/sub"])
def test_cache_dir_that_is_a_file(workdir: Path, monkeypatch, cache: str) -> None:
    """--cache-dir (or $ROBDISTILL_CACHE) on an existing file: one line, for every command."""
    (workdir / "taken").write_text("a file, not a directory")
    before = set(workdir.iterdir())
    commands = [["run", "--teacher", "standard", *TINY], ["train-teacher", "--teacher", "standard", "--quiet"],
                ["distill", "--teacher", "standard", "--quiet"], ["evaluate", "absent.pt"],
                ["sweep", "--teachers", "standard", "--perturbs", "keep", "--seeds", "0", "--quiet"]]
    for args in commands:
        assert_one_line_error(invoke(*args, "--cache-dir", cache), f"--cache-dir {cache} is not a directory",
                              "pass a directory")
    monkeypatch.setenv("ROBDISTILL_CACHE", str(workdir / cache))
    assert_one_line_error(invoke("train-teacher", "--teacher", "standard", "--quiet"), "is not a directory")
    assert set(workdir.iterdir()) == before
    assert_nothing_written(workdir)


def _foreign_checkpoint(workdir: Path) -> None:
    import torch

    torch.save({"weights": torch.zeros(2)}, workdir / "foreign.pt")


# One table of the bad inputs of every other kind (CLI values of each command, recipe values,
# checkpoints, baselines, stores, the torchrun environment); the tests above cover more of each.
BAD_INPUTS = [
    ("foreign checkpoint", ["evaluate", "foreign.pt"], _foreign_checkpoint, "not a robdistill checkpoint", {}),
    ("recipe value of the wrong type", ["run", "--teacher", "at", "--set", "teacher.lr=abc"], None,
     "must be float", {}),
    ("sweep shard", ["sweep", "--teachers", "at", "--perturbs", "keep", "--shard", "3/2"], None,
     "--shard must be i/n", {}),
    ("sweep seeds", ["sweep", "--teachers", "at", "--perturbs", "keep", "--seeds", "a,b"], None,
     "--seeds must be comma-separated integers", {}),
    ("sweep perturbation", ["sweep", "--teachers", "at", "--perturbs", "keep,nope"], None,
     "unknown perturbation 'nope'", {}),
    ("missing baseline", ["regress", "--baseline", "nope.json"], None, "does not exist", {}),
    ("compare without a store", ["compare", "--tracking-uri", "sqlite:///none.db"], None, "no tracking store", {}),
    ("eps sweep value", ["evaluate", "foreign.pt", "--eps-sweep", "0,2"], _foreign_checkpoint, "must lie in [0, 1]", {}),
    ("torchrun without a rendezvous", ["train-teacher", "--teacher", "standard", "--quiet"], None,
     "cannot join the torchrun process group", {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}),
]


@pytest.mark.parametrize("name, args, setup, fragment, env", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_catalogue(workdir: Path, monkeypatch, name, args, setup, fragment, env) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    if setup is not None:
        setup(workdir)
    before = set(workdir.iterdir())
    assert_one_line_error(invoke(*args), fragment)
    assert set(workdir.iterdir()) == before  # nothing written, not even an empty store
    assert_nothing_written(workdir)


def test_list_and_help() -> None:
    result = invoke("list")
    assert result.exit_code == 0
    for word in ("digits", "fashion-mnist", "small-cnn", "lenet", "resnet18", "timm:", "alp", "aalp",
                 "nonmax-shuffle", "nonmax-flatten", "autoattack", "fast", "paper"):
        assert word in result.output
    assert invoke("list", "teachers").output.splitlines()[0] == "teachers:"
    # whole first sentences, not the docstring's first line
    onehot = next(line for line in invoke("list", "perturbations").output.splitlines() if "onehot" in line)
    assert onehot.endswith("to within exp(-50) per class."), onehot
    from robdistill.core.registry import first_sentence

    assert first_sentence("One thing, e.g. a\n    cat (Kannan et\n    al. 2018). Then more.\n\nLater.") == \
        "One thing, e.g. a cat (Kannan et al. 2018)."
    help_text = invoke("run", "--help").output
    assert "--perturb" in help_text and "Examples" in help_text


def test_console_script_prints_one_line(workdir: Path) -> None:
    """The installed entry point itself: a real process, a real exit status, stderr one line."""
    beside_python = Path(sys.executable).with_name("robdistill")
    exe = str(beside_python) if beside_python.exists() else shutil.which("robdistill")
    if exe is None:
        pytest.skip("robdistill console script not on PATH")
    proc = subprocess.run([exe, "run", "--teacher", "nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: unknown teacher 'nope'")


@pytest.mark.slow
def test_evaluate_eps_sweep(digits_teacher, workdir: Path) -> None:
    import mlflow

    _, _, teacher = digits_teacher
    out = invoke("evaluate", str(teacher.path), "--suite", "smoke", "--n-eval", "32", "--eps-sweep", "0.2,0,0.1",
                 "--quiet")
    assert out.exit_code == 0, (out.output, out.exception)
    table = out.stdout.split("accuracy versus eps")[1].splitlines()
    rows = [line.split() for line in table if line.startswith("teacher:")]
    assert [r[1] for r in rows] == ["0", "0.1", "0.2"]
    zero = rows[0]
    # at eps = 0 every attack scores exactly the clean accuracy
    assert len({cell for cell in zero[3::3]}) == 1, zero
    client = mlflow.MlflowClient()
    parent = next(r for r in mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
                  if r.data.tags.get("stage") == "evaluate")
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"eps_curves.png", "eps_sweep.json"} <= names


def test_eps_sweep_bad_values(workdir: Path) -> None:
    assert_one_line_error(invoke("evaluate", "x.pt", "--eps-sweep", "0,a"), "comma-separated numbers")
    assert_one_line_error(invoke("evaluate", "x.pt", "--eps-sweep", "0,1.5"), "radii must lie in [0, 1] under L-inf")
    assert_one_line_error(invoke("evaluate", "x.pt", "--eps-sweep", "0,-1", "--threat-model", "l2"),
                          "radii must be a finite number >= 0 under L2")


def test_hints_name_the_store_and_experiment_to_read() -> None:
    from robdistill.cli.output import merge_hint, ui_hint

    view = "/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=robdistill"
    # a server is its own UI; a local store is opened by `robdistill ui` (naming a store other than the default)
    assert ui_hint("http://127.0.0.1:5055", "7") == f"open the runs view:  http://127.0.0.1:5055{view}"
    assert ui_hint("sqlite:///x.db", "7") == (f"open the runs view:  robdistill ui --tracking-uri sqlite:///x.db"
                                              f"   -> http://127.0.0.1:5000{view}")
    assert ui_hint("sqlite:///mlflow.db", "7").startswith("open the runs view:  robdistill ui   -> ")
    # a run the view filters out (distill, evaluate, train-teacher) is linked to its own page
    assert ui_hint("sqlite:///x.db", "7", "abc") == ("open the run:  robdistill ui --tracking-uri sqlite:///x.db"
                                                    "   -> http://127.0.0.1:5000/#/experiments/7/runs/abc?workflowType=machine_learning")
    assert ui_hint("http://h:5000", "7", "abc") == "open the run:  http://h:5000/#/experiments/7/runs/abc?workflowType=machine_learning"
    assert merge_hint("sweep-report", "sweep-1", "http://h:5000", "study").split() == [
        "robdistill", "sweep-report", "sweep-1", "--tracking-uri", "http://h:5000", "--experiment", "study"]
    assert "--experiment" not in merge_hint("evaluate-report", "eval-1", "sqlite:///x.db", "robdistill")


@pytest.mark.parametrize("command", [["sweep-report", "sweep-000000000000"], ["compare"]])
def test_out_in_a_missing_folder_is_one_line_before_any_work(command, workdir) -> None:
    from click.testing import CliRunner

    from robdistill.cli.main import main

    result = CliRunner().invoke(main, [*command, "--out", str(workdir / "missing" / "table.md")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing does not exist" in lines[0] and "Traceback" not in result.output


@pytest.mark.filterwarnings("ignore::robdistill.core.precision.PrecisionWarning")
def test_precision_flag_reaches_every_stage_and_is_logged(workdir: Path) -> None:
    """``run --precision bf16``: teacher, student and suite recipes all run in bf16, and the
    precision is logged with each run and in results.json; a bad value is click's one-line error."""
    import json

    import mlflow

    result = invoke("run", "--teacher", "standard", "--precision", "bf16", "--set", "teacher.train_subset=128",
                    "--set", "student.train_subset=128", *TINY)
    assert result.exit_code == 0, (result.output, result.exception)
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
    params = {key: value for run in runs for key, value in run.data.params.items() if key.endswith("precision")}
    assert params == {"teacher.precision": "bf16", "student.precision": "bf16", "suite.precision": "bf16"}, params
    evaluations = [run for run in runs if "suite.precision" in run.data.params]
    path = mlflow.artifacts.download_artifacts(run_id=evaluations[0].info.run_id, artifact_path="results.json",
                                               dst_path=str(workdir / "downloaded"))
    configs = json.loads(Path(path).read_text())["attacks"]
    assert configs and all(config["precision"] == "bf16" for config in configs.values())
    bad = invoke("evaluate", "x.pt", "--precision", "fp16")
    assert bad.exit_code == 2 and "fp16" in bad.output


def test_threads_option_sets_torch_threads_and_refuses_zero(workdir: Path) -> None:
    import torch

    bad = invoke("run", "--teacher", "standard", "--threads", "0")
    assert bad.exit_code == 2 and "--threads must be >= 1" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    before = torch.get_num_threads()
    try:
        out = invoke("run", "--teacher", "standard", "--threads", "1", "--estimate")
        assert out.exit_code == 0, out.output
        assert torch.get_num_threads() == 1 and "at 1 thread per process" in out.output
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("args, message", [
    (["run", "--teacher", "standard", "--tracking-uri", "http://127.0.0.1:9"], "cannot use tracking store"),
    (["sweep", "--teachers", "standard", "--perturbs", "keep", "--seeds", "0", "--tracking-uri",
      "http://127.0.0.1:9"], "cannot use tracking store"),
    (["run", "--teacher", "standard", "--seed", "-1"], "--seed must be a non-negative integer"),
    (["sweep", "--seeds", "0,-1"], "--seeds must be non-negative integers"),
])
def test_bad_input_is_refused_before_any_estimate_or_run(workdir: Path, args: list[str], message: str) -> None:
    """Issue 30, item 4: validate, then plan, then estimate, then run. A bad tracking store used to be
    refused after a five-line estimate (which trains batches), --seed -1 after two MLflow runs that
    ended FAILED."""
    result = invoke(*args)
    assert_one_line_error(result, message)
    assert "estimat" not in result.output
    assert_nothing_written(workdir)
