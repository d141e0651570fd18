"""Declarative TOML recipes: ``teachers/<name>.toml``, ``students/<name>.toml`` and attack suites
``benchmarks/suites/<name>.toml``. A recipe is a typed dataclass; unknown fields, wrong types and
out-of-range values are one-line errors. Fields can be overridden with ``key=value`` strings.

A recipe file may hold per-dataset tables ``[dataset.<name>]`` (``[dataset.cifar10]``): loaded for
that dataset, their fields override the top-level ones (before any ``key=value`` override), so one
recipe name gives the paper-scale setup on CIFAR-10 and the small one on digits.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Mapping, TypeVar, get_type_hints

from robdistill.core.errors import UserError

if TYPE_CHECKING:
    from robdistill.core.precision import Precision
    from robdistill.core.threat import Norm
    from robdistill.data.datasets import Split

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout, when installed from one
BUNDLED = Path(__file__).resolve().parent / "bundled"  # recipes and suites shipped in the package
NameCheck = Callable[[Any], None]  # raises UserError when a recipe names an unregistered entry


class TypedSettings:
    """The objects a validated recipe's ``precision`` and ``threat_model`` names stand for: a recipe
    stores names (it is written to TOML, logged and hashed as text) and hands out objects, so the
    code that trains or attacks never looks a name up itself."""

    precision: str
    threat_model: str

    @property
    def precision_mode(self) -> "Precision":
        """What the passes run in (:class:`robdistill.core.precision.Precision`)."""
        from robdistill.core.precision import resolve_precision

        return resolve_precision(self.precision)

    @property
    def norm(self) -> "Norm":
        """The ball's norm (:class:`robdistill.core.threat.Norm`): distance, projection, radius check."""
        from robdistill.core.threat import norm_of

        return norm_of(self.threat_model)


@dataclass(frozen=True)
class TrainingRecipe(TypedSettings):
    """Fields shared by teacher and student training."""

    name: str = ""
    description: str = ""
    model: str = "small-cnn"
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    train_subset: int = 0  # train on the first N examples of the (shuffled) training split; 0 = all
    precision: str = "fp32"  # robdistill.core.precision: fp32, bf16 (training passes; verdicts stay fp32)

    # field -> the registry its value names (checked by robdistill.catalog.check_names)
    NAMED_FIELDS: ClassVar[dict[str, str]] = {"model": "model", "optimizer": "optimizer",
                                              "lr_schedule": "lr_schedule", "precision": "precision"}

    def named_entries(self) -> Iterator[tuple[str, str]]:
        """(registry, name) for every field that names a registry entry."""
        for field_name, registry in self.NAMED_FIELDS.items():
            yield registry, getattr(self, field_name)

    def validate(self) -> None:
        """Ranges of the fields (registry names are checked a layer above: robdistill.catalog)."""
        _require(self.epochs >= 1, f"epochs must be >= 1; got {self.epochs}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1; got {self.batch_size}")
        _require(self.lr > 0, f"lr must be > 0; got {self.lr}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0; got {self.weight_decay}")
        _require(self.train_subset >= 0, f"train_subset must be >= 0 (0 = all); got {self.train_subset}")

    def training_split(self, train: "Split") -> "Split":
        """The examples this recipe trains on: all, or the first ``train_subset`` of a split that
        the loader has already shuffled deterministically (a random, reproducible subset)."""
        return train.head(self.train_subset or None)


@dataclass(frozen=True)
class TeacherRecipe(TrainingRecipe):
    """A teacher: objective (METHODS section 2) and the PGD attack used while training.

    ``eps`` / ``attack_step_size`` left out mean the dataset's eps and step size (METHODS section 1),
    the step scaled in proportion when ``eps`` is set. ``pairing_weight`` is lambda of ALP, CLP and LSQ; for ALP under our convention: squared
    L2 summed over classes, mean over the batch (AALP Eq. 1); Kannan's code averages over B*C
    (lambda / C). ``alpha`` weighs AALP's sample-weighted pairing term, ``beta`` TRADES' KL term.
    ``augment`` transforms each clean batch before the objective sees it (``crop-flip``: Madry et al.
    2018 and Zhang et al. 2019 train CIFAR-10 on random crops and flips); ``none`` draws nothing.

    Attributes:
        objective: ``standard``, ``at``, ``alp``, ``aalp``, ``trades``, ``clp``, ``lsq``, ... (METHODS section 2).
        model, epochs, batch_size, optimizer, lr, weight_decay, lr_schedule, train_subset, augment:
            what is trained, and how.
        threat_model, eps, attack_steps, attack_step_size: the training attack's ball and PGD.
        pairing_weight, alpha, beta: the objectives' weights.
        precision: what the training passes run in (``fp32``, ``bf16``).

    Example:
        >>> import robdistill as rd
        >>> mine = rd.TeacherRecipe(name="my-trades", objective="trades", beta=6.0, epochs=2)
        >>> rd.load_recipe("teacher", mine).beta          # checked like a recipe file
        6.0
    """

    objective: str = "standard"
    threat_model: str = "linf"  # robdistill.core.threat: the ball of the training attack (linf, l2)
    eps: float | None = None
    attack_steps: int = 10
    attack_step_size: float | None = None
    pairing_weight: float = 0.5
    alpha: float = 1.0
    beta: float = 6.0
    augment: str = "none"  # robdistill.augment, applied to the clean batch before the objective (crop-flip ...)

    NAMED_FIELDS: ClassVar[dict[str, str]] = {**TrainingRecipe.NAMED_FIELDS, "objective": "objective",
                                              "augment": "augment", "threat_model": "threat_model"}

    def validate(self) -> None:
        super().validate()
        _check_radius(self.threat_model, self.eps)
        _require(self.attack_steps >= 1, f"attack_steps must be >= 1; got {self.attack_steps}")
        if self.attack_step_size is not None:
            _require(self.attack_step_size > 0, f"attack_step_size must be > 0; got {self.attack_step_size}")
        _require(self.pairing_weight >= 0, f"pairing_weight must be >= 0; got {self.pairing_weight}")
        _require(self.alpha >= 0, f"alpha must be >= 0; got {self.alpha}")
        _require(self.beta >= 0, f"beta must be >= 0; got {self.beta}")


@dataclass(frozen=True)
class StudentRecipe(TrainingRecipe):
    """A student distilled on clean inputs only: loss T^2 KL(p_t'/T || p_s/T) + a CE (METHODS section 3).

    ``method`` ``ard`` / ``rslad`` are the robust-distillation baselines instead (they train on the
    student's adversarial examples: PGD with ``eps`` -- default the dataset's --, ``attack_steps``,
    ``attack_step_size`` -- default the dataset's step, scaled to eps --; ``adv_weight`` is their alpha).

    Attributes:
        model, epochs, batch_size, optimizer, lr, weight_decay, lr_schedule, train_subset, augment:
            what is trained, and how.
        temperature, alpha: the distillation temperature T and the weight of the KL term.
        method: ``distill`` (clean inputs only), or ``ard`` / ``rslad``.
        precision: what the student's training passes run in.

    Example:
        >>> import robdistill as rd
        >>> student = rd.load_recipe("student", "default", epochs=5)
        >>> student.model, student.temperature, student.epochs
        ('small-cnn', 4.0, 5)
    """

    temperature: float = 4.0
    hard_label_weight: float = 0.0
    augment: str = "none"  # robdistill.augment: none (teacher logits cached), shift1, crop, crop-flip
    method: str = "clean"  # robdistill.student_methods: clean, ard, rslad
    adv_weight: float = 1.0
    threat_model: str = "linf"  # the ball of ard / rslad's attack and of the validation PGD (linf, l2)
    eps: float | None = None
    attack_steps: int = 10
    attack_step_size: float | None = None

    NAMED_FIELDS: ClassVar[dict[str, str]] = {**TrainingRecipe.NAMED_FIELDS, "augment": "augment",
                                              "method": "student_method", "threat_model": "threat_model"}

    def validate(self) -> None:
        super().validate()
        _require(0.0 <= self.adv_weight <= 1.0, f"adv_weight must lie in [0, 1]; got {self.adv_weight}")
        _check_radius(self.threat_model, self.eps)
        _require(self.attack_steps >= 1, f"attack_steps must be >= 1; got {self.attack_steps}")
        if self.attack_step_size is not None:
            _require(self.attack_step_size > 0, f"attack_step_size must be > 0; got {self.attack_step_size}")
        _require(self.temperature > 0, f"temperature must be > 0; got {self.temperature}")
        _require(self.hard_label_weight >= 0, f"hard_label_weight must be >= 0; got {self.hard_label_weight}")


@dataclass(frozen=True)
class SuiteRecipe(TypedSettings):
    """An attack suite: a list of ``[[attack]]`` tables (``name`` plus the attack's parameters,
    optionally ``key`` for the metric name, ``n_eval`` to run that attack on the first ``n_eval``
    evaluated images only, and ``only`` to run it only on some models of a grid: see
    :meth:`for_subject`). ``eps`` left out means the dataset's eps;
    ``n_eval = 0`` evaluates the whole test set; ``precision`` is what every attack crafts in.

    Attributes:
        attack: the ``[[attack]]`` tables, in the order they run.
        threat_model, eps: the ball every attack runs in (``eps`` None: the dataset's).
        n_eval: the first that many test images (0: all).
        batch_size, seed: the attacks' batch and seed.
        precision: what the attacks craft in (verdicts stay fp32).
        autoattack_chunk: AutoAttack is saved every this many samples.
        compile: crafting forwards through ``torch.compile`` (``--compile``); verdicts stay eager fp32.

    Example:
        >>> import robdistill as rd
        >>> smoke = rd.load_recipe("suite", "smoke")
        >>> [entry["name"] for entry in smoke.attack], smoke.n_eval
        (['fgsm', 'pgd', 'cw'], 64)
    """

    name: str = ""
    description: str = ""
    threat_model: str = "linf"  # robdistill.core.threat: the ball every attack of the suite runs in (linf, l2)
    eps: float | None = None
    n_eval: int = 0
    batch_size: int = 256
    seed: int = 0
    attack: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    autoattack_chunk: int = 1000  # AutoAttack is saved every this many samples (resumable evaluations)
    precision: str = "fp32"  # robdistill.core.precision: what the attacks craft in (verdicts stay fp32)
    compile: bool = False  # crafting forwards through torch.compile (verdicts stay eager fp32)
    analysis_n_eval: int = 0  # the AALP consistency analysis (a PGD-20) on the first this many images; 0 = all

    def named_entries(self) -> Iterator[tuple[str, str]]:
        """("attack", name) for every attack of the suite, ("precision", name) and ("threat_model", name)."""
        for entry in self.attack:
            yield "attack", entry["name"]
        yield "precision", self.precision
        yield "threat_model", self.threat_model

    def validate(self) -> None:
        _check_radius(self.threat_model, self.eps)
        _require(self.n_eval >= 0, f"n_eval must be >= 0; got {self.n_eval}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1; got {self.batch_size}")
        _require(self.autoattack_chunk >= 1, f"autoattack_chunk must be >= 1; got {self.autoattack_chunk}")
        _require(self.analysis_n_eval >= 0, f"analysis_n_eval must be >= 0 (0 = all); got {self.analysis_n_eval}")
        keys = set()
        for entry in self.attack:
            _require(isinstance(entry, dict) and "name" in entry, "every [[attack]] table needs a name")
            key = entry.get("key", entry["name"])
            _require(key not in keys, f"attack key '{key}' appears twice; give one a different key")
            _require("norm" not in entry, f"attack '{key}' sets a norm; a suite's attacks share its threat_model "
                                          f"(threat_model = \"l2\" at the top of the suite, or --threat-model)")
            keys.add(key)
            count = entry.get("n_eval", 0)
            _require(isinstance(count, int) and not isinstance(count, bool) and count >= 0,
                     f"n_eval of attack '{key}' must be an integer >= 0 (0 = the suite's); got {count!r}")
            only = entry.get("only", ["x"])
            _require(isinstance(only, (list, tuple)) and bool(only) and all(isinstance(o, str) for o in only),
                     f"only of attack '{key}' must be a non-empty list of \"teacher\" and perturbation names "
                     f"(e.g. [\"teacher\", \"keep\"]); got {only!r}")

    def for_subject(self, subject: str | None) -> "SuiteRecipe":
        """The suite as it runs on one model of a grid: ``subject`` is ``"teacher"`` for a teacher's own
        evaluation or the perturbation of a student's; an attack whose table sets ``only`` runs only
        on the subjects it names. ``None`` (a model outside a grid: `evaluate`) keeps every attack."""
        if subject is None or not any("only" in entry for entry in self.attack):
            return self
        return dataclasses.replace(self, attack=tuple(e for e in self.attack if subject in e.get("only", (subject,))))

    def attack_samples(self, n: int) -> dict[str, int]:
        """How many of the ``n`` evaluated images each attack (by key) runs on: its table's
        ``n_eval`` (the first that many images, a prefix of the suite's), else all ``n``. An expensive
        attack (AutoAttack) can so run on fewer images than PGD and CW in one evaluation."""
        return {entry.get("key", entry["name"]): min(n, entry.get("n_eval") or n) for entry in self.attack}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def _check_radius(threat_model: str, eps: float | None) -> None:
    """``eps`` (when set) is a radius of ``threat_model``'s norm: in [0, 1] under L-inf, >= 0 under L2.
    (An unknown threat model is reported by the registry-name check, one layer up.)"""
    from robdistill.core.threat import NORMS

    if eps is not None and threat_model in NORMS:
        NORMS.get(threat_model).check_radius(eps)


R = TypeVar("R")

# kind -> (recipe type, folder under a project root, folder in the package's bundled recipes)
RECIPE_KINDS: dict[str, tuple[type, str, str]] = {
    "teacher": (TeacherRecipe, "teachers", "teachers"),
    "student": (StudentRecipe, "students", "students"),
    "suite": (SuiteRecipe, os.path.join("benchmarks", "suites"), "suites"),
}


def recipe_dirs(kind: str) -> list[Path]:
    """Where named recipes are found: $ROBDISTILL_RECIPES (os.pathsep-separated roots), the current
    directory, then the recipes bundled in the package (the checkout's ``teachers/``,
    ``students/`` and ``benchmarks/suites/`` link to them)."""
    _, sub, bundled = RECIPE_KINDS[kind]
    roots = [Path(p) for p in os.environ.get("ROBDISTILL_RECIPES", "").split(os.pathsep) if p]
    candidates = [root / sub for root in [*roots, Path.cwd()]] + [BUNDLED / bundled]
    seen, dirs = set(), []
    for candidate in candidates:
        folder = candidate.resolve()
        if folder not in seen and folder.is_dir():
            seen.add(folder)
            dirs.append(folder)
    return dirs


def available(kind: str) -> dict[str, Path]:
    """Named recipes of a kind, first directory wins."""
    found: dict[str, Path] = {}
    for folder in recipe_dirs(kind):
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def find_recipe(kind: str, name_or_path: str) -> Path:
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        if not path.is_file():
            raise UserError(f"{kind} recipe file {name_or_path} does not exist")
        return path
    names = available(kind)
    if name_or_path not in names:
        raise UserError(f"unknown {kind} '{name_or_path}'; choose one of: {', '.join(names) or '(none found)'}"
                        f" or give a path to a .toml recipe")
    return names[name_or_path]


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Check a TOML value against a dataclass field type (int -> float is allowed)."""
    text = str(annotation)
    optional = "None" in text
    if value is None and optional:
        return None
    if "float" in text and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if ("int" in text and "float" not in text) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if "str" in text and isinstance(value, str):
        return value
    if "bool" in text and isinstance(value, bool):
        return value
    if "tuple" in text and isinstance(value, list):
        return tuple(value)
    expected = text.replace("typing.", "").replace("<class '", "").replace("'>", "")
    raise UserError(f"field '{key}' in {source} must be {expected}; got {value!r}")


def build_recipe(cls: type[R], data: dict[str, Any], source: str, check: NameCheck | None = None) -> R:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise UserError(f"unknown field '{unknown[0]}' in {source}; valid fields: {', '.join(names)}")
    values = {k: _coerce(v, hints[k], k, source) for k, v in data.items()}
    recipe = cls(**values)
    try:
        recipe.validate()  # type: ignore[attr-defined]
        if check is not None:
            check(recipe)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    return recipe


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (``epochs=2``, ``lr=1e-4``, ``model="lenet"``); bare
    words that are not TOML are taken as strings (``model=lenet``)."""
    if "=" not in text:
        raise UserError(f"--set expects key=value; got '{text}'")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


DATASET_TABLES = "dataset"  # [dataset.<name>] tables: per-dataset fields
TOP_LEVEL_ONLY = ("name", "description")  # fields a [dataset.<name>] table may not set


def read_recipe(kind: str, name_or_path: str) -> tuple[Path, dict[str, Any]]:
    """The path of a named recipe (or a path) and its TOML contents."""
    path = find_recipe(kind, name_or_path)
    try:
        return path, tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {kind} recipe {path} ({exc.__class__.__name__}); check the file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{kind} recipe {path} is not valid TOML ({exc}); fix the file") from None


def dataset_tables(cls: type, data: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """The ``[dataset.<name>]`` tables of a recipe file, every one checked: known fields of the right
    type, none of ``name`` / ``description`` (ranges and registry names are checked when used)."""
    tables = data.get(DATASET_TABLES, {})
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise UserError(f"'{DATASET_TABLES}' in {source} must hold tables [dataset.<name>] of recipe fields; "
                        f"got {tables!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in TOP_LEVEL_ONLY]
    for dataset, table in tables.items():
        where = f"[dataset.{dataset}] of {source}"
        for key, value in table.items():
            if key in TOP_LEVEL_ONLY:
                raise UserError(f"field '{key}' in {where} is top-level only; move it out of the table")
            if key not in names:
                raise UserError(f"unknown field '{key}' in {where}; valid fields: {', '.join(names)}")
            _coerce(value, hints[key], key, where)
    return tables


def parse_recipe(kind: str, name_or_path: str, overrides: Mapping[str, Any] | Iterable[str] = (),
                 check: NameCheck | None = None, dataset: str | None = None,
                 check_dataset: Callable[[str], Any] | None = None) -> Any:
    """Resolve a named recipe (or a path) for ``dataset`` (its ``[dataset.<name>]`` table, when the
    file has one, overrides the top-level fields), apply the overrides (typed ``{field: value}``, as
    :class:`robdistill.config.overrides.Overrides` gives a stage's, or ``key=value`` texts), validate its
    ranges and, with ``check``, the registry names it uses (:func:`robdistill.catalog.checked_recipe`
    passes one); ``check_dataset`` checks every table's dataset name. The file layer of
    :func:`robdistill.load_recipe`, the one loader the commands and the API use."""
    cls = RECIPE_KINDS[kind][0]
    path, data = read_recipe(kind, name_or_path)
    source = f"{kind} recipe {path}"
    tables = dataset_tables(cls, data, source)
    if check_dataset is not None:
        for name in tables:
            try:
                check_dataset(name)
            except UserError as exc:
                raise UserError(f"[dataset.{name}] of {source}: {exc}") from None
    data = {k: v for k, v in data.items() if k != DATASET_TABLES}
    data.setdefault("name", path.stem)
    if dataset is not None and dataset in tables:
        data.update(tables[dataset])
        source += f" for {dataset}"
    values = dict(overrides) if isinstance(overrides, Mapping) else dict(parse_override(t) for t in overrides)
    data.update(values)  # typed values (robdistill.config.overrides), or key=value texts parsed here
    source += " with overrides" if values else ""
    return build_recipe(cls, data, source, check)


def override_recipe(recipe: R, values: dict[str, Any], check: NameCheck | None = None) -> R:
    """``recipe`` with some fields replaced (keyword overrides of the Python API), checked like a
    loaded recipe: unknown fields, wrong types and out-of-range values are one-line errors."""
    source = f"recipe '{getattr(recipe, 'name', '')}' with overrides"
    return build_recipe(type(recipe), {**to_dict(recipe), **values}, source, check)


def to_dict(recipe: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(recipe).items()}


# Fields added after results were first cached, at the value that reproduces the earlier behaviour:
# left out of cache keys at that value, so the keys of everything cached before they existed stay
# valid. A teacher's ``augment`` is one of them; a student's has been part of its key from the start
# (teacher recipes are told apart by their ``objective``).
KEY_REFERENCE: dict[str, Any] = {"precision": "fp32", "analysis_n_eval": 0, "threat_model": "linf", "compile": False}
TEACHER_KEY_REFERENCE: dict[str, Any] = {"augment": "none"}


def key_fields(values: dict[str, Any]) -> dict[str, Any]:
    """A recipe's fields as cache keys hash them: ``precision`` at ``fp32`` and a teacher's
    ``augment`` at ``none`` are left out (see ``KEY_REFERENCE``)."""
    reference = {**KEY_REFERENCE, **(TEACHER_KEY_REFERENCE if "objective" in values else {})}
    return {k: v for k, v in values.items() if not (k in reference and v == reference[k])}


def fingerprint(payload: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-serialisable payload (the teacher cache key)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
