"""Property-based tests of the teacher-logit perturbations (METHODS section 3).

Logits are random (B, C) float32 tensors with B in 1..16 and C in 2..12, drawn either element by
element by hypothesis (finite values in [-20, 20], which includes many ties) or densely from a
hypothesis-drawn torch seed. k is the first argmax of each row. ``tied_max_logits`` forces ties
at the row max (two or more copies, and whole rows of equal values).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from robdistill.core.errors import UserError
from robdistill.train.perturbations import PERTURBATIONS, nonmax_positions, perturbation_names

pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = ("keep", "nonmax-shuffle", "nonmax-flatten")
EXTRAS = ("nonmax-flatten-mean", "onehot", "confidence-swap")
ALL = NAMES + EXTRAS
TEMPERATURES = (0.5, 1.0, 4.0, 20.0)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.tuples(st.integers(1, 16), st.integers(2, 12))
temperatures = st.one_of(st.sampled_from(TEMPERATURES), st.floats(0.5, 20.0))
seeds = st.integers(0, 2**31 - 1)


@st.composite
def logits(draw) -> torch.Tensor:
    """Finite (B, C) float32 logits in [-20, 20]."""
    batch, classes = draw(shapes)
    if draw(st.booleans()):
        values = draw(arrays(np.float32, (batch, classes),
                             elements=st.floats(-20, 20, width=32, allow_nan=False, allow_infinity=False)))
        return torch.from_numpy(values.copy())
    g = torch.Generator().manual_seed(draw(seeds))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 10.0]))
    return (torch.randn(batch, classes, generator=g) * scale).clamp(-20, 20)


@st.composite
def unique_max_logits(draw) -> torch.Tensor:
    """Logits whose row max is unique, with a gap of at least 1e-3 above the runner-up.

    (A gap of a few float32 ulps is a separate case: see ``test_flatten_near_tie_keeps_argmax``.)"""
    z = draw(logits())
    gap = draw(st.floats(1e-3, 5.0))
    rows = torch.arange(z.shape[0])
    k = z.argmax(1)
    z[rows, k] = z.max(1).values + gap
    top2 = z.topk(2, dim=1).values
    assert bool((top2[:, 0] > top2[:, 1]).all())
    return z


@st.composite
def tied_max_logits(draw) -> torch.Tensor:
    """Logits with the row max tied in every row: either a drawn set of >= 2 positions set to the
    row max (anywhere, so also before and after the first argmax), or the whole row equal."""
    z = draw(logits())
    classes = z.shape[1]
    for i in range(len(z)):
        if draw(st.integers(0, 3)) == 0:
            z[i] = float(z[i, draw(st.integers(0, classes - 1))])   # all equal
        else:
            tied = draw(st.lists(st.integers(0, classes - 1), min_size=2, max_size=classes, unique=True))
            z[i, tied] = z[i].max()
    counts = (z == z.max(1, keepdim=True).values).sum(1)
    assert bool((counts >= 2).all())
    return z




def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def first_argmax(z: torch.Tensor) -> torch.Tensor:
    """Position of the first maximal entry per row, computed without relying on argmax's tie rule."""
    is_max = z == z.max(1, keepdim=True).values
    return is_max.int().argmax(1)  # argmax over {0, 1} returns the first 1


def nonmax_mask(z: torch.Tensor) -> torch.Tensor:
    mask = torch.ones_like(z, dtype=torch.bool)
    mask[torch.arange(z.shape[0]), first_argmax(z)] = False
    return mask


def probs_at_k(z: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    p = torch.softmax(z.double() / temperature, dim=1)
    return p[torch.arange(z.shape[0]), k]


def tied_copies_lowered(z: torch.Tensor) -> torch.Tensor:
    """z with every copy of the row max other than the first argmax one float32 ulp lower (numpy's
    nextafter toward -inf): the values nonmax-shuffle permutes when the max is tied."""
    out = z.clone().numpy()
    top = out.max(1, keepdims=True)
    lowered = (out == top) & nonmax_mask(z).numpy()
    out[lowered] = np.nextafter(np.broadcast_to(top, out.shape)[lowered], np.float32(-np.inf))
    return torch.from_numpy(out)


def ulp_below(top: torch.Tensor) -> torch.Tensor:
    """top minus the next float32 below it, in float64."""
    below = np.nextafter(top.numpy(), np.float32(-np.inf))
    return top.double() - torch.from_numpy(below).double()


# --------------------------------------------------------------------------- all perturbations

def test_registry_lists_every_perturbation() -> None:
    assert set(perturbation_names()) == set(ALL)
    with pytest.raises(UserError, match="unknown perturbation"):
        PERTURBATIONS.get("nonmax-scramble")


@SETTINGS
@given(z=logits(), seed=seeds, temperature=temperatures)
@pytest.mark.parametrize("name", ALL)
def test_pure_new_tensor_same_shape_deterministic(name: str, z: torch.Tensor, seed: int,
                                                    temperature: float) -> None:
    fn = PERTURBATIONS.get(name)
    before = z.clone()
    out = fn(z, gen(seed), temperature)
    assert torch.equal(z, before), "input was modified"
    assert out is not z and out.data_ptr() != z.data_ptr(), "output aliases the input"
    assert out.shape == z.shape and out.dtype == z.dtype
    assert torch.isfinite(out).all()
    again = fn(z, gen(seed), temperature)
    assert torch.equal(out, again), "same generator seed gave a different result"
    # writing into the output must not reach the input
    out.add_(1.0)
    assert torch.equal(z, before)


@SETTINGS
@given(z=logits(), seed=seeds, temperature=temperatures)
@pytest.mark.parametrize("name", ALL)
def test_perturbations_do_not_touch_global_rng(name: str, z: torch.Tensor, seed: int,
                                               temperature: float) -> None:
    state = torch.get_rng_state()
    PERTURBATIONS.get(name)(z, gen(seed), temperature)
    assert torch.equal(torch.get_rng_state(), state)


@SETTINGS
@given(z=unique_max_logits(), seed=seeds, temperature=temperatures)
@pytest.mark.parametrize("name", NAMES)
def test_unique_argmax_and_max_value_kept(name: str, z: torch.Tensor, seed: int, temperature: float) -> None:
    out = PERTURBATIONS.get(name)(z, gen(seed), temperature)
    k = z.argmax(1)
    rows = torch.arange(z.shape[0])
    assert torch.equal(out.argmax(1), k)
    assert torch.equal(out[rows, k], z[rows, k])
    # and the max stays unique: every other entry is strictly below it
    others = out.masked_fill(~nonmax_mask(z), float("-inf"))
    assert bool((others.amax(1) < out[rows, k]).all())


@SETTINGS
@given(z=logits(), seed=seeds, temperature=temperatures)
@pytest.mark.parametrize("name", NAMES)
def test_ties_first_argmax_position_keeps_the_max(name: str, z: torch.Tensor, seed: int,
                                                  temperature: float) -> None:
    """Tie behaviour (documented): k is the *first* argmax; position k keeps the max value and no
    entry exceeds it (nonmax-shuffle lowers the other tied copies by one ulp, so argmax stays k:
    see ``test_ties_keep_argmax_max_value_and_probability``)."""
    out = PERTURBATIONS.get(name)(z, gen(seed), temperature)
    k = first_argmax(z)
    rows = torch.arange(z.shape[0])
    top = z.max(1).values
    assert torch.equal(out[rows, k], top)
    if name == "nonmax-flatten":
        # with all non-max logits tied at the max, c equals it only up to float32 rounding
        # (see test_flatten_near_tie_keeps_argmax)
        assert bool((out.max(1).values <= top + 1e-5 * (1 + top.abs())).all())
    else:
        assert bool((out.max(1).values == top).all())


def test_nonmax_positions_excludes_first_argmax_only() -> None:
    z = torch.tensor([[1.0, 5.0, 5.0, 0.0], [3.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 9.0]])
    assert nonmax_positions(z).tolist() == [[0, 2, 3], [1, 2, 3], [0, 1, 2]]


def test_tie_example_shuffle_keeps_argmax() -> None:
    z = torch.tensor([[1.0, 5.0, 5.0]]).expand(64, 3).contiguous()
    out = PERTURBATIONS.get("nonmax-shuffle")(z, gen(0), 1.0)
    assert torch.equal(out[:, 1], z[:, 1])
    # the other 5, one ulp lower, lands on position 0 in some rows and stays at 2 in others; the
    # argmax stays at position 1 either way
    five = float(np.nextafter(np.float32(5.0), np.float32(-np.inf)))
    assert {tuple(r) for r in out.tolist()} == {(1.0, 5.0, five), (five, 5.0, 1.0)}
    assert out.argmax(1).tolist() == [1] * 64


def test_all_equal_rows_shuffle_keeps_argmax_first() -> None:
    z = torch.full((32, 6), 2.5)
    out = PERTURBATIONS.get("nonmax-shuffle")(z, gen(1), 1.0)
    below = float(np.nextafter(np.float32(2.5), np.float32(-np.inf)))
    assert out[:, 0].tolist() == [2.5] * 32 and bool((out[:, 1:] == below).all())
    assert out.argmax(1).tolist() == [0] * 32


TIE_KEEPS_MAX = ("keep", "nonmax-shuffle", "nonmax-flatten", "nonmax-flatten-mean")


@SETTINGS
@given(z=tied_max_logits(), seed=seeds, temperature=temperatures)
@pytest.mark.parametrize("name", ALL)
def test_ties_keep_argmax_max_value_and_probability(name: str, z: torch.Tensor, seed: int,
                                                    temperature: float) -> None:
    """Tied top logits (METHODS section 3): every perturbation keeps the first argmax k; those that keep
    the max value keep it at k; the max-class probability at T is kept within 1e-6 relative, or
    within the one-ulp change of the tied copies where ulp(z_k) / T is larger than that."""
    out = PERTURBATIONS.get(name)(z, gen(seed), temperature)
    k = first_argmax(z)
    rows = torch.arange(len(z))
    assert torch.equal(out.argmax(1), k), "the argmax moved"
    if name not in TIE_KEEPS_MAX:
        return
    top = z.max(1).values
    assert torch.equal(out[rows, k], top) and torch.equal(out.max(1).values, top)
    if name == "nonmax-shuffle":
        # multiset kept, except the tied copies of the max: exactly one ulp lower, so k is unique
        assert torch.equal(out.sort(1).values, tied_copies_lowered(z).sort(1).values)
        others = out.masked_fill(~nonmax_mask(z), float("-inf"))
        assert bool((others.amax(1) < top).all())
    if name in ("nonmax-shuffle", "nonmax-flatten"):
        p_in, p_out = probs_at_k(z, k, temperature), probs_at_k(out, k, temperature)
        relative = (p_out - p_in).abs() / p_in
        # nonmax-flatten also rounds c to float32: allow it four ulps of z_k
        ulps = 1.0 if name == "nonmax-shuffle" else 4.0
        allowed = torch.clamp(torch.expm1(ulps * ulp_below(top) / temperature), min=1e-6)
        assert bool((relative <= allowed * (1 + 1e-9)).all()), (relative.max().item(), allowed.min().item())


# --------------------------------------------------------------------------- keep

@SETTINGS
@given(z=logits(), seed=seeds, temperature=temperatures)
def test_keep_returns_equal_values(z: torch.Tensor, seed: int, temperature: float) -> None:
    out = PERTURBATIONS.get("keep")(z, gen(seed), temperature)
    assert torch.equal(out, z)


# --------------------------------------------------------------------------- nonmax-shuffle

@SETTINGS
@given(z=logits(), seed=seeds)
def test_shuffle_keeps_multiset_and_max_position(z: torch.Tensor, seed: int) -> None:
    out = PERTURBATIONS.get("nonmax-shuffle")(z, gen(seed), 1.0)
    # the multiset of values, up to the tied copies of the max (one ulp lower: see the tie tests)
    expected = tied_copies_lowered(z)
    assert torch.equal(out.sort(1).values, expected.sort(1).values), "multiset of values changed"
    k = first_argmax(z)
    rows = torch.arange(z.shape[0])
    assert torch.equal(out[rows, k], z[rows, k])
    assert torch.equal(out.argmax(1), k)
    mask = nonmax_mask(z)
    # the non-max values are a permutation of the non-max values
    assert torch.equal(out[mask].view(len(z), -1).sort(1).values,
                       expected[mask].view(len(z), -1).sort(1).values)


@SETTINGS
@given(z=logits(), seed=seeds)
def test_shuffle_keeps_max_class_probability_at_every_temperature(z: torch.Tensor, seed: int) -> None:
    out = PERTURBATIONS.get("nonmax-shuffle")(z, gen(seed), 1.0)
    k = first_argmax(z)
    for temperature in TEMPERATURES:
        torch.testing.assert_close(probs_at_k(out, k, temperature), probs_at_k(z, k, temperature),
                                   rtol=1e-5, atol=1e-7)
        # the whole sorted distribution is the same too
        torch.testing.assert_close(torch.softmax(out / temperature, 1).sort(1).values,
                                   torch.softmax(z / temperature, 1).sort(1).values, rtol=1e-5, atol=1e-7)


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(8, 16), classes=st.integers(5, 12), seed_a=seeds, seed_b=seeds,
       data_seed=seeds)
def test_shuffle_different_seeds_give_different_permutations(batch: int, classes: int, seed_a: int,
                                                             seed_b: int, data_seed: int) -> None:
    assume(seed_a != seed_b)
    # distinct values, so that different permutations are visible
    z = torch.stack([torch.randperm(classes, generator=gen(data_seed + i)).float() for i in range(batch)])
    fn = PERTURBATIONS.get("nonmax-shuffle")
    a, b = fn(z, gen(seed_a), 1.0), fn(z, gen(seed_b), 1.0)
    # P(all rows agree) <= (1/24)^8 for C >= 5, B >= 8
    assert not torch.equal(a, b)
    # at least one row is actually shuffled away from the input
    assert not torch.equal(a, z)


def test_shuffle_fresh_permutation_on_each_call_with_the_same_generator() -> None:
    z = torch.arange(10.0).repeat(16, 1)
    g = gen(123)
    fn = PERTURBATIONS.get("nonmax-shuffle")
    first, second = fn(z, g, 1.0), fn(z, g, 1.0)
    assert not torch.equal(first, second)
    assert torch.equal(first, fn(z, gen(123), 1.0))


@pytest.mark.parametrize("row", [[10.0, 0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 10.0, 2.0, 3.0],
                                 [0.0, 1.0, 2.0, 3.0, 10.0]])
def test_shuffle_is_uniform_over_nonmax_positions(row: list[float]) -> None:
    n = 20000
    z = torch.tensor(row).repeat(n, 1)
    out = PERTURBATIONS.get("nonmax-shuffle")(z, gen(7), 1.0)
    k = int(torch.tensor(row).argmax())
    assert bool((out[:, k] == 10.0).all())
    positions = [p for p in range(len(row)) if p != k]
    values = [v for v in row if v != 10.0]
    expected = n / len(values)
    for value in values:
        for p in positions:
            count = int((out[:, p] == value).sum())
            # sd ~ sqrt(n * 1/4 * 3/4) ~ 61; 10% of 5000 is 8 sd
            assert abs(count - expected) < 0.1 * expected, (value, p, count)
    # and every permutation of the 4 non-max values appears (24 of them, ~833 each)
    perms = {tuple(r) for r in out[:, positions].tolist()}
    assert len(perms) == 24


# --------------------------------------------------------------------------- nonmax-flatten

@SETTINGS
@given(z=logits(), temperature=temperatures, seed=seeds)
def test_flatten_nonmax_entries_are_equal(z: torch.Tensor, temperature: float, seed: int) -> None:
    out = PERTURBATIONS.get("nonmax-flatten")(z, gen(seed), temperature)
    rest = out[nonmax_mask(z)].view(len(z), -1)
    assert torch.equal(rest, rest[:, :1].expand_as(rest))


@SETTINGS
@given(z=logits(), seed=seeds)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_flatten_keeps_max_class_probability_at_its_temperature(temperature: float, z: torch.Tensor,
                                                                 seed: int) -> None:
    out = PERTURBATIONS.get("nonmax-flatten")(z, gen(seed), temperature)
    k = first_argmax(z)
    torch.testing.assert_close(probs_at_k(out, k, temperature), probs_at_k(z, k, temperature),
                               rtol=1e-5, atol=0.0)


@SETTINGS
@given(z=logits(), temperature=temperatures, seed=seeds)
def test_flatten_value_matches_formula(z: torch.Tensor, temperature: float, seed: int) -> None:
    out = PERTURBATIONS.get("nonmax-flatten")(z, gen(seed), temperature)
    mask = nonmax_mask(z)
    rest = z.double()[mask].view(len(z), -1)
    c = temperature * torch.log(torch.exp(rest / temperature).mean(1))
    torch.testing.assert_close(out.double()[mask].view(len(z), -1)[:, 0], c, rtol=1e-5, atol=1e-4)


@SETTINGS
@given(z=logits(), temperature=temperatures, seed=seeds)
def test_flatten_value_strictly_below_max_when_a_nonmax_is_below(z: torch.Tensor, temperature: float,
                                                                 seed: int) -> None:
    out = PERTURBATIONS.get("nonmax-flatten")(z, gen(seed), temperature)
    mask = nonmax_mask(z)
    top = z.max(1).values
    rest = z[mask].view(len(z), -1)
    flat = out[mask].view(len(z), -1)[:, 0]
    # c is a power mean of the non-max logits: between their min and max (up to rounding)
    assert bool((flat <= rest.max(1).values + 1e-4).all())
    assert bool((flat >= rest.min(1).values - 1e-4).all())
    # strictly below the max whenever some non-max logit is clearly below it (gap >= 1e-3)
    clearly_below = (rest < (top[:, None] - 1e-3)).any(1)
    assert bool((flat[clearly_below] < top[clearly_below]).all())


def test_flatten_hand_example() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    t = 2.0
    out = PERTURBATIONS.get("nonmax-flatten")(z, gen(0), t)
    c = t * np.log((np.exp(1 / t) + np.exp(0 / t) + np.exp(-1 / t)) / 3)
    assert out[0, 0].item() == 3.0
    np.testing.assert_allclose(out[0, 1:].numpy(), [c, c, c], rtol=1e-6)
    # the invariant holds at the T passed in, not at other temperatures
    k = torch.tensor([0])
    torch.testing.assert_close(probs_at_k(out, k, t), probs_at_k(z, k, t), rtol=1e-6, atol=0.0)
    assert abs(probs_at_k(out, k, 0.5).item() - probs_at_k(z, k, 0.5).item()) > 1e-3


def test_flatten_two_classes_is_identity() -> None:
    z = torch.tensor([[2.0, -3.0], [0.5, 4.0]])
    for t in TEMPERATURES:
        torch.testing.assert_close(PERTURBATIONS.get("nonmax-flatten")(z, gen(0), t), z)


@pytest.mark.parametrize("case", ["one-ulp-below", "all-tied"])
def test_flatten_near_tie_keeps_argmax(case: str) -> None:
    if case == "one-ulp-below":
        top = np.float32(20.0)
        below = np.nextafter(top, np.float32(0.0))  # unique max, one ulp above the rest
        z = torch.full((1, 12), float(below))
        z[0, 11] = float(top)
        out = PERTURBATIONS.get("nonmax-flatten")(z, gen(0), 20.0)
        assert out.argmax(1).item() == 11
    else:
        z = torch.zeros(1, 8)  # first argmax is 0; c should be exactly 0
        out = PERTURBATIONS.get("nonmax-flatten")(z, gen(0), 0.5)
        assert out.argmax(1).item() == 0 and out.max().item() == 0.0


# --------------------------------------------------------------------------- extras

@SETTINGS
@given(z=unique_max_logits(), seed=seeds, temperature=temperatures)
@pytest.mark.parametrize("name", ALL)
def test_every_perturbation_keeps_a_unique_argmax(name: str, z: torch.Tensor, seed: int,
                                                 temperature: float) -> None:
    out = PERTURBATIONS.get(name)(z, gen(seed), temperature)
    k = z.argmax(1)
    assert torch.equal(out.argmax(1), k)
    rows = torch.arange(len(z))
    others = out.masked_fill(~nonmax_mask(z), float("-inf"))
    assert bool((others.amax(1) < out[rows, k]).all()), "the max is no longer unique"


@SETTINGS
@given(z=logits(), seed=seeds, temperature=temperatures)
def test_flatten_mean_sets_nonmax_to_their_mean_and_keeps_the_sum(z: torch.Tensor, seed: int,
                                                                  temperature: float) -> None:
    out = PERTURBATIONS.get("nonmax-flatten-mean")(z, gen(seed), temperature)
    mask = nonmax_mask(z)
    k = first_argmax(z)
    rows = torch.arange(len(z))
    assert torch.equal(out[rows, k], z[rows, k])
    rest = out[mask].view(len(z), -1)
    assert torch.equal(rest, rest[:, :1].expand_as(rest))
    torch.testing.assert_close(rest[:, 0].double(), z.double()[mask].view(len(z), -1).mean(1),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.double().sum(1), z.double().sum(1), rtol=1e-5, atol=1e-4)
    # Jensen: the arithmetic mean is at most the exp-space mean, so confidence can only rise
    assert bool((probs_at_k(out, k, temperature) >= probs_at_k(z, k, temperature) - 1e-6).all())


@SETTINGS
@given(z=logits(), seed=seeds, temperature=temperatures)
def test_onehot_is_the_hard_teacher_label(z: torch.Tensor, seed: int, temperature: float) -> None:
    out = PERTURBATIONS.get("onehot")(z, gen(seed), temperature)
    k = z.argmax(1)
    p = torch.softmax(out.double() / temperature, 1)
    expected = torch.nn.functional.one_hot(k, z.shape[1]).double()
    torch.testing.assert_close(p, expected, rtol=0.0, atol=1e-20)
    # it depends on z only through its argmax
    shifted = z.clone()
    shifted[torch.arange(len(z)), k] += 3.0
    assert torch.equal(PERTURBATIONS.get("onehot")(shifted, gen(seed), temperature), out)


@st.composite
def confident_logits(draw) -> tuple[torch.Tensor, float]:
    """Logits whose max-class probability at T is at least 1/2 in every row: no donor can then be
    too unsure for another row (log-odds >= 0 >= what any row's runner-up needs)."""
    z = draw(unique_max_logits())
    temperature = draw(temperatures)
    extra = draw(st.floats(0.0, 5.0))
    k = z.argmax(1)
    rows = torch.arange(len(z))
    mask = nonmax_mask(z)
    lse = torch.logsumexp(z[mask].view(len(z), -1) / temperature, 1)
    z[rows, k] = torch.maximum(z[rows, k], temperature * (lse + extra) + 1e-3)
    return z, temperature


@SETTINGS
@given(case=confident_logits(), seed=seeds)
def test_confidence_swap_permutes_confidence_and_keeps_the_incorrect_classes(case, seed: int) -> None:
    z, temperature = case
    out = PERTURBATIONS.get("confidence-swap")(z, gen(seed), temperature)
    mask = nonmax_mask(z)
    assert torch.equal(out[mask], z[mask]), "non-max logits (their ordering) changed"
    k = z.argmax(1)
    assert torch.equal(out.argmax(1), k)
    # each row now carries some row's confidence: the multiset of max-class probabilities is kept
    torch.testing.assert_close(probs_at_k(out, k, temperature).sort().values,
                               probs_at_k(z, k, temperature).sort().values, rtol=1e-4, atol=1e-6)


def test_confidence_swap_hand_example_and_ordering_guard() -> None:
    t = 1.0
    confident = [4.0, 0.0, -1.0]      # p_max = e^4 / (e^4 + 1 + e^-1)
    unsure = [0.1, 0.0, -0.05]        # p_max ~ 0.35
    z = torch.tensor([confident, unsure])
    fn = PERTURBATIONS.get("confidence-swap")
    # a seed whose permutation swaps the two rows (the other one is the identity)
    swapped = next(out for out in (fn(z, gen(s), t) for s in range(100)) if out[1, 0] > 1.0)
    identity = next(out for out in (fn(z, gen(s), t) for s in range(100)) if out[1, 0] < 1.0)
    torch.testing.assert_close(identity, z)
    p_in = probs_at_k(z, torch.tensor([0, 0]), t)
    p_out = probs_at_k(swapped, torch.tensor([0, 0]), t)
    assert p_out[1].item() == pytest.approx(p_in[0].item(), rel=1e-5)   # unsure row now confident
    # row 0 would need p = 0.35 with runner-up 0: that would put class 0 below class 1, so the
    # guard sets its max one ulp above the runner-up instead
    assert swapped[0, 0].item() > 0.0 and swapped[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert swapped.argmax(1).tolist() == [0, 0]
    assert swapped[:, 1:].tolist() == z[:, 1:].tolist()


def test_confidence_swap_destroys_sample_wise_confidence() -> None:
    """On teacher-like logits (max-class probability >= 1/2 at T, so the ordering guard never acts)
    the per-sample confidence after the swap is unrelated to the sample's own."""
    g = gen(3)
    t = 4.0
    z = torch.randn(4000, 10, generator=g)
    z[:, 0] = t * (torch.logsumexp(z[:, 1:] / t, 1) + 4 * torch.rand(4000, generator=g)) + 1e-3
    k = z.argmax(1)
    assert bool((k == 0).all())
    before = probs_at_k(z, k, t)
    after = probs_at_k(PERTURBATIONS.get("confidence-swap")(z, gen(0), t), k, t)
    from scipy.stats import spearmanr

    assert abs(spearmanr(before.numpy(), after.numpy()).statistic) < 0.1   # ~0 after the swap
    torch.testing.assert_close(after.sort().values, before.sort().values, rtol=1e-4, atol=1e-6)
    assert spearmanr(before.numpy(), before.numpy()).statistic == pytest.approx(1.0)
