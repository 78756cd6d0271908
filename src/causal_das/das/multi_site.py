"""Multi-site DAS: several causal variables, each aligned at its own site (layer and positions).

The single-site engines (`das.engine`) give every variable a block of one rotation W at ONE site.
Here, as in pyvene's multi-unit interventions (causalab calls them targets), variable v has its own
site (layer L_v, positions P_v) and its own rotation W_v (n_v x k_v, orthonormal columns):

- source activations: the state at (L_v, P_v) of a plain forward pass of v's source input;
- the base input runs forward once; at L_v the state at P_v becomes
  `h + (h_src_v - h) W_v W_v^T` (the k_v rotated coordinates taken from the source, the rest kept),
  and the forward pass continues from there, so a later variable's base state is the one of the
  already-intervened run (pyvene's semantics; tests/test_multi_site.py checks them against
  pyvene 0.1.8 to 1e-5).

All rotations train jointly (Adam, cross-entropy on the causal model's counterfactual label, the
shared loop `training.optimise`: same seed, batches and divergence guard as `engine.train`). A row
intervenes on v only where the data says so (`InterchangeData.intervened`, else where v's source
is not the base): with sites at different layers, "interchanging" from the base itself would undo
an earlier variable's effect, so a variable that is not intervened is left alone.

Where the sites are is the network's business (`MultiSiteNetwork`; `models.lm_multi_site` for any
Hugging Face decoder): this module knows no network. Like the fast engine, the network caches what
does not change while W trains (each input's state at every site, and the base's state at the first
site's layer), so a step runs only the layers from there on. W, its QR and the interchange run in
IEEE fp32 whatever the network's dtype; k_v = n_v is a full patch of the site (W_v = I exactly) and
k_v = 0 leaves it alone.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from causal_das.das.data import DASConfig, InterchangeData
from causal_das.das.engine import frozen
from causal_das.das.intervention import Rotation
from causal_das.das.training import optimise
from causal_das.runtime import devices

__all__ = ["MultiSiteCache", "MultiSiteConfig", "MultiSiteIntervention", "MultiSiteNetwork", "TrainedMultiSite", "VariableSite",
           "logits_multi", "predict_multi", "random_rotations", "train_multi", "variable_columns"]

Edit = Callable[[torch.Tensor], torch.Tensor]  # a variable's site state (B, n_v) fp32 -> the intervened state (B, n_v) fp32


@dataclass(frozen=True)
class VariableSite:
    """Where one causal variable is aligned: `layer`, the named `positions` (concatenated in this
    order: n = len(positions) x width), and `k`, the dimension of its subspace. `name` is the
    variable's name in the data (`InterchangeData.variables`)."""

    name: str
    layer: int
    positions: tuple[str, ...]
    k: int

    def __post_init__(self):
        positions = (self.positions,) if isinstance(self.positions, str) else tuple(self.positions)
        object.__setattr__(self, "positions", positions)
        if not self.name or not positions:
            raise ValueError(f"a variable site needs a name and at least one position; got {self.name!r} at {list(positions)}")
        if int(self.k) != self.k or self.k < 0 or int(self.layer) != self.layer:
            raise ValueError(f"variable {self.name!r}: k {self.k} must be a non-negative integer and layer {self.layer} an integer")


@dataclass(frozen=True)
class MultiSiteConfig:
    """How the rotations train (as `engine.DASConfig`, without the sizes: each site has its k)."""

    epochs: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0


@dataclass
class MultiSiteCache:
    """What the intervened runs of a table of inputs need, computed once: `sources[v]` (M, n_v) fp32,
    each input's plain-forward state at variable v's site, and `base`, the network's own (e.g. every
    input's hidden state at the first site's layer)."""

    sources: list[torch.Tensor]
    base: Any


class MultiSiteNetwork(Protocol):
    """A frozen network with one site per variable; `models.lm_multi_site.LanguageModelMultiSite`."""

    model: nn.Module

    def widths(self, sites: Sequence[VariableSite]) -> tuple[int, ...]:
        """n_v of each site; ValueError (one line) for a layer or position the network does not have,
        or two sites that overlap (same layer, shared positions)."""
        ...

    def cache(self, inputs: torch.Tensor, sites: Sequence[VariableSite]) -> MultiSiteCache:
        """The cache of the table `inputs` (M, ...) for `sites`, on the network's device."""
        ...

    def run(self, cache: MultiSiteCache, base: torch.Tensor, edits: Sequence[Edit | None]) -> torch.Tensor:
        """Logits (B, C), fp32, of the base inputs `base` (B,) (indices into the cached table), with
        `edits[v]` applied to the state at site v during the forward pass (None: left alone)."""
        ...


class MultiSiteIntervention(nn.Module):
    """One rotation per variable: W_v (n_v, k_v); the identity for k_v = n_v (a full patch)."""

    def __init__(self, widths: Sequence[int], sizes: Sequence[int], generator: torch.Generator | None = None):
        super().__init__()
        if len(widths) != len(sizes):
            raise ValueError(f"{len(widths)} site widths but {len(sizes)} subspace sizes")
        for n, k in zip(widths, sizes, strict=True):
            if not 0 <= k <= n:
                raise ValueError(f"a subspace of k = {k} does not fit a site of n = {n} dimensions (0 <= k <= n)")
        self.widths, self.sizes = tuple(int(n) for n in widths), tuple(int(k) for k in sizes)
        self.full = tuple(k == n for n, k in zip(self.widths, self.sizes, strict=True))
        # Drawn in variable order from one generator: a seed gives the same start on every device.
        self.rotations = nn.ModuleList(Rotation(n, 0 if full else k, generator) for n, k, full in zip(self.widths, self.sizes, self.full, strict=True))

    @property
    def trainable(self) -> bool:
        return any(k > 0 and not full for k, full in zip(self.sizes, self.full, strict=True))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [r.unconstrained for r, k, full in zip(self.rotations, self.sizes, self.full, strict=True) if k and not full]

    def weights(self) -> list[torch.Tensor]:
        """W_v (n_v, k_v) of every variable, fp32 (the identity for a full patch)."""
        device = self.rotations[0].unconstrained.device
        return [torch.eye(n, device=device) if full else rotation() for n, full, rotation in zip(self.widths, self.full, self.rotations, strict=True)]

    @torch.no_grad()
    def load(self, weights: Sequence[torch.Tensor]) -> MultiSiteIntervention:
        """Sets every W_v (n_v, k_v); ValueError for a wrong shape or a W that is not orthonormal."""
        shapes = [tuple(w.shape) for w in weights]
        if shapes != list(zip(self.widths, self.sizes, strict=True)):
            raise ValueError(f"rotations of shapes {shapes} do not fit sites of (n, k) {list(zip(self.widths, self.sizes, strict=True))}")
        for rotation, weight, full in zip(self.rotations, weights, self.full, strict=True):
            if not full:
                rotation.load_matrix(weight.detach().float().cpu())
        return self


def interchange(base: torch.Tensor, source: torch.Tensor, weight: torch.Tensor, full: bool, active: torch.Tensor | None) -> torch.Tensor:
    """base (B, n) with the subspace of W (n, k) taken from source (B, n), in fp32; rows where
    `active` (B,) is False keep the base."""
    # Inside the network's forward pass: out of its bf16 autocast (if any), and TF32 off.
    with torch.autocast(base.device.type, enabled=False), devices.full_fp32(base.device):
        mixed = source if full else base + ((source - base) @ weight) @ weight.T
        if active is not None:
            mixed = torch.where(active[:, None], mixed, base)
    return devices.full_fp32_backward(mixed)


def variable_columns(sites: Sequence[VariableSite], data: InterchangeData) -> tuple[list[int], torch.Tensor]:
    """(the column of `data.sources` of each site's variable, (N, V) which rows intervene on it).
    ValueError when a site's variable is not in the data or the data intervenes on a variable that
    has no site (the network could not reproduce that label)."""
    names = [site.name for site in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"each variable needs exactly one site; got {names}")
    if data.variables is None:
        if data.n_variables != len(sites):
            raise ValueError(f"data has {data.n_variables} unnamed source column(s) but {len(sites)} variable sites were given")
        variables = tuple(names)
    else:
        variables = tuple(data.variables)
    missing = [name for name in names if name not in variables]
    if missing:
        raise ValueError(f"variables {missing} have a site but are not in the data (its variables: {list(variables)})")
    intervened = data.intervened if data.intervened is not None else data.sources != data.base[:, None]
    unaligned = [v for i, v in enumerate(variables) if v not in names and bool(intervened[:, i].any())]
    if unaligned:
        raise ValueError(f"the data intervenes on {unaligned}, which have no site; give each a VariableSite")
    columns = [variables.index(name) for name in names]
    return columns, intervened[:, columns]


def random_rotations(widths: Sequence[int], sizes: Sequence[int], draws: int, seed: int) -> list[list[torch.Tensor]]:
    """`draws` sets of untrained rotations (W_v of each variable), seeded: the random baseline."""
    generator = torch.Generator().manual_seed(seed * 7_919 + 17)
    return [[w.detach() for w in MultiSiteIntervention(widths, sizes, generator).weights()] for _ in range(draws)]


@dataclass
class TrainedMultiSite:
    """Trained rotations with their sites: W_v (n_v, k_v) per variable, on the CPU, and the history."""

    sites: tuple[VariableSite, ...]
    widths: tuple[int, ...]
    weights: list[torch.Tensor]
    history: dict = field(default_factory=dict)

    def module(self) -> MultiSiteIntervention:
        return MultiSiteIntervention(self.widths, [site.k for site in self.sites]).load(self.weights)

    def describe(self) -> list[dict]:
        return [{**asdict(site), "positions": list(site.positions), "n": n} for site, n in zip(self.sites, self.widths, strict=True)]

    def save(self, directory: str | os.PathLike) -> None:
        """`weights.safetensors` (W_v as "w0", "w1", ...) and `config.json` (sites, widths, history)."""
        from safetensors.torch import save_file

        from causal_das.runtime.io import atomic_write_json, atomic_writer

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_writer(directory / "weights.safetensors", binary=True) as tmp_path:
            save_file({f"w{v}": w.detach().contiguous().cpu() for v, w in enumerate(self.weights)}, tmp_path)
        atomic_write_json(directory / "config.json", {"sites": self.describe(), "history": self.history})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TrainedMultiSite:
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            config = json.loads((directory / "config.json").read_text())
            tensors = load_file(str(directory / "weights.safetensors"))
            sites = tuple(VariableSite(s["name"], s["layer"], tuple(s["positions"]), s["k"]) for s in config["sites"])
            weights = [tensors[f"w{v}"] for v in range(len(sites))]
            widths = tuple(int(s["n"]) for s in config["sites"])
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{directory} holds no saved multi-site alignment ({type(error).__name__}: {error})") from None
        trained = cls(sites, widths, weights, config.get("history", {}))
        trained.module()  # checks every W's shape and orthonormality
        return trained


def _edits(sites, widths, weights, cache: MultiSiteCache, data: InterchangeData, columns, active, idx) -> list[Edit | None]:
    """Each variable's edit of batch `idx`: its sources' cached states, its W, the rows it intervenes on."""
    edits: list[Edit | None] = []
    for v, (site, n, weight, column) in enumerate(zip(sites, widths, weights, columns, strict=True)):
        if site.k == 0:
            edits.append(None)
            continue
        source = cache.sources[v][data.sources[idx, column]]
        edits.append(functools.partial(_edit, source=source, weight=weight, full=site.k == n, active=active[idx, v]))
    return edits


def _edit(base, *, source, weight, full, active):
    return interchange(base, source, weight, full, active)


def train_multi(network: MultiSiteNetwork, sites: Sequence[VariableSite], data: InterchangeData, config: MultiSiteConfig = MultiSiteConfig(),
                desc: str = "multi-site DAS", cache: MultiSiteCache | None = None) -> TrainedMultiSite:
    """Trains one rotation per variable, jointly, so that the intervened network predicts
    `data.labels` (see the module docstring). `cache`: `network.cache(data.inputs, sites)`, if the
    caller has it. Deterministic for `config.seed` on one machine."""
    sites = tuple(sites)
    widths = network.widths(sites)
    columns, active = variable_columns(sites, data)
    device = devices.of(network.model)
    data, active = data.to(device), active.to(device)
    intervention = MultiSiteIntervention(widths, [s.k for s in sites], torch.Generator().manual_seed(config.seed)).to(device)
    start = time.perf_counter()
    if not intervention.trainable:
        history: dict = {"epochs": [], "note": "every k is 0 or the whole site: nothing to train"}
    else:
        with frozen(network.model):
            cache = network.cache(data.inputs, sites) if cache is None else cache

            def logits_for(idx):
                weights = intervention.weights()
                return network.run(cache, data.base[idx], _edits(sites, widths, weights, cache, data, columns, active, idx))

            das = DASConfig(tuple(s.k for s in sites), config.epochs, config.batch_size, config.lr, config.seed)
            history = optimise(intervention.trainable_parameters(), logits_for, data, das, desc)
    history.update(train_seconds=time.perf_counter() - start, config=asdict(config))
    return TrainedMultiSite(sites, widths, [w.detach().cpu() for w in intervention.weights()], history)


@torch.no_grad()
def logits_multi(network: MultiSiteNetwork, trained: TrainedMultiSite | Sequence[torch.Tensor], data: InterchangeData,
                 sites: Sequence[VariableSite] | None = None, cache: MultiSiteCache | None = None, batch_size: int = 512) -> torch.Tensor:
    """The intervened network's logits (N, C), fp32, on the CPU. `trained` is a `TrainedMultiSite` or
    the list of W_v (then `sites` says where; a W_v of n_v columns is a full patch)."""
    if isinstance(trained, TrainedMultiSite):
        sites, weights = trained.sites, trained.weights
    elif sites is None:
        raise ValueError("logits_multi: give the sites of the rotations (sites=...)")
    else:
        sites, weights = tuple(sites), list(trained)
    widths = network.widths(sites)
    if [tuple(w.shape) for w in weights] != [(n, s.k) for n, s in zip(widths, sites, strict=True)]:
        raise ValueError(f"rotations of shapes {[tuple(w.shape) for w in weights]} do not fit sites of (n, k) "
                         f"{[(n, s.k) for n, s in zip(widths, sites, strict=True)]}")
    columns, active = variable_columns(sites, data)
    device = devices.of(network.model)
    data, active = data.to(device), active.to(device)
    weights = [w.to(device=device, dtype=torch.float32) for w in weights]
    out = []
    with frozen(network.model):
        cache = network.cache(data.inputs, sites) if cache is None else cache
        for start in range(0, len(data), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(data)), device=device)
            edits = _edits(sites, widths, weights, cache, data, columns, active, idx)
            out.append(network.run(cache, data.base[idx], edits).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def predict_multi(network: MultiSiteNetwork, trained: TrainedMultiSite | Sequence[torch.Tensor], data: InterchangeData,
                  sites: Sequence[VariableSite] | None = None, cache: MultiSiteCache | None = None, batch_size: int = 512) -> torch.Tensor:
    """The intervened network's predicted class of every example (N,), on the CPU (`logits_multi`)."""
    return logits_multi(network, trained, data, sites, cache, batch_size).argmax(-1)
