"""The public Python API (issue 14): the README's example on tiny settings, any nn.Module as
teacher or student, tracking optional, recipes as names / paths / objects with overrides, and the
same numbers as the CLI's tracked stages."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import robdistill as rd
from robdistill.core.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    """The README's Python example (the block under "## From Python")."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## From Python"):]
    return section[section.index("```python") + len("```python"):section.index("```\n", section.index("```python"))]


def tiny(code: str) -> str:
    """The README example with tiny settings: 1 epoch on 200 images, 32 test images, the smoke suite."""
    code = re.sub(r"(rd\.(?:train_teacher|distill)\([^\n]*?)\)", r"\1, epochs=1, train_subset=200)", code)
    code = code.replace('suite="fast")', 'suite="smoke", n_eval=32)')
    assert code.count("epochs=1") == 2 and "n_eval=32" in code, "the README example changed shape; update tiny()"
    return code


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ROBDISTILL_"))}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_readme_example_runs_from_outside_the_checkout_and_writes_nothing(tmp_path: Path) -> None:
    out = run_python(tiny(readme_example()), tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "clean" in out.stdout and "worst" in out.stdout and "sanity checks passed: True" in out.stdout
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlruns, no .robdistill cache


def test_import_is_lazy() -> None:
    code = ("import sys, robdistill as rd; heavy = [m for m in ('torch', 'mlflow', 'robdistill.api') "
            "if m in sys.modules]; assert not heavy, heavy; assert callable(rd.distill); "
            "assert 'torch' in sys.modules and 'mlflow' not in sys.modules")
    out = run_python(code, REPO)
    assert out.returncode == 0, out.stderr[-2000:]


def test_public_names_resolve() -> None:
    for name in rd.__all__:
        assert getattr(rd, name) is not None, name
    with pytest.raises(AttributeError):
        rd.no_such_thing  # noqa: B018


@pytest.fixture(scope="module")
def data():
    return rd.load_dataset("digits")


class Collecting:
    """A tracker that keeps what it is given (any object with the Tracker methods works)."""

    def __init__(self) -> None:
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.params: dict[str, dict] = {}
        self.json: dict[str, object] = {}

    def log_params(self, prefix, values):
        self.params[prefix] = values

    def log_metrics(self, values, step=None):
        self.metrics.append((step, dict(values)))

    def set_tag(self, key, value):
        pass

    def log_json(self, payload, artifact_file):
        self.json[artifact_file] = payload

    def log_table(self, columns, artifact_file):
        pass

    def log_file(self, path, artifact_path=None):
        pass


def test_any_module_is_a_teacher_and_a_student(data, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # a plain module: no Classifier, no features()
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    before = [p.detach().clone() for p in student.parameters()]
    tracker = Collecting()
    trained = rd.distill(teacher, data, perturb="nonmax-shuffle", student=student, seed=0, epochs=2,
                         train_subset=300, tracker=tracker)
    assert trained is student
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert [step for step, _ in tracker.metrics] == [1, 2] and "train/loss" in tracker.metrics[0][1]
    assert tracker.params["student"]["perturb"] == "nonmax-shuffle"
    assert len(trained.history) == 2
    result = rd.evaluate(trained, data, suite="smoke", n_eval=40, tracker=tracker)
    assert result.n == 40 and set(result.robust) >= {"pgd"} and result.checks
    assert result.clean.dtype == torch.bool and "acc/clean" in tracker.metrics[-1][1]
    assert "results.json" in tracker.json
    assert list(tmp_path.iterdir()) == []  # a tracker that keeps things in memory: nothing on disk


def test_attacks_call_returns_images_in_the_ball(data) -> None:
    model = rd.build_model("small-cnn", data.info.shape, data.info.num_classes, data.info.mean, data.info.std)
    x, y = data.test.x[:16], data.test.y[:16]
    x_adv = rd.attacks.PGD(eps=0.1, steps=3)(model, x, y)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_recipes_by_name_path_object_and_overrides(tmp_path: Path) -> None:
    at = rd.load_recipe("teacher", "at", epochs=2)
    assert isinstance(at, rd.TeacherRecipe) and at.epochs == 2 and at.objective == "at"
    assert rd.load_recipe("teacher", at, lr=0.01).lr == 0.01
    path = tmp_path / "mine.toml"
    path.write_text('objective = "trades"\nepochs = 1\n')
    assert rd.load_recipe("teacher", path).objective == "trades"
    with pytest.raises(UserError, match="unknown field 'epoch'"):
        rd.load_recipe("teacher", "at", epoch=2)
    with pytest.raises(UserError, match="must be int"):
        rd.load_recipe("teacher", "at", epochs="two")
    with pytest.raises(UserError, match="unknown model 'nope'"):
        rd.load_recipe("student", "default", model="nope")
    with pytest.raises(UserError, match="must be a name, a .toml path or a StudentRecipe"):
        rd.load_recipe("student", at)


def test_bad_input_is_one_line(data) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(UserError, match="unknown perturbation 'scramble'"):
        rd.distill(model, data, perturb="scramble")
    with pytest.raises(UserError, match="eps must lie in"):
        rd.evaluate(model, data, eps=2.0)
    with pytest.raises(UserError, match="data must be a dataset name"):
        rd.evaluate(model, data.test)


@pytest.mark.slow
def test_same_weights_as_the_cli_stages(data, workdir: Path) -> None:
    """rd.train_teacher / rd.distill are the tracked stages' own code: same seed, same weights."""
    from click.testing import CliRunner

    from robdistill.cli import main

    args = ["--seed", "3", "--quiet", "--set", "epochs=1", "--set", "train_subset=300"]
    out = CliRunner().invoke(main, ["train-teacher", "--teacher", "at", *args])
    assert out.exit_code == 0, out.output
    cached = rd.load_checkpoint(next((workdir / "cache" / "teachers").glob("*.pt")))[0]
    teacher = rd.train_teacher("at", data, seed=3, epochs=1, train_subset=300)
    for name, value in cached.state_dict().items():
        assert torch.equal(value, teacher.state_dict()[name]), name
    student = rd.distill(teacher, data, perturb="nonmax-flatten", seed=3, epochs=1, train_subset=300)
    again = rd.distill(cached, data, perturb="nonmax-flatten", seed=3, epochs=1, train_subset=300)
    for name, value in student.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name


def test_readme_example_is_the_issue_example() -> None:
    code = textwrap.dedent(readme_example())
    for call in ('rd.load_dataset("digits")', 'rd.train_teacher("alp", data, seed=0)',
                 'rd.distill(teacher, data, perturb="nonmax-shuffle", seed=0)',
                 'rd.evaluate(student, data, suite="fast")', "rd.attacks.PGD(eps=0.1, steps=20)(student, x, y)"):
        assert call in code, call


def test_evaluate_takes_attack_objects_like_a_suite(data) -> None:
    """rd.evaluate(model, data, attacks=[...]): the same flags as a suite of the same attacks, keyed by
    name (or by the dict's keys), with the same sanity checks."""
    from robdistill.config.recipes import SuiteRecipe

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    suite = SuiteRecipe(name="t", eps=0.1, attack=({"name": "fgsm"}, {"name": "pgd", "steps": 3, "step_size": 0.04}))
    by_suite = rd.evaluate(model, data, suite=suite, n_eval=48, progress=False)
    objects = [rd.attacks.FGSM(eps=0.1), rd.attacks.PGD(eps=0.1, steps=3, step_size=0.04)]
    by_objects = rd.evaluate(model, data, attacks=objects, n_eval=48, progress=False)
    assert list(by_objects.robust) == ["fgsm", "pgd"] and by_objects.eps == 0.1
    for key in ("fgsm", "pgd"):
        assert torch.equal(by_objects.robust[key], by_suite.robust[key]), key
    assert [c.name for c in by_objects.checks] == [c.name for c in by_suite.checks] and by_objects.passed
    keyed = rd.evaluate(model, data, attacks={"pgd-3": objects[1]}, n_eval=48, progress=False)
    assert list(keyed.robust) == ["pgd-3"] and torch.equal(keyed.robust["pgd-3"], by_suite.robust["pgd"])


@pytest.mark.parametrize("call, message", [
    (lambda m, d: rd.evaluate(m, d, suite="smoke", attacks=[rd.attacks.FGSM(eps=0.1)]), "leave out suite"),
    (lambda m, d: rd.evaluate(m, d, attacks=[rd.attacks.FGSM(eps=0.1), rd.attacks.PGD(eps=0.2)]),
     "share one ball; got linf eps 0.1 and linf eps 0.2"),
    (lambda m, d: rd.evaluate(m, d, attacks=[rd.attacks.PGD(eps=0.1), rd.attacks.PGD(eps=0.1, steps=5)]),
     "two attacks named pgd; pass a dict"),
    (lambda m, d: rd.evaluate(m, d, attacks=["pgd"]), "must be robdistill attack objects"),
    (lambda m, d: rd.evaluate(m, d, attacks=[]), "attacks is empty"),
    (lambda m, d: rd.evaluate(m, d, attacks=rd.attacks.FGSM(eps=0.1), precision="bf16"), "leave out precision"),
    (lambda m, d: rd.attacks.PGD(eps=0.1, stpes=3), "PGD takes no parameter 'stpes'; did you mean 'steps'?"),
    (lambda m, d: rd.attacks.AutoAttack(eps=0.1, verison="plus"), "did you mean 'version'?"),
])
def test_attack_objects_bad_input_is_one_line(data, call, message) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(UserError) as info:
        call(model, data)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_data_is_required() -> None:
    """No silent default dataset: the functions that train or evaluate say which data they need."""
    import inspect

    for fn in (rd.load_dataset, rd.train_teacher, rd.distill, rd.evaluate, rd.load_teacher):
        params = inspect.signature(fn).parameters
        first = "name" if fn is rd.load_dataset else "data"
        assert params[first].default is inspect.Parameter.empty, fn.__name__


class _StopAtEpoch:
    """A tracker that records the epochs it was given and raises when it is given ``stop``."""

    def __init__(self, stop: int | None = None) -> None:
        self.stop, self.epochs = stop, []

    def log_params(self, prefix, values) -> None:
        pass

    def log_metrics(self, values, step=None) -> None:
        if step == self.stop:
            raise KeyboardInterrupt
        self.epochs.append(step)

    def set_tag(self, key, value) -> None:
        pass

    def log_json(self, payload, artifact_file) -> None:
        pass


def test_training_resumes_from_its_state_file(data, tmp_path: Path) -> None:
    """rd.train_teacher(state=..., resume=True) continues an interrupted training where its state
    file left it (the epochs after it only) and ends with the weights of an uninterrupted run."""
    recipe = dict(epochs=2, train_subset=200, attack_steps=2, attack_step_size=0.05, progress=False)
    whole = rd.train_teacher("at", data, seed=1, **recipe)
    state = tmp_path / "teacher.state.pt"
    with pytest.raises(KeyboardInterrupt):
        rd.train_teacher("at", data, seed=1, state=state, tracker=_StopAtEpoch(stop=2), **recipe)
    assert state.is_file()  # saved after epoch 1
    tracker = _StopAtEpoch()
    resumed = rd.train_teacher("at", data, seed=1, state=state, resume=True, tracker=tracker, **recipe)
    assert tracker.epochs == [2] and len(resumed.history) == 2
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    with pytest.raises(UserError, match="resume=True continues from a state file"):
        rd.distill(whole, data, resume=True)


def test_evaluation_resumes_from_its_state_file(data, tmp_path: Path, monkeypatch) -> None:
    """rd.evaluate(state=...) saves each finished attack; resume=True reads them back instead of
    attacking again (the sanity checks run again: they are not saved)."""
    from robdistill.attacks.gradient import PGD

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    attacks = [rd.attacks.FGSM(eps=0.1), rd.attacks.PGD(eps=0.1, steps=5)]
    state = tmp_path / "eval.state.pt"
    first = rd.evaluate(model, data, attacks=attacks, n_eval=64, progress=False, state=state)
    assert state.is_file()
    attacked = []
    original = PGD.attack_batch
    monkeypatch.setattr(PGD, "attack_batch", lambda self, *a: attacked.append(self.eps) or original(self, *a))
    again = rd.evaluate(model, data, attacks=attacks, n_eval=64, progress=False, state=state, resume=True)
    assert 0.1 not in attacked, attacked  # the saved PGD was not run again (eps 0 probes of the checks were)
    for key in first.robust:
        assert torch.equal(first.robust[key], again.robust[key]), key
    with pytest.raises(UserError, match="resume=True continues from a state file"):
        rd.evaluate(model, data, attacks=attacks, resume=True)
