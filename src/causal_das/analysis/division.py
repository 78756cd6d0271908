"""Division of the 1000 triples among causal models, from their IIA graphs at one layer.

Causal models are taken in a given order. For each, a set of still-unassigned triples is grown
greedily: it starts from the unassigned triple with the largest total edge weight to the other
unassigned triples, then repeatedly adds the unassigned triple with the largest total weight to the
set (ties: larger total weight to all unassigned triples, then the lower index) as long as the
set's mean pairwise IIA (mean edge weight over its pairs) stays >= `faithfulness`. A set needs two
triples to have a pair; a model whose best pair is below the threshold gets no triples. The set's
triples are then removed and the next model is grown. What is left is "unexplained", so every
triple ends in exactly one set or in "unexplained".
"""

from __future__ import annotations

import numpy as np

from causal_das.tasks import arithmetic

UNEXPLAINED = "unexplained"


def check_faithfulness(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--faithfulness must be in [0, 1] (a mean pairwise IIA), got {value}")
    return value


def grow_set(weight: np.ndarray, available: np.ndarray, faithfulness: float) -> list[int]:
    """The greedily grown set (indices) among `available` triples; see the module docstring."""
    pool = np.flatnonzero(available)
    if len(pool) < 2:
        return []
    sub = weight[np.ix_(pool, pool)].astype(np.float64)
    np.fill_diagonal(sub, 0.0)
    strength = sub.sum(axis=1)
    # Lexicographic (largest total, then largest strength, then lowest index) via one sort key.
    tie_order = np.lexsort((np.arange(len(pool)), -strength))
    rank = np.empty(len(pool), dtype=np.int64)
    rank[tie_order] = np.arange(len(pool))
    first = int(tie_order[0])
    members = [first]
    in_set = np.zeros(len(pool), dtype=bool)
    in_set[first] = True
    to_set = sub[first].copy()  # total weight from each candidate to the set
    total = 0.0  # sum of weights over the set's pairs
    while not in_set.all():
        score = np.where(in_set, -np.inf, to_set)
        best = score.max()
        candidates = np.flatnonzero(score == best)
        choice = int(candidates[np.argmin(rank[candidates])])
        size = len(members)
        if (total + best) / (size * (size + 1) / 2) < faithfulness:
            break
        members.append(choice)
        in_set[choice] = True
        total += best
        to_set += sub[choice]
    if len(members) < 2:
        return []
    return sorted(int(pool[m]) for m in members)


def mean_pairwise(weight: np.ndarray, members: list[int]) -> float | None:
    if len(members) < 2:
        return None
    sub = weight[np.ix_(members, members)]
    return float((sub.sum() - np.trace(sub)) / (len(members) * (len(members) - 1)))


def divide(weights: dict[str, np.ndarray], order: list[str], faithfulness: float) -> dict:
    """{"sets": {model: [triple indices]}, "unexplained": [...], "assignment": [label per triple], ...}"""
    check_faithfulness(faithfulness)
    available = np.ones(arithmetic.N_TRIPLES, dtype=bool)
    sets = {}
    for name in order:
        members = grow_set(weights[name], available, faithfulness)
        sets[name] = members
        available[members] = False
    assignment = np.full(arithmetic.N_TRIPLES, UNEXPLAINED, dtype=object)
    for name, members in sets.items():
        assignment[members] = name
    return {
        "order": list(order),
        "faithfulness": faithfulness,
        "sizes": {**{name: len(m) for name, m in sets.items()}, UNEXPLAINED: int(available.sum())},
        "mean_pairwise_iia": {name: mean_pairwise(weights[name], m) for name, m in sets.items()},
        # A set whose triples share few intermediate values is mostly pairs an intervention that
        # does nothing also gets right (the counterfactual label is then the base's own label).
        "distinct_intermediate_values": {name: _distinct_values(name, m) for name, m in sets.items()},
        "sets": sets,
        "unexplained": np.flatnonzero(available).tolist(),
        "assignment": assignment.tolist(),
    }


def _distinct_values(name: str, members: list[int]) -> int:
    return len(set(arithmetic.intermediate_values(arithmetic.get_model(name))[members].tolist()))


def division_table(result: dict) -> str:
    lines = [f"division of the 1000 triples (faithfulness >= {result['faithfulness']}, order: {' > '.join(result['order'])})"]
    lines.append(f"{'layer':>5} " + "".join(f"{name:>20}" for name in [*result["order"], UNEXPLAINED]))
    for layer in result["layers"]:
        sizes = layer["sizes"]
        means = layer["mean_pairwise_iia"]
        distinct = layer["distinct_intermediate_values"]
        cells = [f"{sizes[n]} ({means[n]:.2f}, {distinct[n]}P)" if means.get(n) is not None else str(sizes[n]) for n in result["order"]]
        lines.append(f"{layer['layer']:>5} " + "".join(f"{c:>20}" for c in [*cells, str(sizes[UNEXPLAINED])]))
    lines.append("(set size, with its mean pairwise IIA and its number of distinct intermediate values P in brackets)")
    return "\n".join(lines)
