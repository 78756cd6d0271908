"""What the analyses need to know of a task: its table of distinct inputs.

The analyses work on IIA graphs whose nodes are a task's distinct inputs (for X+Y+Z, the 1000
triples), indexed 0..n-1 in the order the network saw them. The algorithms themselves know no task:
what a task knows of its inputs reaches them through an `InputTable` built by the task's study
(`studies.arithmetic_analysis.INPUTS` for X+Y+Z):

- `rows`: how each input is shown in a result (the cliques' largest clique lists them);
- `values_of(name)`: the value of causal model `name`'s intermediate variable on every input, so an
  analysis can tell which edges an intervention that does nothing also gets right (equal values:
  the counterfactual label is the base's own label);
- `labels(causal_model, base_ids, source_ids)`: the counterfactual labels of (base, source) pairs
  of input indices, what the graphs compare the intervened network's prediction with;
- `features`, `feature_names`: interpretable features of every input, over which a decision tree
  learns which causal model explains an input (`classification`); a table without them serves every
  analysis but that one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InputTable:
    rows: Sequence  # (n, ...) each input as a result shows it, e.g. the (n, 3) triples
    values_of: Callable[[str], np.ndarray]  # causal model name -> (n,) its intermediate variable's value per input
    labels: Callable[..., np.ndarray]  # (causal_model, base_ids, source_ids) -> (len(base_ids),) counterfactual labels
    features: np.ndarray | None = None  # (n, len(feature_names)) integer features, for classification
    feature_names: tuple[str, ...] = ()

    def __post_init__(self):
        if self.features is not None and np.shape(self.features) != (len(self.rows), len(self.feature_names)):
            raise ValueError(f"features of shape {np.shape(self.features)} do not match {len(self.rows)} inputs and "
                             f"{len(self.feature_names)} feature names")

    @property
    def n(self) -> int:
        return len(self.rows)

    def row(self, index: int):
        """Input `index` as JSON holds it (a numpy row becomes a list of Python numbers)."""
        value = self.rows[index]
        return value.tolist() if isinstance(value, np.ndarray | np.generic) else value

    def require_features(self) -> np.ndarray:
        if self.features is None:
            raise ValueError("this input table has no features: classification needs InputTable(features=..., feature_names=...)")
        return self.features
