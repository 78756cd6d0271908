"""Tasks over four objects W, X, Y, Z (random vectors) compared in two pairs.

Every task here has the same shape: two intermediate boolean variables, each the equality of one
pair of objects, and an output that combines them:

- `hierarchical_equality` (AABB, pyvene's DAS tutorial): WX = (W==X), YZ = (Y==Z), O = (WX == YZ).
- `pattern_matching` (ABAB): P = (W==Y), Q = (X==Z), O = P and Q.
- `aabb_and` (the ablation's "AABB"): WX = (W==X), YZ = (Y==Z), O = WX and YZ.
- `abba` (the ablation's "ABBA"): WZ = (W==Z), XY = (X==Y), O = WZ and XY.

Objects are vectors drawn uniformly from [-1, 1]^dim; two objects are equal only when one is a copy
of the other. A network sees the four objects concatenated: a vector of 4*dim numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from causal_das.causal_model import CausalModel, Mechanism, Setting

OBJECTS = ("W", "X", "Y", "Z")


def objects_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, dim), (n, dim) -> (n,) bool: whether each pair of objects is the same object."""
    return np.all(a == b, axis=-1)


@dataclass(frozen=True)
class FourObjectTask:
    """A task on four objects: which pairs are compared and how the two comparisons combine.

    Args:
        name: the task's name (a CLI choice).
        pattern: the name of its "True" pattern (AABB, ABAB, ...), used in plots.
        pairs: the two compared pairs, as indices into (W, X, Y, Z).
        variable_names: names of the two intermediate variables.
        combine: "eq" (O = V1 == V2) or "and" (O = V1 and V2).
        pattern_probs: probabilities of the four (pair1 equal, pair2 equal) patterns, in the order
            (False, False), (True, False), (False, True), (True, True).
    """

    name: str
    pattern: str
    pairs: tuple[tuple[int, int], tuple[int, int]]
    variable_names: tuple[str, str]
    combine: str
    pattern_probs: tuple[float, float, float, float]

    def causal_model(self) -> CausalModel:
        (a1, b1), (a2, b2) = self.pairs
        v1, v2 = self.variable_names
        combine: Callable[[np.ndarray, np.ndarray], np.ndarray]
        combine = np.equal if self.combine == "eq" else np.logical_and
        return CausalModel(
            name=self.pattern,
            inputs=OBJECTS,
            mechanisms={
                v1: Mechanism((OBJECTS[a1], OBJECTS[b1]), objects_equal),
                v2: Mechanism((OBJECTS[a2], OBJECTS[b2]), objects_equal),
                "O": Mechanism((v1, v2), combine),
            },
            output="O",
            values={v1: (False, True), v2: (False, True), "O": (False, True)},
        )

    def sample_inputs(self, rng: np.random.Generator, n: int, dim: int) -> Setting:
        """Draws `n` inputs: four fresh objects, then copies within the pairs a pattern makes equal."""
        objects = rng.uniform(-1.0, 1.0, size=(4, n, dim))
        pattern = rng.choice(4, size=n, p=self.pattern_probs)
        for bit, (a, b) in enumerate(self.pairs):
            equal = ((pattern >> bit) & 1).astype(bool)
            objects[b, equal] = objects[a, equal]
        return {name: objects[i] for i, name in enumerate(OBJECTS)}

    def sampler(self, dim: int):
        """The input sampler for `sample_counterfactuals`: (rng, n) -> setting."""
        return lambda rng, n: self.sample_inputs(rng, n, dim)


def encode(setting: Setting) -> np.ndarray:
    """{W, X, Y, Z: (n, dim)} -> (n, 4*dim) float32, the network's input."""
    return np.concatenate([setting[o] for o in OBJECTS], axis=1).astype(np.float32)


# Hierarchical equality: the four patterns ABCD, AACD, ABCC, AABB are equally likely (the tutorial's
# sampler), so both intermediate variables and the label are balanced. For the AND tasks the True
# pattern gets half the mass and the three others a sixth each, so labels are balanced and both
# intermediate variables still vary on their own.
_BALANCED_AND = (1 / 6, 1 / 6, 1 / 6, 1 / 2)

TASKS: dict[str, FourObjectTask] = {
    t.name: t
    for t in (
        FourObjectTask("hierarchical_equality", "AABB", ((0, 1), (2, 3)), ("WX", "YZ"), "eq", (0.25,) * 4),
        FourObjectTask("pattern_matching", "ABAB", ((0, 2), (1, 3)), ("P", "Q"), "and", _BALANCED_AND),
        FourObjectTask("aabb_and", "AABB(AND)", ((0, 1), (2, 3)), ("WX", "YZ"), "and", _BALANCED_AND),
        FourObjectTask("abba", "ABBA", ((0, 3), (1, 2)), ("WZ", "XY"), "and", _BALANCED_AND),
    )
}


def get_task(name: str) -> FourObjectTask:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]
