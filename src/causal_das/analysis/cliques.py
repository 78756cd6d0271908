"""Clique analysis of IIA graphs: which sets of inputs (for X+Y+Z, triples) does one intervention
treat consistently?

On the edges of weight 1 (both orientations of the interchange give the causal model's
counterfactual label), repeatedly take a maximum clique and remove its nodes, while the clique has
at least `min_size` nodes. Each clique is found exactly with the branch and bound of networkx's
`max_weight_clique` (on bit sets, the same clique networkx finds) when that finishes within
`exact_nodes` nodes of its search tree; otherwise with a greedy approximation (grow a clique from
each of the 32 highest-degree nodes, always adding the candidate with the most neighbours among the
remaining candidates; keep the largest), and the result says which. The bound is on work, not on
time, so the same graph gives the same cliques on an idle and on a loaded machine.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from causal_das.analysis.inputs import InputTable

# The exact search's default budget: nodes of its search tree (calls of `expand`), about half a minute
# on one core. The main job's graphs need at most 1,743 per clique (measured 2026-12-04).
EXACT_NODES = 2_000_000


class BudgetExceeded(Exception):
    """The exact search explored its budget of nodes without proving a clique maximum."""


class _BranchAndBound:
    """networkx's `max_weight_clique` with unit weights (Kumlander's branch and bound: colour the
    candidates greedily into independent sets to bound what they can add, branch on the nodes the
    bound cannot exclude), step for step in the same node order, with each candidate list a bit set
    (a Python int; bit i is the i-th node of networkx's starting order, and every step of the
    algorithm keeps that order) instead of a list filtered through `has_edge`: it returns the clique
    networkx returns (a test compares them), several times faster."""

    def __init__(self, adjacency: np.ndarray, nodes: np.ndarray, max_nodes: int | None = None):
        # networkx's start: the nodes by decreasing degree, ties in node order (a stable sort).
        sub = adjacency[np.ix_(nodes, nodes)]
        rank = np.argsort(-sub.sum(axis=1), kind="stable")
        self.order = nodes[rank]
        sub = sub[np.ix_(rank, rank)]
        # neighbours[i]: bit j set when the i-th and j-th nodes of the order are adjacent.
        packed = np.packbits(sub, axis=1, bitorder="little")
        self.neighbours = [int.from_bytes(row.tobytes(), "little") for row in packed]
        self.best: list[int] = []
        self.max_nodes, self.nodes_explored = max_nodes, 0

    def _branching_nodes(self, candidates: int, target: int) -> int:
        """The candidates left after peeling greedy independent sets (colour classes) while the
        number of classes stays within `target`: only these can lead to a larger clique."""
        classes = 0
        while candidates:
            independent, rest = 0, candidates
            while rest:
                low = rest & -rest  # the first remaining candidate in the order
                independent |= low
                rest &= ~self.neighbours[low.bit_length() - 1] & ~low
            classes += 1
            if classes > target:
                break
            candidates &= ~independent
        return candidates

    def expand(self, clique: list[int], candidates: int) -> None:
        self.nodes_explored += 1
        if self.max_nodes is not None and self.nodes_explored > self.max_nodes:
            raise BudgetExceeded
        if len(clique) > len(self.best):
            self.best = clique[:]
        branching = self._branching_nodes(candidates, len(self.best) - len(clique))
        while branching:
            v = branching.bit_length() - 1  # networkx pops the last branching node
            branching &= ~(1 << v)
            candidates &= ~(1 << v)
            self.expand(clique + [v], candidates & self.neighbours[v])

    def run(self) -> list[int]:
        self.expand([], (1 << len(self.order)) - 1)
        return sorted(int(self.order[i]) for i in self.best)


def exact_max_clique(adjacency: np.ndarray, nodes: np.ndarray | None = None, max_nodes: int | None = None) -> list[int]:
    """A maximum clique (sorted node indices) of the graph `adjacency` (bool, no self-loops)
    restricted to `nodes` (default: all); BudgetExceeded after `max_nodes` nodes of the search."""
    nodes = np.arange(len(adjacency)) if nodes is None else np.asarray(nodes)
    return _BranchAndBound(adjacency, nodes, max_nodes).run()


def greedy_max_clique(adjacency: np.ndarray, n_starts: int = 32) -> list[int]:
    """A large clique (a lower bound on the maximum): from each of the `n_starts` nodes of highest
    degree, repeatedly add the candidate adjacent to the most other candidates; the largest found."""
    best: list[int] = []
    adjacency = adjacency.astype(bool)
    weights = adjacency.astype(np.int32)
    degrees = weights.sum(axis=1)
    for start in np.argsort(-degrees, kind="stable")[:n_starts]:
        if degrees[start] + 1 <= len(best):
            break  # no clique through this node (or any later, lower-degree one) can be larger
        clique, candidates = [int(start)], adjacency[start].copy()
        within = weights[:, candidates].sum(axis=1)  # each node's neighbours among the candidates
        while candidates.any():
            pool = np.flatnonzero(candidates)
            choice = int(pool[np.argmax(within[pool])])
            clique.append(choice)
            dropped = candidates & ~adjacency[choice]
            candidates &= adjacency[choice]
            within -= weights[:, dropped].sum(axis=1)
        if len(clique) > len(best):
            best = sorted(clique)
    return best


def peel_cliques(adjacency: np.ndarray, min_size: int = 5, exact_nodes: int = EXACT_NODES) -> list[dict]:
    """Maximum cliques taken one after another (each removed before the next is sought) while they
    have at least `min_size` nodes; each exact within `exact_nodes` nodes of search (0: greedy only).
    Each entry: nodes (original indices), size, method."""
    adjacency = adjacency.astype(bool)
    np.fill_diagonal(adjacency, False)
    alive = np.ones(len(adjacency), dtype=bool)
    cliques = []
    while alive.sum() >= min_size:
        nodes = np.flatnonzero(alive)
        members, method = None, "greedy"
        if exact_nodes > 0:
            with contextlib.suppress(BudgetExceeded):  # left to the greedy search below
                members, method = np.array(exact_max_clique(adjacency, nodes, exact_nodes), dtype=int), "exact"
        if members is None:
            members = nodes[greedy_max_clique(adjacency[np.ix_(nodes, nodes)])]
        if len(members) < min_size:
            break
        cliques.append({"nodes": members.tolist(), "size": len(members), "method": method})
        alive[members] = False
    return cliques


def analyse(graphs: dict, inputs: InputTable, min_size: int = 5, exact_nodes: int = EXACT_NODES, progress=None) -> dict:
    """Cliques of every graph ({(causal model name, group): Graph} over the inputs of `inputs`),
    coverage per graph, and overlap between causal models per group."""
    per_graph = []
    covered: dict[tuple[str, int], set[int]] = {}
    for (name, layer), graph in (progress or (lambda x: x))(graphs.items()):
        started = time.perf_counter()
        cliques = peel_cliques(graph.agreement, min_size, exact_nodes)
        values = inputs.values_of(name)
        for clique in cliques:
            # One intermediate value throughout: every counterfactual label is the base's own label.
            clique["intermediate_values"] = sorted({int(v) for v in values[clique["nodes"]]})
        nodes = {v for c in cliques for v in c["nodes"]}
        covered[(name, layer)] = nodes
        methods = {c["method"] for c in cliques}
        per_graph.append({
            "causal_model": name,
            "layer": layer,
            "k": graph.k,
            "n_cliques": len(cliques),
            "sizes": [c["size"] for c in cliques],
            "coverage": len(nodes) / inputs.n,
            "n_cliques_single_intermediate_value": sum(len(c["intermediate_values"]) == 1 for c in cliques),
            "methods": sorted(methods),
            # A greedy clique is only a lower bound, so a greedy stop does not prove that no larger
            # clique is left; an exact one does.
            "all_exact": methods <= {"exact"},
            # The largest clique's inputs as they are shown (the field's name is the X+Y+Z study's).
            "largest_clique_triples": [inputs.row(v) for v in cliques[0]["nodes"]] if cliques else [],
            "cliques": cliques,
            "seconds": time.perf_counter() - started,
        })
    overlap = []
    layers = list(dict.fromkeys(layer for _, layer in graphs))
    for layer in layers:
        names = [name for name, lay in graphs if lay == layer]
        pairs = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                sa, sb = covered[(a, layer)], covered[(b, layer)]
                union = sa | sb
                pairs.append({"models": [a, b], "shared_triples": len(sa & sb), "jaccard": len(sa & sb) / len(union) if union else 0.0})
        counts = np.zeros(inputs.n, dtype=int)
        for name in names:
            counts[list(covered[(name, layer)])] += 1
        histogram = {str(c): int(np.sum(counts == c)) for c in range(len(names) + 1)}
        overlap.append({"layer": layer, "models": names, "pairs": pairs, "triples_in_cliques_of_n_models": histogram})
    return {"min_size": min_size, "exact_nodes": exact_nodes, "graphs": per_graph, "overlap": overlap}


def cliques_table(result: dict) -> str:
    lines = [f"cliques of weight-1 edges with at least {result['min_size']} inputs, largest first"]
    lines.append("(one P: cliques whose inputs all share the intermediate value, where doing nothing would also be correct)")
    lines.append(f"{'causal model':>12} {'layer':>5} {'cliques':>7} {'one P':>6} {'largest':>7} {'coverage':>8} {'method':>8}  sizes")
    for g in result["graphs"]:
        sizes = ", ".join(map(str, g["sizes"][:8])) + (", ..." if len(g["sizes"]) > 8 else "")
        largest = g["sizes"][0] if g["sizes"] else 0
        lines.append(f"{g['causal_model']:>12} {g['layer']:>5} {g['n_cliques']:>7} {g['n_cliques_single_intermediate_value']:>6} "
                     f"{largest:>7} {g['coverage']:>8.3f} "
                     f"{'/'.join(g['methods']) or '-':>8}  {sizes}")
    return "\n".join(lines)
