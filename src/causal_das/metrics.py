"""IIA and the baselines it must be read against."""

from __future__ import annotations

import numpy as np

from causal_das.causal_model import CounterfactualData


def majority_rate(labels: np.ndarray) -> float:
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / len(labels))


def baselines(data: CounterfactualData, base_predictions: np.ndarray | None = None) -> dict[str, float]:
    """What IIA would be without any alignment.

    - majority: always predicting the most common counterfactual label;
    - copy_base_label: predicting the causal model's label for the base (no intervention effect);
    - copy_source_label: predicting the label of the (first intervened) source;
    - network_no_intervention: the unintervened network's prediction on the base.
    """
    out = {
        "majority": majority_rate(data.labels),
        "copy_base_label": float(np.mean(data.labels == data.base_labels)),
        "copy_source_label": float(np.mean(data.labels == data.source_labels)),
    }
    if base_predictions is not None:
        out["network_no_intervention"] = float(np.mean(np.asarray(base_predictions) == data.labels))
    return out


def iia(predictions: np.ndarray, data: CounterfactualData) -> dict:
    """Overall IIA and IIA per intervened set ("{WX}", "{YZ}", "{WX,YZ}", ...)."""
    predictions = np.asarray(predictions)
    hits = predictions == np.asarray(data.labels).astype(predictions.dtype)
    subsets = data.subset_names()
    return {
        "iia": float(hits.mean()),
        "by_subset": {name: float(hits[subsets == name].mean()) for name in sorted(set(subsets.tolist()), key=lambda s: (s.count(","), s))},
        "n_examples": len(hits),
    }
