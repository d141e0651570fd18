"""Independent random streams, one per (seed, stage, purpose, rank) (METHODS section 3, Randomness).

Every random draw of training comes from a stream whose seed is derived from ``--seed`` by
NumPy's :class:`~numpy.random.SeedSequence` with a spawn key (stage, purpose, rank). Unlike offsets
(``seed + 1``, ``seed + 2`` ...) no two streams coincide across seeds, stages or purposes, and a
student's initial weights and batch order are independent of its teacher's: nothing but the
(perturbed) logits passes between them.
"""
from __future__ import annotations

from robdistill.core import distributed
from robdistill.core.errors import UserError

# Fixed numbers, never renumbered: changing one changes every result drawn from that stream.
STAGES: dict[str, int] = {"teacher": 1, "student": 2}
PURPOSES: dict[str, int] = {
    "init": 1,        # initial weights
    "order": 2,       # mini-batch order
    "attack": 3,      # training attack (random starts; TRADES' start noise)
    "validation": 4,  # the per-epoch validation PGD
    "perturb": 5,     # teacher-logit perturbation (nonmax-shuffle, confidence-swap)
    "augment": 6,     # data augmentation
}
STREAMS_VERSION = 1  # part of cache keys: bumps when the derivation changes


def stream_seed(seed: int, stage: str, purpose: str, rank: int = 0) -> int:
    """A 64-bit seed for one stream: ``SeedSequence(seed, spawn_key=(stage, purpose, rank))``.

    ``rank`` is the process's rank under torchrun for streams drawn per rank on the rank's own rows
    (rank 0, a single process, is the default)."""
    import numpy as np

    if int(seed) < 0:
        raise UserError(f"--seed must be a non-negative integer; got {seed}")
    if stage not in STAGES:
        raise ValueError(f"unknown stream stage '{stage}'; known: {', '.join(STAGES)}")
    if purpose not in PURPOSES:
        raise ValueError(f"unknown stream purpose '{purpose}'; known: {', '.join(PURPOSES)}")
    sequence = np.random.SeedSequence(int(seed), spawn_key=(STAGES[stage], PURPOSES[purpose], int(rank)))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def rank_stream(seed: int, stage: str, purpose: str) -> int:
    """The seed of a stream drawn per rank on the rank's own rows (training attacks, augmentation):
    each rank gets its own independent stream; a single process is rank 0."""
    return stream_seed(seed, stage, purpose, distributed.context().rank)
