"""How much a division (and the cliques) move when the inputs (for X+Y+Z, the triples) they are
computed on change: a subsampling check.

The division is a deterministic function of the IIA graphs, so its uncertainty comes from what the
graphs were measured on. Retraining every W under other seeds is the full answer and costs a
sweep per seed; this check costs a second: `resamples` times, divide a random `fraction` of the
inputs (the same graphs, the same rule and threshold) and compare each set with the full
division's set restricted to the same inputs (Jaccard index: shared / either). A set whose
Jaccard index falls below `STABLE_JACCARD` on average is reported as unstable: which inputs it
holds depends on which other inputs happen to be there, as with a set that grows from a weak,
noisy core; a set held together by strong edges keeps its members. Per input, the share of the
resamples it took part in where it kept its full-division label. The cliques are checked the same
way (`resampled_cliques`): the largest clique and the inputs covered by cliques of the subset,
against the full graph's restricted to the same inputs.
"""

from __future__ import annotations

import numpy as np

from causal_das.analysis import cliques, division
from causal_das.analysis.inputs import InputTable

STABLE_JACCARD = 0.8


def jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def resampled(weights: dict[str, np.ndarray], inputs: InputTable, order: list[str], faithfulness: float, rule: str, full: dict,
              resamples: int, fraction: float = 0.8, seed: int = 0) -> dict:
    """Per causal model of `full` (the division of every input): the sets' sizes and Jaccard indices
    over the resamples, and whether the set is stable; per input, how often it kept its label."""
    n = inputs.n
    labels = np.asarray(full["assignment"], dtype=object)
    kept, seen = np.zeros(n), np.zeros(n)
    sizes = {name: [] for name in order}
    indices = {name: [] for name in order}
    for mask in _subsets(n, resamples, fraction, seed):
        sub = division.divide(weights, inputs, order, faithfulness, rule, subset=mask)
        for name in order:
            sizes[name].append(len(sub["sets"][name]))
            indices[name].append(jaccard(set(sub["sets"][name]), {t for t in full["sets"][name] if mask[t]}))
        seen += mask
        kept += mask & (np.asarray(sub["assignment"], dtype=object) == labels)
    keep_rate = np.divide(kept, seen, out=np.full(n, np.nan), where=seen > 0)
    sets = {name: {"size_mean": float(np.mean(sizes[name])), "size_std": float(np.std(sizes[name])),
                   "jaccard_mean": float(np.mean(indices[name])), "jaccard_min": float(np.min(indices[name])),
                   "stable": bool(np.mean(indices[name]) >= STABLE_JACCARD)} for name in order}
    return {"resamples": resamples, "fraction": fraction, "seed": seed, "stable_jaccard": STABLE_JACCARD, "sets": sets,
            "triples_keeping_label": float(np.nanmean(keep_rate)),
            "triples_keeping_label_under_half": int(np.sum(keep_rate < 0.5))}


def _subsets(n: int, resamples: int, fraction: float, seed: int):
    """`resamples` random boolean masks over n inputs, each keeping round(fraction * n)."""
    if resamples < 1 or not 0 < fraction < 1:
        raise ValueError(f"resampling needs resamples >= 1 and a fraction in (0, 1), got {resamples} and {fraction}")
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, size=round(fraction * n), replace=False)] = True
        yield mask


def resampled_cliques(adjacency: np.ndarray, full: list[dict], min_size: int, exact_nodes: int, resamples: int,
                      fraction: float = 0.8, seed: int = 0) -> dict:
    """The cliques of one graph (`full`, as `cliques.peel_cliques` returns them) against the cliques
    peeled from random `fraction` subsets of its inputs: per resample, the Jaccard index of the
    subset's largest clique with the full largest clique's members in the subset, and of the inputs
    covered by any clique; stable when both average at least STABLE_JACCARD."""
    largest_full = set(full[0]["nodes"]) if full else set()
    covered_full = {v for c in full for v in c["nodes"]}
    sizes, largest, covered = [], [], []
    for mask in _subsets(len(adjacency), resamples, fraction, seed):
        keep = np.flatnonzero(mask)
        # A clique of min_size inputs keeps about `fraction` of them in the subset: the subset's
        # cliques are peeled down to that size, so that the covered inputs compare like with like.
        sub = cliques.peel_cliques(adjacency[np.ix_(keep, keep)], max(2, int(np.ceil(min_size * fraction))), exact_nodes)
        members = [set(keep[c["nodes"]].tolist()) for c in sub]
        sizes.append(len(members[0]) if members else 0)
        largest.append(jaccard(members[0] if members else set(), {v for v in largest_full if mask[v]}))
        covered.append(jaccard(set().union(*members), {v for v in covered_full if mask[v]}))
    return {"resamples": resamples, "fraction": fraction, "seed": seed, "stable_jaccard": STABLE_JACCARD,
            "largest_size_mean": float(np.mean(sizes)), "largest_size_std": float(np.std(sizes)),
            "largest_jaccard_mean": float(np.mean(largest)), "largest_jaccard_min": float(np.min(largest)),
            "coverage_jaccard_mean": float(np.mean(covered)), "coverage_jaccard_min": float(np.min(covered)),
            "stable": bool(np.mean(largest) >= STABLE_JACCARD and np.mean(covered) >= STABLE_JACCARD)}


def stability_table(row: dict) -> str:
    """One line per set: its size, the mean and least Jaccard index, stable or not."""
    result = row["stability"]
    group = f"layer {row['layer']}" if isinstance(row["layer"], int) else row["layer"]
    lines = [f"{group} ({row['rule']}): {result['resamples']} divisions of {result['fraction']:.0%} of the inputs; "
             f"an input keeps its label in {result['triples_keeping_label']:.3f} of them on average"]
    for name, s in result["sets"].items():
        verdict = "stable" if s["stable"] else "UNSTABLE"
        lines.append(f"  {name:>10}  {row['sizes'][name]:>4} inputs, resampled {s['size_mean']:.1f} ± {s['size_std']:.1f}, "
                     f"Jaccard {s['jaccard_mean']:.2f} (least {s['jaccard_min']:.2f}): {verdict}")
    return "\n".join(lines)


def clique_stability_table(record: dict) -> str:
    """One line per graph of a cliques record measured with resamples."""
    rows = [g for g in record["graphs"] if "stability" in g]
    if not rows:
        return ""
    first = rows[0]["stability"]
    lines = [f"cliques of {first['resamples']} random {first['fraction']:.0%} subsets of the inputs, against the full graph's "
             f"(Jaccard index; below {first['stable_jaccard']} on average: unstable)",
             f"{'causal model':>12} {'layer':>10} {'largest':>7} {'resampled':>13} {'largest J':>9} {'covered J':>9}"]
    for g in rows:
        s = g["stability"]
        largest = g["sizes"][0] if g["sizes"] else 0
        lines.append(f"{g['causal_model']:>12} {g['layer']!s:>10} {largest:>7} {s['largest_size_mean']:>7.1f} ± {s['largest_size_std']:<3.1f} "
                     f"{s['largest_jaccard_mean']:>9.2f} {s['coverage_jaccard_mean']:>9.2f}  {'stable' if s['stable'] else 'UNSTABLE'}")
    return "\n".join(lines)
