"""IIA graphs: for one trained intervention (causal model, layer, k), whether the intervened network
gives the causal model's counterfactual label on each of the 999,000 ordered pairs of triples.

Nodes are the 1000 triples. `correct[b, s]` is True when the interchange with base b and source s
gives the counterfactual label; the weight of the undirected edge {i, j} is the mean of the two
orientations, (correct[i, j] + correct[j, i]) / 2, so 0, 0.5 or 1. The diagonal (base = source) is
not an interchange pair and is stored as False.

`correct_matrix` computes one (`correct_matrices` several at one site) with the fast engine on cached
block outputs: a chunk of bases against all 1000 sources, in passes of `engine.predict_cells`'s
size, and only the blocks after the site run. The graphs step that computes,
stores and reuses them is `experiments.iia_graphs`.
"""


from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from causal_das.das import engine
from causal_das.runtime.progress import inner as inner_bar
from causal_das.tasks import arithmetic

N = arithmetic.N_TRIPLES


@dataclass(frozen=True)
class Graph:
    causal_model: str
    layer: int
    k: int
    correct: np.ndarray  # (1000, 1000) bool, diagonal False

    @property
    def weight(self) -> np.ndarray:
        """(1000, 1000) symmetric edge weights in {0, 0.5, 1}; the diagonal is 0."""
        return (self.correct.astype(np.float32) + self.correct.T) / 2

    @property
    def agreement(self) -> np.ndarray:
        """(1000, 1000) bool: both orientations correct (the edges of weight 1)."""
        return self.correct & self.correct.T


def correct_matrix(network, site, trained, causal_model, bases_per_chunk: int = 25, progress: str | None = None) -> np.ndarray:
    """(1000, 1000) bool: the intervened prediction equals the counterfactual label, every ordered
    pair: `correct_matrices` for one intervention."""
    return correct_matrices(network, site, [trained], [causal_model], bases_per_chunk, progress)[0]


def correct_matrices(network, site, trained: list, causal_models: list, bases_per_chunk: int = 25, progress: str | None = None) -> list[np.ndarray]:
    """`correct_matrix` of several interventions at one site (each against its own causal model),
    evaluated together: each suffix pass holds one base with all 1000 sources for every intervention.
    `network` holds the prompts (`input_ids`) and each layer's cached block outputs (`states`), as
    `studies.arithmetic_network.Network` does."""
    correct = [np.zeros((N, N), dtype=bool) for _ in trained]
    sources = np.arange(N)
    chunks = range(0, N, bases_per_chunk)
    bar = {"desc": progress} if progress else {"disable": True}  # an explicit disable=False would override TQDM_DISABLE
    for start in inner_bar(chunks, unit="chunk", **bar):
        bases = np.arange(start, min(start + bases_per_chunk, N))
        base = np.repeat(bases, N)
        source = np.tile(sources, len(bases))
        data = engine.InterchangeData(network.input_ids, torch.as_tensor(base), torch.as_tensor(source)[:, None], torch.zeros(len(base), dtype=torch.long))
        # A chunk's pairs of every intervention, in passes of `predict_cells`'s size.
        predicted = engine.predict_cells(site, trained, data, batch_size=N * len(trained), activations=network.site_states(site))
        for matrix, causal_model, p in zip(correct, causal_models, predicted, strict=True):
            matrix[bases] = (p.numpy() == arithmetic.counterfactual_labels(causal_model, base, source)).reshape(len(bases), N)
    for matrix in correct:
        np.fill_diagonal(matrix, False)
    return correct


def same_intermediate(causal_model) -> np.ndarray:
    """(1000, 1000) bool: the two triples have the same value of the model's intermediate variable P,
    so the counterfactual label of either orientation is the base's own label. Such edges have
    weight 1 whenever the intervention changes nothing: they are no evidence for the model."""
    values = arithmetic.intermediate_values(causal_model)
    same = values[:, None] == values[None, :]
    np.fill_diagonal(same, False)
    return same


def statistics(correct: np.ndarray, causal_model) -> dict:
    """Mean IIA over the 999,000 ordered pairs (and over the pairs whose counterfactual label differs
    from the base's label); fractions of unordered pairs with weight 0 / 0.5 / 1; degree statistics
    of the weight-1 graph, and how many of its edges join triples with the same intermediate value."""
    upper = np.triu_indices(N, 1)
    same = same_intermediate(causal_model)
    informative = ~same & ~np.eye(N, dtype=bool)
    both = (correct & correct.T)[upper]
    either = (correct | correct.T)[upper]
    degrees = (correct & correct.T).sum(axis=1)
    return {
        "mean_iia": float(correct.sum() / arithmetic.N_PAIRS),
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
