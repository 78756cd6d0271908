"""IIA graphs: for one trained intervention (causal model, site, k), whether the intervened network
gives the causal model's counterfactual label on each ordered pair of a task's distinct inputs
(for X+Y+Z, 999,000 pairs of the 1000 triples).

Nodes are the n inputs. `correct[b, s]` is True when the interchange with base b and source s gives
the counterfactual label; the weight of the undirected edge {i, j} is the mean of the two
orientations, (correct[i, j] + correct[j, i]) / 2, so 0, 0.5 or 1. The diagonal (base = source) is
not an interchange pair and is stored as False.

`correct_matrix` computes one (`correct_matrices` several at one site) with the fast engine on cached
site states: a chunk of bases against all n sources, in passes of `engine.predict_cells`'s size,
and only the blocks after the site run. The task comes in as the counterfactual-label function
(`InputTable.labels`). The graphs step that computes, stores and reuses the X+Y+Z graphs is
`experiments.iia_graphs`.
"""


from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from causal_das.das import engine
from causal_das.runtime.progress import inner as inner_bar


@dataclass(frozen=True)
class Graph:
    causal_model: str
    layer: int
    k: int
    correct: np.ndarray  # (n, n) bool, diagonal False

    @property
    def weight(self) -> np.ndarray:
        """(n, n) symmetric edge weights in {0, 0.5, 1}; the diagonal is 0."""
        return (self.correct.astype(np.float32) + self.correct.T) / 2

    @property
    def agreement(self) -> np.ndarray:
        """(n, n) bool: both orientations correct (the edges of weight 1)."""
        return self.correct & self.correct.T


def correct_matrix(network, site, trained, causal_model, labels, bases_per_chunk: int = 25, progress: str | None = None) -> np.ndarray:
    """(n, n) bool: the intervened prediction equals the counterfactual label, every ordered pair:
    `correct_matrices` for one intervention."""
    return correct_matrices(network, site, [trained], [causal_model], labels, bases_per_chunk, progress)[0]


def correct_matrices(network, site, trained: list, causal_models: list, labels, bases_per_chunk: int = 25,
                     progress: str | None = None) -> list[np.ndarray]:
    """`correct_matrix` of several interventions at one site (each against its own causal model),
    evaluated together: each suffix pass holds one base with all n sources for every intervention.

    Args:
        network: the n distinct inputs (`input_ids`, one row per input) and `site_states(site)`, their
            states at the site, as `studies.arithmetic_network.Network` holds them.
        labels: `labels(causal_model, base_ids, source_ids)`, the counterfactual labels of pairs of
            input indices (`InputTable.labels`).
    """
    n = len(network.input_ids)
    correct = [np.zeros((n, n), dtype=bool) for _ in trained]
    sources = np.arange(n)
    chunks = range(0, n, bases_per_chunk)
    bar = {"desc": progress} if progress else {"disable": True}  # an explicit disable=False would override TQDM_DISABLE
    for start in inner_bar(chunks, unit="chunk", **bar):
        bases = np.arange(start, min(start + bases_per_chunk, n))
        base = np.repeat(bases, n)
        source = np.tile(sources, len(bases))
        data = engine.InterchangeData(network.input_ids, torch.as_tensor(base), torch.as_tensor(source)[:, None], torch.zeros(len(base), dtype=torch.long))
        # A chunk's pairs of every intervention, in passes of `predict_cells`'s size.
        predicted = engine.predict_cells(site, trained, data, batch_size=n * len(trained), activations=network.site_states(site))
        for matrix, causal_model, p in zip(correct, causal_models, predicted, strict=True):
            matrix[bases] = (p.numpy() == labels(causal_model, base, source)).reshape(len(bases), n)
    for matrix in correct:
        np.fill_diagonal(matrix, False)
    return correct


def same_intermediate(values: np.ndarray) -> np.ndarray:
    """(n, n) bool: the two inputs have the same value of the model's intermediate variable
    (`values`, one per input: `InputTable.values_of`), so the counterfactual label of either
    orientation is the base's own label. Such edges have weight 1 whenever the intervention changes
    nothing: they are no evidence for the model."""
    values = np.asarray(values)
    same = values[:, None] == values[None, :]
    np.fill_diagonal(same, False)
    return same


def statistics(correct: np.ndarray, values: np.ndarray) -> dict:
    """Mean IIA over the n (n - 1) ordered pairs (and over the pairs whose counterfactual label differs
    from the base's label); fractions of unordered pairs with weight 0 / 0.5 / 1; degree statistics
    of the weight-1 graph, and how many of its edges join inputs with the same intermediate value
    (`values`: the causal model's intermediate value on every input)."""
    n = len(correct)
    upper = np.triu_indices(n, 1)
    same = same_intermediate(values)
    informative = ~same & ~np.eye(n, dtype=bool)
    both = (correct & correct.T)[upper]
    either = (correct | correct.T)[upper]
    degrees = (correct & correct.T).sum(axis=1)
    return {
        "mean_iia": float(correct.sum() / (n * (n - 1))),
        "weight_fractions": {"0": float(np.mean(~either)), "0.5": float(np.mean(either & ~both)), "1": float(np.mean(both))},
        "mean_iia_label_changing_pairs": float(correct[informative].mean()),
        "n_edges_weight_1": int(both.sum()),
        "fraction_weight_1_same_intermediate": float(same[upper][both].mean()) if both.any() else None,
        "degree_weight_1": {
            "mean": float(degrees.mean()),
            "median": float(np.median(degrees)),
            "min": int(degrees.min()),
            "max": int(degrees.max()),
            "isolated": int(np.sum(degrees == 0)),
        },
    }
