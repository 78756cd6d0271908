"""High-level causal models and counterfactual (interchange) data.

A causal model is a DAG of variables. Input variables have no parents; every other variable has a
mechanism, a pure function of its parents' values. Everything here is vectorised: a "setting" maps
each variable name to a numpy array whose first axis is the example axis, so one call runs the model
on a whole dataset.

An interchange intervention runs the model on a base input while fixing some intermediate variables
to the values they take on other (source) inputs. DAS asks whether a network's hidden representation
can be rotated so that swapping subspaces between a base and source inputs has the same effect on
the network's output as these interchange interventions have on the causal model's output.

Sampling follows the seeds (pyvene's `CausalModel.generate_counterfactual_dataset` with the
tutorials' samplers): only intermediate variables are intervened; with several of them, the
intervened set is a uniformly chosen non-empty subset ({A}, {B} or {A, B} with probability 1/3
each for two); each intervened variable gets its own source, an independent draw of the task's
input sampler. Randomness comes only from the `numpy.random.Generator` passed in.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

Setting = dict[str, np.ndarray]
# An input sampler draws `n` inputs: rng, n -> {input variable: array with first axis n}.
InputSampler = Callable[[np.random.Generator, int], Setting]


@dataclass(frozen=True)
class Mechanism:
    """How a non-input variable is computed: `function(*parent_values)`, vectorised."""

    parents: tuple[str, ...]
    function: Callable[..., np.ndarray]


@dataclass(frozen=True)
class CausalModel:
    """A causal model: inputs, mechanisms for every other variable, one output variable.

    Args:
        name: a short name used in result files (e.g. "(X+Y)+Z", "AABB").
        inputs: the input variables, in the order a network sees them.
        mechanisms: one `Mechanism` per non-input variable.
        output: the variable whose value is the label.
        values: optional value sets (used for documentation and for pyvene's CausalModel).
    """

    name: str
    inputs: tuple[str, ...]
    mechanisms: Mapping[str, Mechanism]
    output: str
    values: Mapping[str, tuple] = field(default_factory=dict)

    def __post_init__(self):
        declared = set(self.inputs) | set(self.mechanisms)
        for var, mech in self.mechanisms.items():
            missing = [p for p in mech.parents if p not in declared]
            if missing:
                raise ValueError(f"variable {var!r} has unknown parents {missing}")
        if self.output not in self.mechanisms:
            raise ValueError(f"output {self.output!r} has no mechanism")
        _ = self.topological_order  # raises on a cycle

    @functools.cached_property
    def topological_order(self) -> tuple[str, ...]:
        order, placed = list(self.inputs), set(self.inputs)
        pending = [v for v in self.mechanisms if v not in placed]
        while pending:
            ready = [v for v in pending if all(p in placed for p in self.mechanisms[v].parents)]
            if not ready:
                raise ValueError(f"the causal graph has a cycle among {pending}")
            for v in ready:
                order.append(v)
                placed.add(v)
            pending = [v for v in pending if v not in placed]
        return tuple(order)

    @functools.cached_property
    def intermediate(self) -> tuple[str, ...]:
        """The variables DAS may intervene on: neither inputs nor the output, topologically ordered."""
        return tuple(v for v in self.topological_order if v not in self.inputs and v != self.output)

    def run_forward(self, inputs: Mapping[str, np.ndarray], interventions: Mapping[str, np.ndarray] | None = None) -> Setting:
        """Computes every variable. `interventions` fixes variables to given values (per example)."""
        interventions = interventions or {}
        setting: Setting = {}
        for var in self.topological_order:
            if var in interventions:
                setting[var] = np.asarray(interventions[var])
            elif var in self.inputs:
                setting[var] = np.asarray(inputs[var])
            else:
                mech = self.mechanisms[var]
                setting[var] = np.asarray(mech.function(*(setting[p] for p in mech.parents)))
        return setting

    def run_interchange(
        self,
        base: Mapping[str, np.ndarray],
        sources: Mapping[str, Mapping[str, np.ndarray]],
        intervened: Mapping[str, np.ndarray] | None = None,
    ) -> Setting:
        """Runs `base` with each variable in `sources` set to its value on that variable's source.

        Args:
            base: the base inputs.
            sources: {variable: source inputs}; the variable takes its value on these inputs.
            intervened: optional {variable: bool array (n,)}; where False the variable keeps its
                base value, so one call handles examples with different intervened sets.
        """
        base_setting = self.run_forward(base)
        fixed = {}
        for var, source in sources.items():
            if var not in self.intermediate:
                raise ValueError(f"{var!r} is not an intermediate variable of {self.name}: {self.intermediate}")
            value = self.run_forward(source)[var]
            if intervened is not None and var in intervened:
                mask = np.asarray(intervened[var], dtype=bool).reshape((-1,) + (1,) * (value.ndim - 1))
                value = np.where(mask, value, base_setting[var])
            fixed[var] = value
        return self.run_forward(base, fixed)


@dataclass(frozen=True)
class CounterfactualData:
    """Counterfactual examples: a base, one source per intermediate variable, labels.

    `sources[v]` holds the inputs variable `v` is taken from. Where `v` is not intervened
    (`intervened[v]` False) its source is a copy of the base, so swapping that variable's
    subspace from it changes nothing: every example can be run with all sources at once.
    """

    variables: tuple[str, ...]
    base: Setting
    sources: dict[str, Setting]
    intervened: dict[str, np.ndarray]  # variable -> bool (n,)
    labels: np.ndarray  # (n,) the causal model's counterfactual output
    base_labels: np.ndarray  # (n,) the causal model's output on the base
    source_labels: np.ndarray  # (n,) output on the source of the first intervened variable

    def __len__(self) -> int:
        return len(self.labels)

    def subset_names(self) -> np.ndarray:
        """Each example's intervened set as a string such as "{WX,YZ}" (for per-subset IIA)."""
        flags = np.stack([self.intervened[v] for v in self.variables], axis=1)
        names = np.empty(len(self), dtype=object)
        for row_flags in {tuple(r) for r in flags.tolist()}:
            name = "{" + ",".join(v for v, on in zip(self.variables, row_flags, strict=True) if on) + "}"
            names[(flags == np.array(row_flags)).all(axis=1)] = name
        return names

    def relabel(self, model: CausalModel) -> CounterfactualData:
        """The same inputs and interventions, labelled by another causal model with the same
        number of intermediate variables (taken in order): for testing a W against a wrong model."""
        if len(model.intermediate) != len(self.variables):
            raise ValueError(f"{model.name} has {len(model.intermediate)} intermediate variables, data has {len(self.variables)}")
        mapping = dict(zip(self.variables, model.intermediate, strict=True))
        sources = {mapping[v]: s for v, s in self.sources.items()}
        intervened = {mapping[v]: m for v, m in self.intervened.items()}
        labels = model.run_interchange(self.base, sources, intervened)[model.output]
        first_source = _first_intervened_source(model.intermediate, sources, intervened)
        return CounterfactualData(
            variables=model.intermediate,
            base=self.base,
            sources=sources,
            intervened=intervened,
            labels=labels,
            base_labels=model.run_forward(self.base)[model.output],
            source_labels=model.run_forward(first_source)[model.output],
        )


def intervention_subsets(variables: Sequence[str]) -> list[tuple[str, ...]]:
    """All non-empty subsets of `variables`, smallest first: the sets we sample uniformly."""
    return [s for r in range(1, len(variables) + 1) for s in itertools.combinations(variables, r)]


def sample_counterfactuals(
    model: CausalModel,
    sampler: InputSampler,
    n: int,
    rng: np.random.Generator,
    subsets: Sequence[tuple[str, ...]] | None = None,
) -> CounterfactualData:
    """Draws `n` counterfactual examples (semantics in the module docstring).

    Args:
        model: the causal model that labels the examples.
        sampler: the task's input sampler.
        n: number of examples.
        rng: the only source of randomness.
        subsets: the intervened sets to choose from uniformly (default: all non-empty subsets of
            the intermediate variables).
    """
    variables = model.intermediate
    if not variables:
        raise ValueError(f"{model.name} has no intermediate variable to intervene on")
    subsets = list(subsets) if subsets is not None else intervention_subsets(variables)
    base = sampler(rng, n)
    choice = rng.integers(len(subsets), size=n)
    intervened = {v: np.isin(choice, [i for i, s in enumerate(subsets) if v in s]) for v in variables}
    sources = {}
    for v in variables:
        drawn = sampler(rng, n)
        # A variable that is not intervened reads its "source" from the base: a no-op swap.
        sources[v] = {
            name: np.where(intervened[v].reshape((-1,) + (1,) * (arr.ndim - 1)), arr, base[name])
            for name, arr in drawn.items()
        }
    labels = model.run_interchange(base, sources, intervened)[model.output]
    first_source = _first_intervened_source(variables, sources, intervened)
    return CounterfactualData(
        variables=variables,
        base=base,
        sources=sources,
        intervened=intervened,
        labels=labels,
        base_labels=model.run_forward(base)[model.output],
        source_labels=model.run_forward(first_source)[model.output],
    )


def _first_intervened_source(variables, sources, intervened) -> Setting:
    """Per example, the source of the first intervened variable (for the copy-source baseline)."""
    out = {name: arr.copy() for name, arr in sources[variables[-1]].items()}
    for v in reversed(variables):
        for name, arr in sources[v].items():
            mask = intervened[v].reshape((-1,) + (1,) * (arr.ndim - 1))
            out[name] = np.where(mask, arr, out[name])
    return out
