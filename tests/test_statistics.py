"""das.statistics on fixed tables whose answers are computed by hand (binomial sums, Holm's and
Benjamini-Hochberg's step rules), and its calibration on simulated null tables."""

import math

import numpy as np
import pytest

from causal_das.das import statistics


def binomial_tail(k: int, n: int) -> float:
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


def test_exact_mcnemar_is_the_binomial_tail_of_the_discordant_pairs():
    assert statistics.mcnemar_exact(10, 2) == pytest.approx(79 / 4096, rel=1e-12)  # (66 + 12 + 1) / 2^12
    assert statistics.mcnemar_exact(7, 5) == pytest.approx(binomial_tail(7, 12), rel=1e-12)
    assert statistics.mcnemar_exact(0, 0) == 1.0


def test_a_paired_table_counts_only_the_discordant_pairs():
    # 1000 pairs: both right on 600, both wrong on 300, DAS alone right on 70, the baseline alone on 30.
    a = np.array([1] * 600 + [0] * 300 + [1] * 70 + [0] * 30)
    b = np.array([1] * 600 + [0] * 300 + [0] * 70 + [1] * 30)
    record = statistics.paired_comparison(a, b)
    assert record["discordant"] == {"a_only": 70, "b_only": 30} and record["test"].startswith("exact McNemar")
    assert record["difference"] == pytest.approx(0.04)
    assert record["p_value"] == pytest.approx(binomial_tail(70, 100), rel=1e-9)
    low, high = record["interval"]
    # The paired normal interval for comparison: 0.04 +- 1.96 * sd(d) / sqrt(n).
    d = a - b
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert low < 0.04 < high and abs(low - (0.04 - half)) < 0.004 and abs(high - (0.04 + half)) < 0.004
    # The unpaired rule this replaces treats the two rates as independent: a wider error.
    unpaired = math.sqrt((0.67 * 0.33 + 0.63 * 0.37) / 1000)
    assert half < 1.96 * unpaired


def test_a_mean_over_draws_is_compared_by_sign_flips():
    rng = np.random.default_rng(0)
    a = (rng.random(500) < 0.8).astype(float)
    draws = (rng.random((5, 500)) < 0.5).mean(0)  # five random subspaces per pair, averaged
    record = statistics.paired_comparison(a, draws, seed=1)
    assert record["test"].startswith("sign-flip") and record["p_value"] < 1e-3 and "discordant" not in record
    assert record == statistics.paired_comparison(a, draws, seed=1)  # the same seed, the same numbers
    assert statistics.paired_comparison(draws, draws)["p_value"] == 1.0


def test_holm_and_benjamini_hochberg_on_a_fixed_table():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005 x 4, 0.01 x 3, 0.03 x 2, 0.04 x 1, then the running maximum.
    assert statistics.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    holm = statistics.adjust(p, "holm", level=0.05)
    assert holm["passes"] == [True, False, False, True] and holm["controls"] == "family-wise error rate"
    # Benjamini-Hochberg: p x 4 / rank, then the running minimum from the largest.
    bh = statistics.adjust(p, "bh", level=0.05)
    assert bh["adjusted"] == pytest.approx([0.02, 0.04, 0.04, 0.02]) and all(bh["passes"])
    assert statistics.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    with pytest.raises(ValueError, match="unknown adjustment"):
        statistics.adjust(p, "bonferroni-ish")


def test_under_the_null_the_paired_test_calls_at_most_its_level():
    """400 tables of 400 pairs where DAS and the baseline are equally good (correlated, as alignments
    of one site are): the one-sided test at 0.05 calls DAS better on at most 5% (plus noise)."""
    rng = np.random.default_rng(0)
    calls = 0
    for _ in range(400):
        shared = rng.random(400) < 0.6
        a = np.where(rng.random(400) < 0.8, shared, rng.random(400) < 0.6)
        b = np.where(rng.random(400) < 0.8, shared, rng.random(400) < 0.6)
        calls += statistics.mcnemar_exact(int((a & ~b).sum()), int((~a & b).sum())) <= 0.05
    assert calls / 400 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 400)


def test_scores_that_are_not_per_pair_stop_with_one_line():
    with pytest.raises(ValueError, match="the same test pairs"):
        statistics.paired_comparison([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        statistics.paired_comparison([1, 2], [1, 0])
    with pytest.raises(ValueError, match="one score per test pair"):
        statistics.paired_comparison([[1, 0]], [[1, 0]])


def test_beating_all_is_decided_by_the_weakest_comparison():
    """DAS must beat each baseline: the claim's p is the largest McNemar p, its interval that of the
    decisive comparison (a hand-made table: 40 pairs, DAS right on 30)."""
    own = np.array([1] * 30 + [0] * 10, dtype=float)
    weak = np.array([0] * 20 + [1] * 10 + [0] * 10, dtype=float)  # DAS alone right on 20, the baseline alone on none
    close = np.array([0] * 4 + [1] * 26 + [1] * 2 + [0] * 8, dtype=float)  # DAS alone on 4, the baseline alone on 2
    result = statistics.beats_all(own, {"weak": weak, "close": close})
    assert result["decisive"] == "close" and result["comparisons"]["close"]["own_only"] == 4
    assert result["comparisons"]["close"]["other_only"] == 2
    assert result["p_value"] == pytest.approx(statistics.mcnemar_exact(4, 2)) == pytest.approx(22 / 64)  # P(Bin(6, 1/2) >= 4)
    assert result["comparisons"]["weak"]["p_value"] == pytest.approx(0.5 ** 20)
    low, high = result["interval"]
    assert result["difference"] == pytest.approx(2 / 40) and low <= result["difference"] <= high
    with pytest.raises(ValueError, match="0/1 scores"):
        statistics.beats_all(own, {"mean": np.full(40, 0.5)})


def test_the_tests_and_adjustments_agree_with_statsmodels():
    """The same answers as statsmodels, a library written apart from this one: Holm and
    Benjamini-Hochberg (`multipletests`) on 50 random families, and exact McNemar (`mcnemar`, which is
    two-sided: twice the smaller binomial tail) on every table with up to 30 discordant pairs."""
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for _ in range(50):
        p = np.concatenate([rng.random(20), rng.random(5) * 1e-3])  # a few true effects among nulls
        for method, theirs in (("holm", "holm"), ("bh", "fdr_bh")):
            reject, adjusted, _, _ = multipletests(p, alpha=0.05, method=theirs)
            ours = statistics.adjust(p, method, level=0.05)
            assert ours["adjusted"] == pytest.approx(adjusted, rel=1e-9, abs=1e-12)
            assert ours["passes"] == list(reject)
    for a_only in range(31):
        for b_only in range(31 - a_only):
            two_sided = mcnemar([[10, a_only], [b_only, 10]], exact=True).pvalue
            one_sided = statistics.mcnemar_exact(a_only, b_only)
            if a_only + b_only and a_only > b_only:
                assert min(1.0, 2 * one_sided) == pytest.approx(two_sided, rel=1e-9)
            assert one_sided == pytest.approx(1.0 if a_only + b_only == 0 else binomial_tail(a_only, a_only + b_only), rel=1e-9)
