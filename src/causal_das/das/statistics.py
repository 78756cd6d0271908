"""Paired comparisons and multiplicity control: what an alignment judgement rests on.

DAS and every baseline of its site are scored on the same test pairs, so "DAS beats this baseline"
is a paired question: only the pairs where the two disagree carry evidence. `paired_comparison`
answers it with a one-sided test (exact McNemar on the discordant pairs when both are scored 0/1 per
pair; a sign-flip permutation test of the per-pair differences when one is a mean over draws, such
as random subspaces) and a paired bootstrap interval for the difference. A sweep makes hundreds of
such claims at once; `adjust` controls them together (Holm: the family-wise error rate; Benjamini-
Hochberg: the false-discovery rate), raw and adjusted p-values side by side.

scipy does the arithmetic (imported in the functions: importing the package stays light).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
ADJUSTMENTS = ("holm", "bh")  # family-wise error rate; false-discovery rate


def per_pair_scores(values, name: str = "scores") -> np.ndarray:
    """(N,) float scores in [0, 1], one per test pair (1 right, 0 wrong, or a mean over draws)."""
    scores = np.asarray(values, dtype=float)
    if scores.ndim != 1 or not len(scores):
        raise ValueError(f"{name}: expected one score per test pair (a non-empty 1-D array), got shape {scores.shape}")
    if np.isnan(scores).any() or scores.min() < 0 or scores.max() > 1:
        raise ValueError(f"{name}: per-pair scores must lie in [0, 1]")
    return scores


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """One-sided exact McNemar p-value that a beats b: of the discordant pairs, a is right on
    `a_only` and b on `b_only`; under the null each discordant pair goes either way with 1/2."""
    from scipy.stats import binomtest

    n = int(a_only) + int(b_only)
    return 1.0 if n == 0 else float(binomtest(int(a_only), n, 0.5, alternative="greater").pvalue)


def sign_flip_p_value(differences: np.ndarray, seed: int, n_resamples: int = 9999) -> float:
    """One-sided permutation p-value that the mean per-pair difference is above 0: under the null
    each pair's difference is as likely to have the other sign (scipy's one-sample permutation)."""
    from scipy.stats import permutation_test

    if not np.any(differences):
        return 1.0
    result = permutation_test((differences,), lambda d, axis: np.mean(d, axis=axis), permutation_type="samples", vectorized=True,
                              n_resamples=n_resamples, alternative="greater", rng=np.random.default_rng(seed))
    return float(result.pvalue)


def bootstrap_interval(differences: np.ndarray, confidence: float = CONFIDENCE, seed: int = 0, n_resamples: int = 2000,
                       method: str = "BCa") -> tuple[float, float]:
    """A bootstrap interval (BCa, or scipy's other methods) for the mean of per-pair differences
    (pairs resampled whole)."""
    from scipy.stats import bootstrap

    if np.all(differences == differences[0]):  # no spread to resample: the interval is the point
        return float(differences[0]), float(differences[0])
    result = bootstrap((differences,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method=method,
                       rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_comparison(a, b, *, confidence: float = CONFIDENCE, seed: int = 0) -> dict:
    """Alignment a against alignment b on the same test pairs (per-pair scores, see
    `per_pair_scores`): the difference of their rates, its paired bootstrap interval, and the
    one-sided p-value that a does not beat b (exact McNemar when both are 0/1, else sign flips)."""
    a, b = per_pair_scores(a, "a"), per_pair_scores(b, "b")
    if len(a) != len(b):
        raise ValueError(f"paired scores must cover the same test pairs: {len(a)} against {len(b)}")
    differences = a - b
    binary = bool(np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all())
    record = {"difference": float(differences.mean()), "interval": list(bootstrap_interval(differences, confidence, seed)),
              "confidence": confidence, "n_pairs": len(a)}
    if binary:
        a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
        record.update(test="exact McNemar (one-sided)", p_value=mcnemar_exact(a_only, b_only), discordant={"a_only": a_only, "b_only": b_only})
    else:
        record.update(test="sign-flip permutation (one-sided)", p_value=sign_flip_p_value(differences, seed))
    return record


def beats_all(own, others: dict, *, confidence: float = CONFIDENCE, seed: int = 0) -> dict:
    """Whether an alignment scored 0/1 per test pair beats every one of `others` ({name: 0/1 per
    pair}, the same pairs): an exact one-sided McNemar test against each, and the claim's p-value is
    the largest of theirs (an intersection-union test: "beats all" holds at level a when each
    comparison does). The decisive comparison (that largest p) gets a paired bootstrap interval
    (percentile: a mean of thousands of pairs; BCa's jackknife would cost more than the test)."""
    own = per_pair_scores(own, "own")
    if not others:
        raise ValueError("beats_all needs at least one alignment to compare with")
    comparisons = {}
    for name, values in others.items():
        other = per_pair_scores(values, name)
        if len(other) != len(own) or not (np.isin(own, (0, 1)).all() and np.isin(other, (0, 1)).all()):
            raise ValueError(f"{name}: beats_all compares 0/1 scores on the same {len(own)} pairs")
        own_only, other_only = int(((own == 1) & (other == 0)).sum()), int(((own == 0) & (other == 1)).sum())
        comparisons[name] = {"difference": (own_only - other_only) / len(own), "p_value": mcnemar_exact(own_only, other_only),
                             "own_only": own_only, "other_only": other_only}
    decisive = max(comparisons, key=lambda name: (comparisons[name]["p_value"], -comparisons[name]["difference"]))
    interval = bootstrap_interval(own - per_pair_scores(others[decisive]), confidence, seed, method="percentile")
    return {"test": "exact McNemar against each (one-sided); the claim's p is the largest", "p_value": comparisons[decisive]["p_value"],
            "decisive": decisive, "difference": comparisons[decisive]["difference"], "interval": list(interval), "confidence": confidence,
            "n_pairs": len(own), "comparisons": comparisons}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input's order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def adjust(p_values: Sequence[float], method: str = "holm", level: float = 0.05) -> dict:
    """The claims of one family controlled together: adjusted p-values (Holm, or Benjamini-Hochberg
    through scipy) and which claims pass at `level`."""
    p = np.asarray(p_values, dtype=float)
    if method not in ADJUSTMENTS:
        raise ValueError(f"unknown adjustment {method!r}: use one of {', '.join(ADJUSTMENTS)}")
    if not len(p):
        adjusted = p
    elif method == "holm":
        adjusted = holm(p)
    else:
        from scipy.stats import false_discovery_control

        adjusted = false_discovery_control(p, method="bh")
    return {"method": method, "controls": "family-wise error rate" if method == "holm" else "false-discovery rate", "level": level,
            "n_claims": len(p), "adjusted": [float(x) for x in adjusted], "passes": [bool(x <= level) for x in adjusted]}
