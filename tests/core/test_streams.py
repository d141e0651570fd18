"""Independent random streams (issue "Trust", item 3): every (seed, stage, purpose, rank) draws from
its own seed. Each test here failed on the code before its fix."""
from __future__ import annotations

import itertools

import pytest

from robdistill.core.errors import UserError


# ------------------------------------------------------------------ 3. independent random streams

def test_stream_seeds_never_collide_across_seeds_stages_purposes_and_ranks() -> None:
    from robdistill.core.streams import PURPOSES, STAGES, stream_seed

    seen = {}
    for seed, stage, purpose, rank in itertools.product(range(40), STAGES, PURPOSES, range(4)):
        value = stream_seed(seed, stage, purpose, rank)
        assert value not in seen, (seed, stage, purpose, rank, seen.get(value))
        seen[value] = (seed, stage, purpose, rank)
    assert stream_seed(3, "teacher", "init") == stream_seed(3, "teacher", "init")  # reproducible


def test_negative_seed_is_a_user_error() -> None:
    from robdistill.core.streams import stream_seed

    with pytest.raises(UserError, match="--seed"):
        stream_seed(-1, "teacher", "init")
