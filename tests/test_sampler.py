"""The sampler's filters and draws, on hand-made logit vectors."""

import numpy as np
import pytest

from qwen3repro.engine.sampler import PRESETS, Sampler, SamplingParams, apply_penalties, filter_distribution, preset
from qwen3repro.errors import UserError


def logits(seed: int = 0, n: int = 1000) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, n).astype(np.float32)


def entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_temperature_zero_and_top_k_one_are_argmax():
    for seed in range(20):
        x = logits(seed)
        assert Sampler(SamplingParams(temperature=0.0, seed=seed)).sample(x) == int(x.argmax())
        assert Sampler(SamplingParams(temperature=1.5, top_k=1, top_p=1.0, seed=seed)).sample(x) == int(x.argmax())


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p():
    x = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05]))
    for p, expected in [
        (0.5, [0]),
        (0.51, [0, 1]),
        (0.7, [0, 1]),
        (0.71, [0, 1, 2]),
        (0.9, [0, 1, 2, 3]),
        (1.0, [0, 1, 2, 3, 4]),
    ]:
        d = filter_distribution(x, SamplingParams(temperature=1.0, top_k=0, top_p=p))
        assert sorted(d.ids.tolist()) == expected, p
        assert np.isclose(d.probs.sum(), 1.0)


def test_min_p_keeps_tokens_with_at_least_min_p_times_the_top_probability():
    x = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
    d = filter_distribution(x, SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.5))
    assert sorted(d.ids.tolist()) == [0, 1, 2]  # 0.1 < 0.5 * 0.4
    assert np.allclose(d.probs, np.array([0.4, 0.3, 0.2]) / 0.9)


def test_top_k_keeps_the_k_most_likely():
    x = logits(3)
    d = filter_distribution(x, SamplingParams(temperature=1.0, top_k=7, top_p=1.0))
    assert set(d.ids.tolist()) == set(np.argsort(-x)[:7].tolist()) and d.after_top_k == 7


def test_raising_temperature_raises_entropy():
    x = logits(4)
    entropies = [
        entropy(filter_distribution(x, SamplingParams(temperature=t, top_k=0, top_p=1.0)).probs)
        for t in (0.2, 0.5, 1.0, 1.5, 3.0)
    ]
    assert all(a < b for a, b in zip(entropies, entropies[1:])), entropies


def test_same_seed_same_tokens_and_another_seed_differs():
    x = logits(5, n=50)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=42)

    def draws(p):
        sampler = Sampler(p)
        return [sampler.sample(x) for _ in range(30)]

    assert draws(params) == draws(params)
    assert draws(params) != draws(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=43))


def test_draws_follow_the_filtered_distribution():
    x = np.log(np.array([0.6, 0.3, 0.1]))
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=0))
    counts = np.bincount([sampler.sample(x) for _ in range(6000)], minlength=3) / 6000
    assert np.allclose(counts, [0.6, 0.3, 0.1], atol=0.025)


def test_penalties_lower_repeated_tokens():
    x = np.array([2.0, -1.0, 0.5, 0.0], dtype=np.float32)
    rep = apply_penalties(x, SamplingParams(repetition_penalty=2.0), np.array([0, 1]), np.array([], dtype=np.int64))
    assert rep.tolist() == [1.0, -2.0, 0.5, 0.0]
    pres = apply_penalties(x, SamplingParams(presence_penalty=1.5), np.array([0, 1, 2]), np.array([2, 2]))
    assert pres.tolist() == [2.0, -1.0, -1.0, 0.0]  # once per token, only tokens of the output


def test_qwen3_presets():
    assert (
        PRESETS["thinking"].temperature == 0.6 and PRESETS["thinking"].top_p == 0.95 and PRESETS["thinking"].top_k == 20
    )
    assert PRESETS["non-thinking"].temperature == 0.7 and PRESETS["non-thinking"].top_p == 0.8
    assert preset("thinking", top_p=0.5).top_p == 0.5


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(temperature=-0.1), "temperature must be >= 0"),
        (dict(top_p=0.0), "top-p must be in"),
        (dict(top_p=1.5), "top-p must be in"),
        (dict(top_k=-1), "top-k must be >= 0"),
        (dict(min_p=2.0), "min-p must be in"),
        (dict(temperature=float("nan")), "temperature must be a finite number"),
        (dict(repetition_penalty=0.0), "repetition penalty must be > 0"),
    ],
)
def test_invalid_values_are_one_line_errors(bad, message):
    with pytest.raises(UserError, match=message):
        SamplingParams(**bad)


def filtered_by_a_full_sort(x: np.ndarray, params: SamplingParams) -> list[int]:
    """The filters the slow way: a stable sort of the whole vocabulary (equal values, lower id first)."""
    probs = np.exp(x.astype(np.float64) / params.temperature - (x.max() / params.temperature))
    probs /= probs.sum()
    ids = np.argsort(-probs, kind="stable")
    if 0 < params.top_k < len(ids):
        ids = ids[: params.top_k]
    if params.top_p < 1.0:
        cumulative = np.cumsum(probs[ids]) / probs[ids].sum()
        ids = ids[: int(np.searchsorted(cumulative, params.top_p * (1 - 1e-12), side="left")) + 1]
    return [i for i in ids.tolist() if probs[i] >= params.min_p * probs[ids[0]]]


@pytest.mark.parametrize("flatness", [0.05, 1.0, 6.0])
def test_filters_keep_the_prefix_of_a_full_sort_with_ties_at_the_edge_to_the_lower_id(flatness):
    # the filters sort only as much of the vocabulary as they keep; ties (repeated logits, banned
    # tokens) must still fall as a stable sort of all 151,936 would put them
    rng = np.random.default_rng(7)
    x = (rng.normal(0, flatness, 151_936)).astype(np.float32)
    x[rng.integers(0, len(x), 2000)] = np.float32(x.max() - flatness)  # a tie that straddles top-k's edge
    x[rng.integers(0, len(x), 3000)] = -np.inf
    for params in [
        SamplingParams(temperature=0.6, top_k=20, top_p=0.95),
        SamplingParams(temperature=1.5, top_k=0, top_p=0.8),
        SamplingParams(temperature=0.7, top_k=0, top_p=1.0, min_p=0.05),
        SamplingParams(temperature=1.0, top_k=500, top_p=0.9, min_p=0.01),
    ]:
        d = filter_distribution(x, params)
        expected = filtered_by_a_full_sort(x, params)
        assert len(d.ids) == len(expected), params
        # the boundary of top-p may move by one where the cumulative sum rounds otherwise
        assert d.ids.tolist()[: len(expected) - 1] == expected[:-1], params
