"""Division of a task's inputs (for X+Y+Z, the 1000 triples) among causal models, from their IIA
graphs at one site.

Causal models are taken in a given order. For each, a set of still-unassigned inputs is grown
greedily from the unassigned input with the largest total edge weight to the other unassigned
inputs; the set's inputs are then removed and the next model is grown. What is left is
"unexplained", so every input ends in exactly one set or in "unexplained". Two rules say when a
set may grow (`RULES`):

- `mean` (the thesis's): repeatedly add the unassigned input with the largest total weight to the
  set (ties: larger total weight to all unassigned inputs, then the lower index) as long as the
  set's mean pairwise IIA (mean edge weight over its pairs) stays >= `faithfulness`. A strong core
  then carries weakly connected inputs: an input with weight 0.5 to every member of a core of
  weight-1 edges keeps the mean above 0.8 for a long while.
- `member`: every member's mean IIA with the rest of its set must be >= `faithfulness`. The set
  starts as every unassigned input and is peeled: the member with the lowest mean with the rest
  leaves (ties: the lower-ranked by the order above) until every member holds. Then it grows: the
  outsider with the largest total weight to it (same ties) joins while its own mean with the set is
  >= the threshold, and members that fell below it are pruned, the weakest first; an input pruned
  after joining may not rejoin. It stops when no outsider qualifies, so the set is stable: every
  member holds, no outsider would. Peeling first (rather than growing from one input) keeps the
  order in which a noisy core is met from stopping the growth early. Each input leaves and joins at
  most once and each step updates one vector of totals: O(N^2) per set for N unassigned inputs
  (milliseconds at N = 1000).

A set needs two inputs to have a pair; a model whose best pair is below the threshold gets no
inputs. Edges between inputs with the same intermediate value ("trivial": an intervention that
does nothing also gets them right) count like any other and are reported per set.
"""

from __future__ import annotations

import numpy as np

from causal_das.analysis.inputs import InputTable

UNEXPLAINED = "unexplained"


def check_faithfulness(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--faithfulness must be in [0, 1] (a mean pairwise IIA), got {value}")
    return value


RULES = ("member", "mean")


def grow_set(weight: np.ndarray, available: np.ndarray, faithfulness: float, rule: str = "mean") -> list[int]:
    """The greedily grown set (indices) among `available` inputs under `rule`; see the module docstring."""
    if rule not in RULES:
        raise ValueError(f"unknown division rule {rule!r}; choose one of {RULES}")
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
    if rule == "member":
        members = _grow_member(sub, rank, faithfulness)
    else:
        members = _grow_mean(sub, rank, int(tie_order[0]), faithfulness)
    if len(members) < 2:
        return []
    return sorted(int(pool[m]) for m in members)


def _best(score: np.ndarray, rank: np.ndarray) -> tuple[int, float]:
    """The candidate with the largest score (ties: the lower rank) and its score."""
    best = score.max()
    candidates = np.flatnonzero(score == best)
    return int(candidates[np.argmin(rank[candidates])]), float(best)


def _grow_mean(sub: np.ndarray, rank: np.ndarray, first: int, faithfulness: float) -> list[int]:
    members = [first]
    in_set = np.zeros(len(sub), dtype=bool)
    in_set[first] = True
    to_set = sub[first].copy()  # total weight from each candidate to the set
    total = 0.0  # sum of weights over the set's pairs
    while not in_set.all():
        choice, best = _best(np.where(in_set, -np.inf, to_set), rank)
        size = len(members)
        if (total + best) / (size * (size + 1) / 2) < faithfulness:
            break
        members.append(choice)
        in_set[choice] = True
        total += best
        to_set += sub[choice]
    return members


def _grow_member(sub: np.ndarray, rank: np.ndarray, faithfulness: float) -> list[int]:
    in_set = np.ones(len(sub), dtype=bool)
    to_set = sub.sum(axis=1)  # total weight from every input to the set (members: to the rest of it)
    size = len(sub)

    def prune() -> list[int]:
        """Removes the weakest member while any member's mean with the rest is below the threshold."""
        nonlocal size, to_set
        removed = []
        while size > 1:
            weakest, lowest = _best(np.where(in_set, -to_set, -np.inf), -rank)  # ties: the weakest ranked
            if -lowest / (size - 1) >= faithfulness:
                break
            in_set[weakest] = False
            to_set -= sub[weakest]
            size -= 1
            removed.append(weakest)
        return removed

    banned = np.zeros(len(sub), dtype=bool)  # pruned after joining: may not rejoin (so it terminates)
    prune()  # peel from every available input down to a set where every member holds
    while True:  # then take in the outsiders that hold with it, pruning whoever no longer does
        choice, best = _best(np.where(in_set | banned, -np.inf, to_set), rank)
        if not np.isfinite(best) or best / size < faithfulness:
            break
        in_set[choice] = True
        to_set += sub[choice]
        size += 1
        banned[prune()] = True
    return np.flatnonzero(in_set).tolist()


def mean_pairwise(weight: np.ndarray, members: list[int]) -> float | None:
    if len(members) < 2:
        return None
    sub = weight[np.ix_(members, members)]
    return float((sub.sum() - np.trace(sub)) / (len(members) * (len(members) - 1)))


def divide(weights: dict[str, np.ndarray], inputs: InputTable, order: list[str], faithfulness: float, rule: str = "member",
           subset: np.ndarray | None = None) -> dict:
    """{"sets": {model: [input indices]}, "unexplained": [...], "assignment": [label per input], ...}
    of the inputs of `inputs` (each model's intermediate values tell which edges are trivial);
    `subset` (a boolean mask) divides only those inputs, the others stay out of every set and
    "unexplained" (the resampling of `analysis.stability` uses it)."""
    check_faithfulness(faithfulness)
    available = np.ones(inputs.n, dtype=bool) if subset is None else np.asarray(subset, dtype=bool).copy()
    sets = {}
    for name in order:
        members = grow_set(weights[name], available, faithfulness, rule)
        sets[name] = members
        available[members] = False
    assignment = np.full(inputs.n, UNEXPLAINED, dtype=object)
    for name, members in sets.items():
        assignment[members] = name
    values = {name: inputs.values_of(name) for name in sets}
    return {
        "rule": rule,
        "order": list(order),
        "faithfulness": faithfulness,
        "sizes": {**{name: len(m) for name, m in sets.items()}, UNEXPLAINED: int(available.sum())},
        "mean_pairwise_iia": {name: mean_pairwise(weights[name], m) for name, m in sets.items()},
        # The weakest member's mean IIA with the rest of its set: >= faithfulness under the member
        # rule; under the mean rule it shows how weakly the last inputs hang on.
        "weakest_member_iia": {name: weakest_member(weights[name], m) for name, m in sets.items()},
        # A set whose inputs share few intermediate values is mostly pairs an intervention that
        # does nothing also gets right (the counterfactual label is then the base's own label).
        "distinct_intermediate_values": {name: len(set(values[name][m].tolist())) for name, m in sets.items()},
        "trivial_weight_fraction": {name: trivial_weight_fraction(weights[name], values[name], m) for name, m in sets.items()},
        "sets": sets,
        "unexplained": np.flatnonzero(available).tolist(),
        "assignment": assignment.tolist(),
    }


def weakest_member(weight: np.ndarray, members: list[int]) -> float | None:
    if len(members) < 2:
        return None
    sub = weight[np.ix_(members, members)].astype(np.float64)
    np.fill_diagonal(sub, 0.0)
    return float(sub.sum(axis=1).min() / (len(members) - 1))


def trivial_weight_fraction(weight: np.ndarray, values: np.ndarray, members: list[int]) -> float | None:
    """The share of the set's total edge weight on pairs with the same intermediate value (`values`:
    the causal model's intermediate value on every input)."""
    if len(members) < 2:
        return None
    values = np.asarray(values)[members]
    sub = weight[np.ix_(members, members)].astype(np.float64)
    np.fill_diagonal(sub, 0.0)
    total = sub.sum()
    return float(sub[values[:, None] == values[None, :]].sum() / total) if total else None


def agreement(assignment: list[str], expected: list[str]) -> float:
    """The fraction of inputs whose label in `assignment` equals the one in `expected`."""
    return float(np.mean(np.asarray(assignment, dtype=object) == np.asarray(expected, dtype=object)))


def region_iia(weights: dict[str, np.ndarray], expected: list[str], faithfulness: float, assignment: list[str] | None = None) -> dict:
    """Where each graph's model holds, by the regions of a known partition: the mean edge weight
    among the inputs of each region, per model, and (given the division's `assignment`) where each
    region's inputs went. An induction (interchange intervention training) makes a model hold on
    its region but does not stop it holding elsewhere too; inputs that satisfy two models go to the
    first of the division's order, and the agreement with the partition then says less.
    Returns {"iia": {model: {region: mean}}, "assigned": {region: {label: count}}, "exclusive": no
    model's mean reaches `faithfulness` outside its own region}."""
    labels = np.asarray(expected, dtype=object)
    regions = [r for r in dict.fromkeys(labels.tolist()) if r != UNEXPLAINED]
    table = {}
    for model, weight in weights.items():
        table[model] = {}
        for region in regions:
            members = np.flatnonzero(labels == region)
            sub = weight[np.ix_(members, members)].astype(np.float64)
            table[model][region] = float((sub.sum() - np.trace(sub)) / (len(members) * (len(members) - 1))) if len(members) > 1 else None
    outside = [v for model, row in table.items() for region, v in row.items() if region != model and v is not None]
    out = {"iia": table, "exclusive": all(v < faithfulness for v in outside)}
    if assignment is not None:
        given = np.asarray(assignment, dtype=object)
        out["assigned"] = {region: {str(label): int(n) for label, n in zip(*np.unique(given[labels == region], return_counts=True), strict=True)}
                           for region in regions}
    return out


def divide_both(weights: dict[str, np.ndarray], inputs: InputTable, order: list[str], faithfulness: float, rule: str) -> dict:
    """`divide` under `rule`, with the other rule's division beside it (`other_rule`) and the
    fraction of inputs the two give the same label (`rules_agree`)."""
    chosen = divide(weights, inputs, order, faithfulness, rule)
    other = divide(weights, inputs, order, faithfulness, next(r for r in RULES if r != rule))
    other.pop("order"), other.pop("faithfulness")
    return {**chosen, "other_rule": other, "rules_agree": agreement(chosen["assignment"], other["assignment"])}


def division_table(result: dict) -> str:
    n_inputs = len(result["layers"][0]["assignment"]) if result["layers"] else 0
    lines = [f"division of the {n_inputs} inputs (faithfulness >= {result['faithfulness']}, order: {' > '.join(result['order'])}; "
             f"rule {result['rule']!r} used downstream, the other beside it)"]
    lines.append(f"{'group':>10} {'rule':>7} " + "".join(f"{name:>26}" for name in [*result["order"], UNEXPLAINED]) + f"{'rules agree':>13}")
    for layer in result["layers"]:
        for row, agree in ((layer, f"{layer['rules_agree']:.3f}"), (layer["other_rule"], "")):
            sizes, means, weakest = row["sizes"], row["mean_pairwise_iia"], row["weakest_member_iia"]
            distinct = row["distinct_intermediate_values"]
            cells = [f"{sizes[n]} ({means[n]:.2f}/{weakest[n]:.2f}, {distinct[n]}P)" if means.get(n) is not None else str(sizes[n])
                     for n in result["order"]]
            lines.append(f"{layer['layer']!s:>10} {row['rule']:>7} " + "".join(f"{c:>26}" for c in [*cells, str(sizes[UNEXPLAINED])]) + f"{agree:>13}")
    for layer in result["layers"]:
        if "agreement_with_induced" in layer:
            agreement = ", ".join(f"rule {rule} {value:.3f}" for rule, value in layer["agreement_with_induced"].items())
            lines.append(f"{layer['layer']}: agreement with the induced partition (the network's known answer): {agreement}")
        if "induced_region_iia" in layer:
            regions = layer["induced_region_iia"]
            where = "; ".join(f"{model} " + ", ".join(f"{v:.2f} on {region}'s region" for region, v in row.items() if v is not None)
                              for model, row in regions["iia"].items())
            lines.append(f"{layer['layer']}: mean IIA within each induced region: {where}; "
                         + ("on average each model holds on its own region only" if regions["exclusive"] else
                            "a model also holds outside its own region, so those inputs can go either way and the agreement says less"))
            if "assigned" in regions:
                went = "; ".join(f"{region}'s region: " + ", ".join(f"{n} {label}" for label, n in counts.items())
                                 for region, counts in regions["assigned"].items())
                lines.append(f"{layer['layer']}: where each induced region's inputs went: {went}")
    lines.append("(set size, with its mean pairwise IIA / its weakest member's mean IIA with the rest, and its number of distinct "
                 "intermediate values P, in brackets)")
    return "\n".join(lines)
