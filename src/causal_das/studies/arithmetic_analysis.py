"""X+Y+Z as the disentangling analyses see it: the input table (`analysis.inputs.InputTable`) of the
1000 triples, in the order of `tasks.arithmetic` (index = 100 (X-1) + 10 (Y-1) + (Z-1)).

Each triple is shown as [X, Y, Z]; its features for the classifier are the numbers, their parities
and their sums (`FEATURES`); a causal model's intermediate value on it is its P (`(X+Y)+Z`: X+Y);
its counterfactual labels are `arithmetic.counterfactual_labels`.
"""

from __future__ import annotations

import numpy as np

from causal_das.analysis.inputs import InputTable
from causal_das.tasks import arithmetic

FEATURES = (
    "X", "Y", "Z",
    "X even", "Y even", "Z even",
    "X+Y", "X+Z", "Y+Z", "X+Y+Z",
    "X+Y+Z divisible by 3", "X+Y+Z divisible by 5", "X+Y+Z divisible by 7",
)  # fmt: skip


def features(triples: np.ndarray) -> np.ndarray:
    """(N, len(FEATURES)) integer features of (N, 3) triples."""
    x, y, z = (np.asarray(triples)[:, i] for i in range(3))
    total = x + y + z
    columns = [x, y, z, x % 2 == 0, y % 2 == 0, z % 2 == 0, x + y, x + z, y + z, total, total % 3 == 0, total % 5 == 0, total % 7 == 0]
    return np.stack([np.asarray(c, dtype=np.int64) for c in columns], axis=1)


def intermediate_values(name: str) -> np.ndarray:
    """(1000,) the value of causal model `name`'s intermediate variable P on every triple."""
    return arithmetic.intermediate_values(arithmetic.get_model(name))


INPUTS = InputTable(
    rows=arithmetic.TRIPLES,
    values_of=intermediate_values,
    labels=arithmetic.counterfactual_labels,
    features=features(arithmetic.TRIPLES),
    feature_names=FEATURES,
)
