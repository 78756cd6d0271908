"""From a causal model's counterfactual examples to the engines' `InterchangeData`, for any task.

A `CounterfactualData` holds settings (numpy arrays of the causal model's input variables); the
engines want network inputs as a table of distinct rows and each example as indices into it, so
each distinct input's prefix activations are computed once. `build` does the conversion for any
task given two task-specific functions:

- `encode(setting) -> tensor`: the network inputs of a setting, one row per example (token ids of
  a prompt, float features, images). It is called ONCE on the base and every source of every
  dataset together, so an encoder that depends on the batch (a tokenizer padding to the longest
  prompt) treats all of them alike; it must map equal settings to equal rows.
- `label_of(values) -> class ids`: the causal model's output values as the network's classes
  (token ids of the answer words, indices into an answer set). Called once on every label of
  every dataset together, so a mapping built from the values it sees is the same for all of them.

Rows are deduplicated with `torch.unique(dim=0)`, which sorts them: the table's order depends only
on the encoded rows, never on the order of the examples. Train and test sets that a single engine
pass evaluates must index one table (`engine.train_cells`, `engine.predict_cells`): build them
together with `build_many` (or draw them with `sample_many`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from causal_das.causal_model import (
    CausalModel,
    CounterfactualData,
    InputSampler,
    Setting,
    sample_counterfactuals,
)
from causal_das.das.data import InterchangeData

__all__ = ["Encoder", "LabelMap", "build", "build_many", "sample", "sample_many"]

Encoder = Callable[[Setting], torch.Tensor]  # setting with n rows -> (n, ...) network inputs
LabelMap = Callable[[np.ndarray], "np.ndarray | torch.Tensor"]  # output values (m,) -> class ids (m,)


def build(counterfactuals: CounterfactualData, encode: Encoder, label_of: LabelMap | None = None) -> InterchangeData:
    """`counterfactuals` as `InterchangeData`: a table of its distinct encoded inputs, base (N,) and
    sources (N, V) indices into it (V in `counterfactuals.variables` order; a variable's source
    index is the base's wherever it is not intervened), the counterfactual, base and source labels
    through `label_of` (default: the values themselves, which must be integers), and which
    variables each example intervenes on.

    Raises ValueError when the settings and labels disagree on the number of examples, when
    `encode` does not return one row per example, or when labels are not integers."""
    return build_many([counterfactuals], encode, label_of)[0]


def build_many(datasets: Sequence[CounterfactualData], encode: Encoder, label_of: LabelMap | None = None) -> list[InterchangeData]:
    """`build` for several datasets at once (e.g. train and test), all indexing ONE table of inputs
    (the same tensor object): `encode` and `label_of` are each called once on all of them."""
    datasets = list(datasets)
    if not datasets:
        raise ValueError("build_many: no counterfactual data given")
    for data in datasets:
        _check_lengths(data)
    settings = [setting for data in datasets for setting in (data.base, *(data.sources[v] for v in data.variables))]
    rows = sum(_n_rows(setting) for setting in settings)
    encoded = encode(_concatenate(settings))
    if not isinstance(encoded, torch.Tensor):
        raise ValueError(f"encode must return a torch.Tensor with one row per example, not {type(encoded).__name__}")
    if encoded.ndim == 0 or len(encoded) != rows:
        raise ValueError(f"encode returned {tuple(encoded.shape)} for {rows} settings: its first axis must be one row per setting")
    table, inverse = torch.unique(encoded.cpu(), dim=0, return_inverse=True)
    labels = _class_ids([array for data in datasets for array in (data.labels, data.base_labels, data.source_labels)], label_of)

    out, row, label = [], 0, 0
    for data in datasets:
        n, n_vars = len(data), len(data.variables)
        index = inverse[row : row + n * (1 + n_vars)].reshape(1 + n_vars, n)
        intervened = torch.as_tensor(np.stack([np.asarray(data.intervened[v], dtype=bool) for v in data.variables], axis=1))
        base = index[0]
        # An encoder maps a copied base to the same row, so this changes nothing for sampled data;
        # it makes the promise (no-op swap where not intervened) hold for any data handed in.
        sources = torch.where(intervened, index[1:].T, base[:, None])
        cf_labels, base_labels, source_labels = labels[label : label + 3 * n].reshape(3, n)
        out.append(InterchangeData(table, base.contiguous(), sources.contiguous(), cf_labels.clone(), base_labels.clone(),
                                   source_labels.clone(), intervened, tuple(data.variables)))
        row, label = row + n * (1 + n_vars), label + 3 * n
    return out


def sample(
    causal_model: CausalModel,
    sampler: InputSampler,
    n: int,
    rng: np.random.Generator,
    encode: Encoder,
    label_of: LabelMap | None = None,
    subsets: Sequence[tuple[str, ...]] | None = None,
) -> InterchangeData:
    """`n` counterfactual examples of `causal_model` (`sample_counterfactuals`), built (`build`)."""
    return build(sample_counterfactuals(causal_model, sampler, n, rng, subsets), encode, label_of)


def sample_many(
    causal_model: CausalModel,
    sampler: InputSampler,
    sizes: Sequence[int],
    rng: np.random.Generator,
    encode: Encoder,
    label_of: LabelMap | None = None,
    subsets: Sequence[tuple[str, ...]] | None = None,
) -> list[InterchangeData]:
    """One dataset per entry of `sizes` (e.g. (train, test)), drawn one after the other from `rng`
    and indexing one shared table of inputs (`build_many`)."""
    return build_many([sample_counterfactuals(causal_model, sampler, n, rng, subsets) for n in sizes], encode, label_of)


def _n_rows(setting: Setting) -> int:
    lengths = {len(np.asarray(array)) for array in setting.values()}
    if len(lengths) != 1:
        raise ValueError(f"a setting's variables disagree on the number of examples: {sorted(lengths)}")
    return lengths.pop()


def _check_lengths(data: CounterfactualData) -> None:
    n = len(data.labels)
    named = {"base": data.base, **{f"sources[{v!r}]": data.sources[v] for v in data.variables}}
    for name, setting in named.items():
        if _n_rows(setting) != n:
            raise ValueError(f"counterfactual data: {name} has {_n_rows(setting)} examples but labels has {n}")
    for name in ("base_labels", "source_labels"):
        if len(getattr(data, name)) != n:
            raise ValueError(f"counterfactual data: {name} has {len(getattr(data, name))} examples but labels has {n}")
    for v in data.variables:
        if np.shape(data.intervened[v]) != (n,):
            raise ValueError(f"counterfactual data: intervened[{v!r}] has shape {np.shape(data.intervened[v])}, expected ({n},)")


def _concatenate(settings: list[Setting]) -> Setting:
    names = set(settings[0])
    for setting in settings[1:]:
        if set(setting) != names:
            raise ValueError(f"settings name different input variables: {sorted(names)} and {sorted(setting)}")
    return {name: np.concatenate([np.asarray(setting[name]) for setting in settings]) for name in settings[0]}


def _class_ids(arrays: list[np.ndarray], label_of: LabelMap | None) -> torch.Tensor:
    """Every array's values as int64 class ids, concatenated (label_of called once on all)."""
    values = np.concatenate([np.asarray(array).reshape(-1) for array in arrays])
    ids = values if label_of is None else label_of(values)
    ids = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    if ids.shape != values.shape:
        raise ValueError(f"label_of returned shape {ids.shape} for {values.shape} label values: it must map each value to one class id")
    if not (np.issubdtype(ids.dtype, np.integer) or ids.dtype == bool):
        where = "label_of returned" if label_of is not None else "the causal model's labels are"
        raise ValueError(f"{where} {ids.dtype} values, not integer class ids: pass label_of to map the labels to class ids")
    return torch.as_tensor(ids.astype(np.int64))
