"""AutoAttack (Croce & Hein 2020) through the reference implementation (PyPI ``pyautoattack``),
with its warnings captured and, per component, the samples that component fooled (for the
Square-versus-white-box check, METHODS section 4)."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from robdistill.attacks.base import ATTACKS, Attack, AttackOutput, Budget
from robdistill.core.errors import UserError
from robdistill.core.modes import eval_mode, preserved_global_rng
from robdistill.core.precision import Precision


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@ATTACKS.register("autoattack")
class AutoAttack(Attack):
    """AutoAttack (Croce & Hein 2020), the reference implementation from PyPI ``pyautoattack``,
    under L-inf or L2 (``norm``; the library's ``norm='Linf'`` / ``'L2'``).

    Versions ``standard`` / ``plus`` / ``rand`` / ``custom`` (with ``attacks``); ``square_queries``
    overrides Square's query budget (library default 5000). Its gradient-masking and sanity warnings
    (logger ``auto-attack``) are captured and returned with the result; the caller's global RNG
    state is preserved around the library, which seeds it.

    The library's run is left exactly as it is; the robust flags it holds after each component are
    recorded, so ``fooled_by`` says which component fooled which sample. Components after Square in
    the version's order (``plus``) never see the samples Square fooled; they are run on those
    samples afterwards, so the Square-versus-white-box gap (METHODS section 4) is exact.

    Under bf16 the library attacks the model's forward under autocast, and its result is re-judged
    in fp32: a sample is robust only if fp32 forwards classify it correctly, and the samples the
    bf16 run called fooled (or misclassified clean) that fp32 classifies correctly are attacked
    again, in fp32.

    Args:
        eps: the radius.
        seed: AutoAttack's seed.
        version: ``standard``, ``plus``, ``rand`` or ``custom``.
        attacks: with ``custom``, its components (``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fab-t``,
            ``square``).
        square_queries: Square's query budget (default 5000).
        precision: what the components craft in; flags are judged in fp32.
        norm: ``linf`` or ``l2``.

    Example:
        >>> import torch, robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> x, y = data.test.x[:8], data.test.y[:8]
        >>> attack = rd.attacks.AutoAttack(eps=0.1, version="custom", attacks=["apgd-ce"])
        >>> out = attack.run(model, x, y, progress=False)
        >>> bool((out.robust <= (model(x).argmax(1) == y)).all())
        True
    """

    name = "autoattack"
    chunked = True
    stronger_than = ("pgd", "cw", "fgsm", "transfer")
    VERSIONS = ("standard", "plus", "rand", "custom")
    ATTACK_NAMES = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")

    def __init__(self, eps: float, seed: int = 0, version: str = "standard",
                 attacks: list[str] | None = None, square_queries: int | None = None,
                 precision: str | Precision = "fp32", norm: str = "linf"):
        if version not in self.VERSIONS:
            raise UserError(f"autoattack version '{version}' is unknown; use one of {', '.join(self.VERSIONS)}")
        if version == "custom":
            if not attacks or any(a not in self.ATTACK_NAMES for a in attacks):
                raise UserError(f"autoattack version 'custom' needs attacks from {', '.join(self.ATTACK_NAMES)}")
        elif attacks:
            raise UserError("autoattack 'attacks' can only be given with version = 'custom'")
        if square_queries is not None and int(square_queries) < 1:
            raise UserError(f"autoattack square_queries must be >= 1; got {square_queries}")
        params: dict[str, Any] = {"version": version, "attacks": list(attacks) if attacks else None}
        if square_queries is not None:
            params["square_queries"] = int(square_queries)
        super().__init__(eps, seed, precision, norm, **params)

    # the fewest classes each component works with: the DLR loss reads the third-largest logit,
    # its targeted form the fourth (Croce & Hein 2020, Eq. 5 and 6)
    MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4}
    TARGET_CLASSES = 9  # the library's number of target classes for apgd-t and fab-t

    def attack_batch(self, model, x, y, generator):  # pragma: no cover - run() is overridden
        raise NotImplementedError

    def _probe(self, steps: int) -> "Attack":
        probe = AutoAttack(0.0, seed=self.seed, version=self.params["version"], attacks=self.params["attacks"],
                           square_queries=steps, norm=self.norm)
        probe._iterations = steps
        return probe

    _iterations: int | None = None  # a cap on every component's iterations (the eps = 0 probe only)

    def _adversary(self, model: nn.Module, device: torch.device, num_classes: int):
        from pyautoattack import AutoAttack as Library

        kwargs = {"attacks": self.params["attacks"]} if self.params["version"] == "custom" else {}
        adversary = Library(model, eps=self.eps, norm=self.threat.ops.autoattack, version=self.params["version"],
                            seed=self.seed, device=device, **kwargs)
        for component in adversary.attacks_to_run:
            needed = self.MIN_CLASSES.get(component, 2)
            if num_classes < needed:
                usable = [a for a in self.ATTACK_NAMES if self.MIN_CLASSES.get(a, 2) <= num_classes]
                raise UserError(f"autoattack component {component} needs at least {needed} classes (DLR loss) and "
                                f"the model has {num_classes}; use version = \"custom\" with attacks from "
                                f"{', '.join(usable)}")
        # targeted components: at most C - 1 target classes (the library's standard is 9)
        adversary.apgd_targeted.n_target_classes = self.target_classes(num_classes)
        adversary.fab.n_target_classes = self.target_classes(num_classes)
        if "square_queries" in self.params:
            adversary.square.n_queries = self.params["square_queries"]
        if self._iterations is not None:
            for component in (adversary.apgd, adversary.apgd_targeted, adversary.fab):
                component.n_iter = self._iterations
                component.n_restarts = 1
        return adversary

    def budget(self, num_classes: int) -> Budget:
        """Each component's full budget, read off the library's configuration for this version (and
        checked against counted passes in tests/experiments/test_estimate.py): APGD a gradient per
        iteration and one to start, x restarts x EOT (x target classes for apgd-t); FAB one per class
        per iteration (its Jacobian), FAB-T one per target class per iteration plus two forwards;
        Square n_queries forwards; and a dozen forwards of start-up checks."""
        adversary = self._adversary(nn.Identity(), torch.device("cpu"), num_classes)
        apgd, targeted, fab, square = adversary.apgd, adversary.apgd_targeted, adversary.fab, adversary.square
        apgd_runs = apgd.n_restarts * getattr(apgd, "eot_iter", 1)
        targeted_runs = targeted.n_restarts * targeted.n_target_classes
        fab_t_steps = fab.n_iter * fab.n_restarts * fab.n_target_classes
        costs = {
            "apgd-ce": Budget((apgd.n_iter + 1) * apgd_runs, 2 * apgd_runs),
            "apgd-dlr": Budget((apgd.n_iter + 1) * apgd_runs, 2 * apgd_runs),
            "apgd-t": Budget((targeted.n_iter + 1) * targeted_runs, 2 * targeted_runs),
            "fab": Budget(fab.n_iter * fab.n_restarts * num_classes, fab.n_iter * fab.n_restarts + 2),
            "fab-t": Budget(fab_t_steps, 2 * fab_t_steps + 2),
            "square": Budget(0, square.n_queries * square.n_restarts + 2),
        }
        total = Budget(0, self.STARTUP_FORWARDS)
        for component in adversary.attacks_to_run:
            total = total + costs[component]
        return total

    STARTUP_FORWARDS = 12  # the library's clean-accuracy and randomness checks (counted: about 11 per sample)

    def target_classes(self, num_classes: int) -> int:
        """How many target classes apgd-t and fab-t use for a model with ``num_classes`` outputs."""
        return min(self.TARGET_CLASSES, num_classes - 1)

    def run(self, model, x, y, batch_size: int = 256, progress: bool = True) -> AttackOutput:
        with self.precision.applied(model):
            if not self.precision.reduced:
                return self._library_run(model, x, y, batch_size, progress)
            out = self._library_run(_Autocast(model, self.precision), x, y, batch_size, progress)
            return self._rejudged(model, x, y, out, batch_size, progress)

    def _library_run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                     progress: bool) -> AttackOutput:
        collector = _WarningCollector()
        logger = logging.getLogger("auto-attack")
        logger.addHandler(collector)
        try:
            with eval_mode(model), preserved_global_rng(x.device):
                num_classes = _num_classes(model, x)
                adversary = self._adversary(model, x.device, num_classes)
                order = list(adversary.attacks_to_run)
                announce = _announcer(self.params["version"], len(y)) if progress else None
                if announce is not None:
                    tqdm.write(f"  autoattack ({self.params['version']}: {', '.join(order)}) on {len(y)} samples ...")
                # per-component flags feed the Square-versus-white-box check: recorded only when
                # Square runs (the recording costs about 3% of an AutoAttack run on the CPU)
                timings: list[tuple[str, float]] = []
                with _recording_components("square" in order, announce, timings) as snapshots:
                    x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
        finally:
            logger.removeHandler(collector)
        fooled = _fooled_by(snapshots, order, len(y), y.device)
        if fooled:
            self._white_box_after_square(model, x, y, order, fooled, batch_size)
        seconds = {name: end - start for (_, start), (name, end) in zip(timings, timings[1:])}
        return AttackOutput(x_adv.detach(), (y_adv == y), collector.messages, fooled, seconds)

    def _rejudged(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, out: AttackOutput, batch_size: int,
                  progress: bool) -> AttackOutput:
        """A reduced-precision run's result with fp32 verdicts: robust iff fp32 forwards classify the
        clean image and the returned one correctly; the samples the run called fooled (or wrong
        clean) that fp32 classifies correctly are attacked again in fp32 (never robust unattacked)."""
        with eval_mode(model):
            fp32_correct = torch.cat([self.correct(model, x[i:i + batch_size], y[i:i + batch_size])
                                      & self.correct(model, out.x_adv[i:i + batch_size], y[i:i + batch_size])
                                      for i in range(0, len(y), batch_size)])
        robust = out.robust & fp32_correct
        disputed = (~out.robust & fp32_correct).nonzero().squeeze(1)
        warnings = list(out.warnings)
        if disputed.numel():
            again = AutoAttack(self.eps, seed=self.seed, version=self.params["version"],
                               attacks=self.params["attacks"], square_queries=self.params.get("square_queries"),
                               norm=self.norm)
            again._iterations = self._iterations
            if progress:
                tqdm.write(f"  autoattack: {disputed.numel()} samples judged differently in fp32, attacked again in fp32")
            redo = again._library_run(model, x[disputed], y[disputed], batch_size, progress)
            robust[disputed] = redo.robust
            out.x_adv[disputed] = redo.x_adv
            warnings += redo.warnings
            for component, flags in out.fooled_by.items():
                flags[disputed] = redo.fooled_by.get(component, torch.zeros_like(redo.robust))
        for flags in out.fooled_by.values():
            flags &= ~robust
        seconds = dict(out.seconds_by)
        if disputed.numel():  # the fp32 re-attack's time goes to its components too
            for component, took in redo.seconds_by.items():
                seconds[component] = seconds.get(component, 0.0) + took
        return AttackOutput(out.x_adv, robust, warnings, out.fooled_by, seconds)

    def _white_box_after_square(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, order: list[str],
                                fooled: dict[str, torch.Tensor], batch_size: int) -> None:
        """Run the components that come after Square on the samples Square fooled (which the
        library skips), adding the samples they fool to ``fooled``."""
        later = order[order.index("square") + 1:] if "square" in order else []
        idx = fooled["square"].nonzero().squeeze(1) if later else torch.empty(0, dtype=torch.long)
        if idx.numel() == 0:
            return
        logger, muted = logging.getLogger("auto-attack"), _WarningCollector()  # the main run reported them
        logger.addHandler(muted)
        try:
            with eval_mode(model), preserved_global_rng(x.device):
                adversary = self._adversary(model, x.device, _num_classes(model, x))
                adversary.attacks_to_run = later
                with _recording_components(True) as snapshots:
                    adversary.run_standard_evaluation(x[idx], y[idx], batch_size=batch_size)
        finally:
            logger.removeHandler(muted)
        for name, sub in _fooled_by(snapshots, later, len(idx), y.device).items():
            fooled[name][idx] |= sub


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    """The number of logits the model outputs (one forward of one image)."""
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


_RECORDING_LOCK = threading.Lock()


class _Autocast(nn.Module):
    """The model's forward under a reduced precision's autocast, returning fp32 logits (what the
    library attacks under bf16)."""

    def __init__(self, model: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.precision.logits(self.model, x)


Announce = Callable[[str, torch.Tensor], None]


def _announcer(version: str, n: int) -> Announce:
    """One line per finished component: its robust accuracy so far and the elapsed time."""
    started = time.perf_counter()

    def announce(component: str, flags: torch.Tensor) -> None:
        robust = int(flags.sum())
        tqdm.write(f"  autoattack ({version}) {component} done: {robust}/{n} robust ({100 * robust / max(n, 1):.1f}%), "
                   f"{time.perf_counter() - started:.0f} s")

    return announce


@contextmanager
def _recording_components(record: bool, announce: Announce | None = None,
                          timings: list[tuple[str, float]] | None = None) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """With ``record``, a copy of pyautoattack's robust flags before its first component and after
    each one; with ``announce``, a call after each component; with ``timings``, ``("start", t)``
    and then ``(component, t)`` as each one finishes (``time.perf_counter``). All by substituting
    a subclass of the library's ``EvaluationState`` for the duration of one run."""
    import pyautoattack.autoattack as library

    snapshots: list[tuple[str, torch.Tensor]] = []
    if timings is not None:
        timings.append(("start", time.perf_counter()))
    base = library.EvaluationState

    class Recording(base):  # type: ignore[misc, valid-type]
        @property
        def robust_flags(self):
            return self._robust_flags

        @robust_flags.setter
        def robust_flags(self, flags):
            if record and not snapshots and flags is not None:
                snapshots.append(("clean", flags.detach().clone()))
            base.robust_flags.fset(self, flags)

        def add_run_attack(self, attack):
            if timings is not None:
                timings.append((attack, time.perf_counter()))
            if record:
                snapshots.append((attack, self.robust_flags.detach().clone()))
            if announce is not None:
                announce(attack, self.robust_flags)
            super().add_run_attack(attack)

    with _RECORDING_LOCK:
        library.EvaluationState = Recording
        try:
            yield snapshots
        finally:
            library.EvaluationState = base


def _fooled_by(snapshots: list[tuple[str, torch.Tensor]], order: list[str], n: int,
               device: torch.device) -> dict[str, torch.Tensor]:
    """Per component, the samples robust before it and not after it (none for components that
    did not run because nothing was left); empty if the library's internals were not recorded."""
    if not snapshots or snapshots[0][0] != "clean":
        return {}
    fooled = {name: torch.zeros(n, dtype=torch.bool, device=device) for name in order}
    previous = snapshots[0][1].to(device)
    for name, flags in snapshots[1:]:
        flags = flags.to(device)
        fooled[name] |= previous & ~flags
        previous = flags
    return fooled


AutoAttackLinf = AutoAttack  # the class's name before it took a norm (L-inf or L2)
