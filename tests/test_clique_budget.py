"""The clique search is bounded by work (nodes of its search tree), not by time: the same graph
gives the same cliques, exact or not, on an idle and on a busy machine."""

import subprocess
import sys

import numpy as np
import pytest

from causal_das.analysis import cliques


def random_graph(n: int, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    adjacency = np.triu(rng.random((n, n)) < density, 1)
    return adjacency | adjacency.T


def nodes_needed(adjacency: np.ndarray) -> int:
    search = cliques._BranchAndBound(adjacency, np.arange(len(adjacency)))
    search.run()
    return search.nodes_explored


def test_the_budget_is_counted_in_search_nodes():
    adjacency = random_graph(120, 0.5, 0)
    needed = nodes_needed(adjacency)
    assert needed > 10 and needed == nodes_needed(adjacency)  # the same count every time
    assert cliques.exact_max_clique(adjacency, max_nodes=needed) == cliques.exact_max_clique(adjacency)
    with pytest.raises(cliques.BudgetExceeded):
        cliques.exact_max_clique(adjacency, max_nodes=needed - 1)
    # Peeling: with too small a budget the first clique is greedy, and the record says so.
    first = cliques.peel_cliques(adjacency, min_size=3, exact_nodes=needed - 1)[0]
    assert first["method"] == "greedy"
    assert cliques.peel_cliques(adjacency, min_size=3, exact_nodes=needed)[0]["method"] == "exact"


def test_the_same_cliques_on_a_busy_machine():
    adjacency = random_graph(150, 0.5, 1)
    budget = nodes_needed(adjacency) // 2  # some cliques exact, some not: both paths are exercised
    idle = cliques.peel_cliques(adjacency, min_size=4, exact_nodes=budget)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    try:
        busy = cliques.peel_cliques(adjacency, min_size=4, exact_nodes=budget)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert busy == idle
    assert {c["method"] for c in idle} == {"exact", "greedy"}
