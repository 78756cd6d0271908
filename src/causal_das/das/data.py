"""The contract both DAS engines share: counterfactual data as indices, how to train, and the trained
intervention (W, its subspace split and its site), with saving and loading. Nothing here trains."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from causal_das.das.intervention import DistributedInterchange
from causal_das.das.site import SiteName
from causal_das.runtime.settings import as_json


@dataclass(frozen=True)
class InterchangeData:
    """Counterfactual examples as indices into a table of distinct network inputs.

    A (base, source) pair is two indices, so a dataset with few distinct inputs (the 1000
    arithmetic prompts) caches each input's activations once. Where a variable is not intervened
    its source index equals the base index.

    The optional fields are what evaluation needs beyond training (`das.counterfactuals.build`
    fills them from the causal model; data built by hand may leave them None): the causal model's
    label on the base and on the first intervened source (the copy-base and copy-source baselines),
    which variables each example intervenes on, and the variables' names (the columns of `sources`).
    """

    inputs: torch.Tensor  # (M, ...) distinct network inputs
    base: torch.Tensor  # (N,) long
    sources: torch.Tensor  # (N, V) long
    labels: torch.Tensor  # (N,) long: the causal model's counterfactual labels
    base_labels: torch.Tensor | None = None  # (N,) long: the causal model's label on the base
    source_labels: torch.Tensor | None = None  # (N,) long: its label on the first intervened source
    intervened: torch.Tensor | None = None  # (N, V) bool: which variables each example intervenes on
    variables: tuple[str, ...] | None = None  # (V,) the intermediate variables, in the order of `sources`' columns

    def __post_init__(self):
        if self.sources.ndim != 2 or len(self.sources) != len(self.base) or len(self.labels) != len(self.base):
            raise ValueError("InterchangeData: base (N,), sources (N, V) and labels (N,) must agree on N")
        for name in ("base_labels", "source_labels"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (len(self.base),):
                raise ValueError(f"InterchangeData: {name} has shape {tuple(value.shape)}, expected ({len(self.base)},)")
        if self.intervened is not None and tuple(self.intervened.shape) != tuple(self.sources.shape):
            raise ValueError(f"InterchangeData: intervened has shape {tuple(self.intervened.shape)}, expected that of sources {tuple(self.sources.shape)}")
        if self.variables is not None and len(self.variables) != self.sources.shape[1]:
            raise ValueError(f"InterchangeData: {len(self.variables)} variable names for {self.sources.shape[1]} source column(s)")

    def __len__(self) -> int:
        return len(self.base)

    @property
    def n_variables(self) -> int:
        return self.sources.shape[1]

    def to(self, device: torch.device) -> InterchangeData:
        move = {f.name: value.to(device) for f in fields(self) if isinstance(value := getattr(self, f.name), torch.Tensor)}
        return replace(self, **move)

    def subset_names(self) -> np.ndarray | None:
        """Each example's intervened set as a string such as "{A,B}", named as
        `CounterfactualData.subset_names` names it (for per-subset IIA); None without `intervened`."""
        if self.intervened is None:
            return None
        variables = self.variables or tuple(f"v{i}" for i in range(self.n_variables))
        flags = self.intervened.cpu().numpy().astype(bool)
        names = np.empty(len(self), dtype=object)
        for row_flags in {tuple(r) for r in flags.tolist()}:
            names[(flags == np.array(row_flags)).all(axis=1)] = "{" + ",".join(v for v, on in zip(variables, row_flags, strict=True) if on) + "}"
        return names


@dataclass(frozen=True)
class DASConfig:
    """How to train one intervention. `subspace_sizes[v]` columns of W belong to variable v."""

    subspace_sizes: tuple[int, ...]
    epochs: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0


@dataclass
class TrainedIntervention:
    """A trained W with what is needed to use it again: the site, the subspace split, the history."""

    site: str
    n: int
    subspace_sizes: tuple[int, ...]
    weight: torch.Tensor  # (n, k), orthonormal columns; the identity for a full swap
    engine: str = "fast"
    history: dict = field(default_factory=dict)

    def module(self) -> DistributedInterchange:
        intervention = DistributedInterchange(self.n, self.subspace_sizes)
        if intervention.trainable:
            intervention.rotation.load_matrix(self.weight)
        return intervention

    def save(self, directory: str | os.PathLike) -> None:
        """Writes `weights.safetensors` (W) and `config.json`; each file appears whole or not at all."""
        from safetensors.torch import save_file

        from causal_das.runtime.io import atomic_write_json, atomic_writer

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_writer(directory / "weights.safetensors", binary=True) as tmp_path:
            save_file({"weight": self.weight.detach().contiguous().cpu()}, tmp_path)
        atomic_write_json(
            directory / "config.json",
            {"site": self.site, "n": self.n, "subspace_sizes": list(self.subspace_sizes), "engine": self.engine, "history": self.history},
        )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TrainedIntervention:
        """Reads what `save` wrote; raises ValueError naming the file when it is missing or corrupt."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path, weight_path = directory / "config.json", directory / "weights.safetensors"
        for path in (config_path, weight_path):
            if not path.is_file():
                raise ValueError(f"saved intervention is incomplete: {path} is missing")
        try:
            config = json.loads(config_path.read_text())
            site, n, sizes = str(config["site"]), int(config["n"]), tuple(int(s) for s in config["subspace_sizes"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"saved intervention config {config_path} is corrupt ({error})") from None
        try:
            weight = load_file(str(weight_path))["weight"]
        except (SafetensorError, KeyError, OSError, ValueError) as error:
            raise ValueError(f"saved intervention weights {weight_path} are corrupt ({error})") from None
        SiteName.parse(site)
        full_swap = len(sizes) == 1 and sizes[0] == n
        expected = (n, n) if full_swap else (n, sum(sizes))
        if tuple(weight.shape) != expected:
            raise ValueError(f"saved intervention weights {weight_path} have shape {tuple(weight.shape)}, config says {expected}")
        if not torch.isfinite(weight).all():
            raise ValueError(f"saved intervention weights {weight_path} contain NaN or inf")
        return cls(site, n, sizes, weight, config.get("engine", "fast"), config.get("history", {}))


def config_dict(config: DASConfig) -> dict:
    return as_json(config)


def n_steps(n_examples: int, config: DASConfig) -> int:
    return config.epochs * math.ceil(n_examples / config.batch_size)
