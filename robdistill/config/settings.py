"""What every command shares: data, seed, device, tracking and cache locations."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_EXPERIMENT = "robdistill"
DEFAULT_SUITES = {"digits": "fast"}  # every other dataset: "paper"


def default_suite(dataset: str) -> str:
    """The attack suite a dataset is evaluated with unless one is named."""
    return DEFAULT_SUITES.get(dataset, "paper")


@dataclass(frozen=True)
class Settings:
    """The command line's shared options, as one value the experiments take.

    Attributes:
        dataset, data_root, download: which data, from where.
        seed: the seed of every stage's random streams.
        device: ``cpu``, ``cuda``, ...
        tracking_uri, experiment: the MLflow store and experiment.
        cache_dir: where trained teachers and state files are kept.
        progress: lines or bars while working.
        use_registry: find teachers in, and add them to, the store's model registry.
        resume: continue interrupted training from its state file.
        threat_model: ``linf`` or ``l2`` for every stage (None: each recipe's own).

    Example:
        >>> import robdistill as rd
        >>> settings = rd.Settings(dataset="fashion-mnist", seed=1)
        >>> settings.dataset, settings.seed, settings.experiment
        ('fashion-mnist', 1, 'robdistill')
    """

    dataset: str = "digits"
    data_root: Path | None = None
    download: bool = False
    seed: int = 0
    device: str = "cpu"
    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    cache_dir: Path = Path(os.environ.get("ROBDISTILL_CACHE", ".robdistill"))
    progress: bool = True
    use_registry: bool = True  # find teachers in, and add them to, the store's model registry
    resume: bool = False  # continue interrupted teacher training / distillation from its state file
    #: the threat model every stage works in (robdistill.core.threat: "linf", "l2"): set on the teacher,
    #: student and suite recipes of the command; None keeps each recipe's own (linf unless it says)
    threat_model: str | None = None
