"""KL-divergence statistics as llama-perplexity --kl-divergence defines them, on hand-checked arrays."""

import math

import numpy as np
import pytest

from qwen3repro.accuracy.divergence import Divergence, compare, mean_and_error, median, percentile
from qwen3repro.engine.logprobs import log_softmax


def test_a_distribution_against_itself_has_zero_kld_and_the_same_top_token_everywhere():
    logits = np.random.default_rng(0).normal(size=(30, 50)).astype(np.float32)
    targets = np.arange(30) % 50
    d = Divergence()
    d.add(compare(logits, logits, targets))
    s = d.summary()
    assert s["kld_mean"] == 0.0 and s["kld_max"] == 0.0 and s["kld_min"] == 0.0
    assert s["same_top_p"] == 1.0 and s["same_top_p_error"] == 0.0
    assert s["rms_dp"] == 0.0 and s["dp_max"] == 0.0
    assert s["ppl"] == s["ppl_base"] and s["ppl_ratio"] == 1.0 and s["ln_ppl_ratio"] == 0.0
    assert s["ln_ppl_correlation"] == pytest.approx(1.0)


def test_two_token_example_by_hand():
    base = np.array([[0.0, 0.0]], np.float32)  # p = 1/2, 1/2
    quant = np.array([[math.log(3.0), 0.0]], np.float32)  # p = 3/4, 1/4
    p = compare(base, quant, np.array([0]))
    assert p.kld[0] == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    assert p.nll[0] == pytest.approx(-math.log(0.75)) and p.nll_base[0] == pytest.approx(math.log(2))
    assert p.p_diff[0] == pytest.approx(0.25)
    assert p.max_abs_dlogit[0] == pytest.approx(math.log(3.0))
    assert p.same_top[0]  # a tie in the base: numpy takes the first index on both sides


def test_kld_is_not_symmetric_and_is_taken_with_the_base_as_reference():
    base = np.array([[2.0, 0.0, 0.0]], np.float32)
    quant = np.array([[0.0, 0.0, 0.0]], np.float32)
    pb = np.exp(base[0]) / np.exp(base[0]).sum()
    expected = float((pb * np.log(pb / (1 / 3))).sum())
    assert compare(base, quant).kld[0] == pytest.approx(expected)
    assert compare(quant, base).kld[0] != pytest.approx(expected)


def test_mean_and_error_is_llama_cpps_standard_error_and_needs_eleven_values():
    x = np.array([1.0, 2, 4, 4, 5, 7, 9, 10, 10, 12, 13, 20])
    mean, err = mean_and_error(x.sum(), (x * x).sum(), len(x))
    assert mean == pytest.approx(x.mean())
    assert err == pytest.approx(math.sqrt(x.var() / (len(x) - 1)))  # population variance / (n - 1)
    assert mean_and_error(x[:10].sum(), (x[:10] ** 2).sum(), 10)[1] == 0.0


def test_percentiles_interpolate_linearly_at_fraction_times_n_minus_1():
    values = np.arange(11, dtype=float)  # 0..10
    assert percentile(values, 0.95) == pytest.approx(9.5)
    assert percentile(values, 0.999) == pytest.approx(9.99)
    assert percentile(values, 0.0) == 0.0 and percentile(values, 1.0) == 10.0
    assert median(np.array([1.0, 2.0, 3.0, 10.0])) == 2.5 and median(np.array([1.0, 5.0, 9.0])) == 5.0


def test_same_top_p_rms_dp_and_ppl_ratio_over_several_chunks():
    base = np.zeros((20, 4), np.float32)
    base[:, 0] = math.log(3.0)  # base: token 0 with p 1/2, the others 1/6
    quant = np.zeros((20, 4), np.float32)
    quant[:10, 0] = math.log(3.0)  # the first half identical
    quant[10:, 1] = math.log(3.0)  # the second half puts the mass on token 1
    targets = np.zeros(20, np.int64)
    d = Divergence()
    d.add(compare(base[:8], quant[:8], targets[:8]))  # accumulated in two pieces, as chunks are
    d.add(compare(base[8:], quant[8:], targets[8:]))
    s = d.summary()
    assert s["count"] == 20
    assert s["same_top_p"] == pytest.approx(0.5)
    assert s["same_top_p_error"] == pytest.approx(math.sqrt(0.5 * 0.5 / 19))
    dp = np.array([0.0] * 10 + [1 / 6 - 1 / 2] * 10)
    assert s["dp_mean"] == pytest.approx(dp.mean()) and s["dp_min"] == pytest.approx(1 / 6 - 1 / 2)
    assert s["rms_dp"] == pytest.approx(math.sqrt((dp**2).mean()))
    nll = np.array([math.log(2)] * 10 + [math.log(6)] * 10)
    assert s["ppl"] == pytest.approx(math.exp(nll.mean())) and s["ppl_base"] == pytest.approx(2.0)
    assert s["ppl_ratio"] == pytest.approx(math.exp(nll.mean() - math.log(2)))
    kl_second_half = 0.5 * math.log(0.5 / (1 / 6)) + (1 / 6) * math.log((1 / 6) / 0.5)
    assert s["kld_mean"] == pytest.approx(kl_second_half / 2)
    assert s["kld_median"] == pytest.approx(kl_second_half / 2)  # between a 0 and a kl_second_half
    assert s["kld_max"] == pytest.approx(kl_second_half)


def test_large_vocabularies_are_compared_in_blocks_with_the_same_result():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(150, 1000)).astype(np.float32)
    quant = base + rng.normal(scale=0.1, size=base.shape).astype(np.float32)
    whole = compare(base, quant, np.arange(150))
    pieces = [compare(base[i : i + 7], quant[i : i + 7], np.arange(150)[i : i + 7]) for i in range(0, 150, 7)]
    assert np.allclose(whole.kld, np.concatenate([p.kld for p in pieces]))
    assert np.allclose(whole.nll, np.concatenate([p.nll for p in pieces]))


def test_llama_perplexitys_stored_base_keeps_its_16_bit_levels_and_drops_what_is_below_e_minus_16():
    from qwen3repro.accuracy.divergence import llama_perplexity_base

    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((3, 5000)) * 8).astype(np.float32)
    stored, kept = llama_perplexity_base(logits)
    exact = log_softmax(logits)
    assert np.abs(stored - exact)[kept].max() <= 16 / 65535  # one level, whatever the row's range
    assert not kept[exact < -16.001].any() and kept[exact > -15.999].all()
    same = compare(logits, logits, base="llama-perplexity")
    assert np.abs(same.kld).max() <= 16 / 65535 and same.same_top.all()
    assert (compare(logits, logits).kld == 0).all()  # the exact base: 0, not a floor


@pytest.mark.parametrize("base", ["exact", "llama-perplexity"])
def test_the_block_size_and_a_prepared_base_change_no_bit(base, monkeypatch):
    """Every figure is per position: comparing 1, 4 or 64 positions at a time, or many files with
    one prepared base, gives the same floats."""
    import qwen3repro.accuracy.divergence as divergence

    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((2, 37, 3000)) * 4).astype(np.float32)
    targets = rng.integers(0, 3000, 37)
    results = []
    for rows in (1, 4, 64):
        monkeypatch.setattr(divergence, "ROWS", rows)
        prepared = divergence.BaseDistribution(logits[0], base)
        results.append([prepared.compare(logits[1], targets), compare(logits[0], logits[1], targets, base)])
    fields = ("kld", "same_top", "max_abs_dlogit", "sum_abs_dlogit", "nll", "nll_base")
    for a, b in zip(results[0], results[0][1:] + [r for pair in results[1:] for r in pair]):
        assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields)
    without = divergence.BaseDistribution(logits[0], base).compare(logits[1], targets, dlogits=False)
    assert np.array_equal(without.kld, results[0][0].kld) and not without.max_abs_dlogit.any()
