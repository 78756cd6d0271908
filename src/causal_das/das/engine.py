"""Training and evaluating DAS interventions: one contract, two engines.

- `fast` (default): prefix activations are computed once for every distinct input (the network is
  frozen); a training step gathers base and source activations by index, applies the interchange
  with W computed once, and runs only the suffix.
- `pyvene`: the same intervention, initialised with the same W and fed the same batches in the same
  order, trained through `pyvene.IntervenableModel` as the seeds did (see `pyvene_engine`).

Both return a `TrainedIntervention` (W, subspace sizes, site) and predict through `predict`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from causal_das import devices, progress
from causal_das.das.intervention import DistributedInterchange
from causal_das.das.site import Site, SiteName

log = logging.getLogger(__name__)

ENGINES = ("fast", "pyvene")


@dataclass(frozen=True)
class InterchangeData:
    """Counterfactual examples as indices into a table of distinct network inputs.

    A (base, source) pair is two indices, so a dataset with few distinct inputs (the 1000
    arithmetic prompts) caches each input's activations once. Where a variable is not intervened
    its source index equals the base index.
    """

    inputs: torch.Tensor  # (M, ...) distinct network inputs
    base: torch.Tensor  # (N,) long
    sources: torch.Tensor  # (N, V) long
    labels: torch.Tensor  # (N,) long: the causal model's counterfactual labels

    def __post_init__(self):
        if self.sources.ndim != 2 or len(self.sources) != len(self.base) or len(self.labels) != len(self.base):
            raise ValueError("InterchangeData: base (N,), sources (N, V) and labels (N,) must agree on N")

    def __len__(self) -> int:
        return len(self.base)

    @property
    def n_variables(self) -> int:
        return self.sources.shape[1]

    def to(self, device: torch.device) -> InterchangeData:
        move = {name: getattr(self, name).to(device) for name in ("inputs", "base", "sources", "labels")}
        return InterchangeData(**move)


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

        from causal_das.io import atomic_write_json, atomic_writer

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


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Eval mode and no parameter gradients for the duration; restores both afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@torch.no_grad()
def cache_activations(site: Site, inputs: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Prefix activations (M, n) of every distinct input, computed once, on the network's device
    (fp32 even when the forward pass runs in bf16: the interchange is done in fp32)."""
    device = devices.of(site.model)
    with devices.network_autocast(device):
        return torch.cat([site.prefix(inputs[i : i + chunk].to(device)).float() for i in range(0, len(inputs), chunk)])


def suffix_logits(site: Site, hidden: torch.Tensor) -> torch.Tensor:
    """The site's suffix on an (intervened) state, in the network precision; fp32 logits."""
    with devices.network_autocast(hidden.device):
        return site.suffix(hidden).float()


def batch_order(n: int, batch_size: int, epoch: int, seed: int) -> list[torch.Tensor]:
    """The shuffled batches of one epoch; both engines use these so they see the same data."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def initial_intervention(site: Site, config: DASConfig) -> DistributedInterchange:
    """The untrained intervention for `config`; its initial W depends only on the seed."""
    generator = torch.Generator().manual_seed(config.seed)
    return DistributedInterchange(site.n, tuple(config.subspace_sizes), generator)


def interchange(site: Site, intervention: DistributedInterchange, base: torch.Tensor, sources: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The intervened site state: the interchange on the site's `coordinates` (all when None), the
    base's values everywhere else (e.g. token positions DAS does not intervene on); for a site with
    `rows` > 1, the interchange of each row with the one shared W."""
    rows = getattr(site, "rows", 1)
    if rows > 1:
        # Every row is its own n-vector, swapped through the same W: fold the rows into the batch.
        batch, n_sources = sources.shape[:2]
        row_sources = sources.reshape(batch, n_sources, rows, -1).transpose(1, 2).reshape(batch * rows, n_sources, -1)
        return intervention(base.reshape(batch * rows, -1), row_sources, weight).reshape(batch, -1)
    coordinates = getattr(site, "coordinates", None)
    if coordinates is None:
        return intervention(base, sources, weight)
    coordinates = coordinates.to(base.device)  # a no-op on the CPU; sites build it there
    mixed = intervention(base[:, coordinates], sources[:, :, coordinates], weight)
    return base.index_copy(1, coordinates, mixed)


def train(
    site: Site, data: InterchangeData, config: DASConfig, engine: str = "fast", desc: str = "DAS", activations: torch.Tensor | None = None
) -> TrainedIntervention:
    """Trains W at `site` so that interchanges reproduce `data.labels`. See the module docstring.

    `activations` (fast engine only): the site state of every row of `data.inputs`, if the caller
    already has it (a sweep computes every layer's in one forward pass)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if data.n_variables != len(config.subspace_sizes):
        raise ValueError(f"data has {data.n_variables} source(s) per example but {len(config.subspace_sizes)} subspace(s) were given")
    # W starts from a CPU generator, so a seed gives the same start on every device.
    device = devices.of(site.model)
    intervention = initial_intervention(site, config).to(device)
    data = data.to(device)
    start = time.perf_counter()
    if not intervention.trainable:
        weight, history = intervention.weight().detach(), {"epochs": [], "note": "k = n: a full swap, nothing to train"}
    elif engine == "fast":
        weight, history = _train_fast(site, data, config, intervention, desc, activations)
    else:
        from causal_das.das.pyvene_engine import train_pyvene

        weight, history = train_pyvene(site, data, config, intervention.weight().detach(), desc)
    history["train_seconds"] = time.perf_counter() - start
    return TrainedIntervention(str(site.name), site.n, tuple(config.subspace_sizes), weight.cpu(), engine, history)


def optimise(parameters, logits_for, data: InterchangeData, config: DASConfig, desc: str) -> dict:
    """The DAS training loop both engines share: Adam on cross-entropy against the counterfactual
    labels, over `batch_order`'s batches. `logits_for(idx)` runs the intervened network on them.
    Divergence (see `DivergenceGuard`) raises ValueError: training on would only write garbage."""
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    # Callers' descs often start with "DAS" ("DAS layer 0"); the message says it once.
    guard = DivergenceGuard(f"DAS training of {desc.removeprefix('DAS ')}", "lower the DAS learning rate (--lr / --das_lr)")
    history = {"epochs": []}
    for epoch in range(config.epochs):
        total_loss, correct = 0.0, 0
        batches = batch_order(len(data), config.batch_size, epoch, config.seed)
        for step, idx in enumerate(progress.inner(batches, desc=f"{desc} epoch {epoch + 1}/{config.epochs}"), 1):
            idx = idx.to(data.labels.device)
            logits = logits_for(idx)
            loss = nn.functional.cross_entropy(logits, data.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            guard.step(optimizer, epoch + 1, step)
            value = loss.item()  # the one sync per step the loop already had
            guard.check(value, epoch + 1, step)
            total_loss += value * len(idx)
            correct += (logits.argmax(-1) == data.labels[idx]).sum().item()
        history["epochs"].append({"loss": total_loss / len(data), "train_iia": correct / len(data)})
        log.info("%s epoch %d: loss %.4f, train IIA %.4f", desc, epoch + 1, *history["epochs"][-1].values())
    return history


@dataclass(frozen=True)
class DivergenceGuard:
    """Stops a training loop that diverged with one line naming the step and what to change: a loss
    that is NaN or infinite, or an optimiser step too large for float32 (Adam's first step is
    lr / (1 - beta1), so an lr above ~3e37 overflows inside torch with a RuntimeError)."""

    what: str  # "DAS training of X+Y L0 k4"
    remedy: str  # "lower the learning rate (--lr)"

    def step(self, optimizer: torch.optim.Optimizer, epoch: int, step: int) -> None:
        try:
            optimizer.step()
        except RuntimeError as error:
            if "overflow" not in str(error):
                raise
            raise ValueError(self._message(epoch, step, "the optimiser step overflows float32")) from None

    def check(self, loss: float, epoch: int, step: int) -> None:
        if not math.isfinite(loss):
            raise ValueError(self._message(epoch, step, f"loss {loss}"))

    def _message(self, epoch: int, step: int, why: str) -> str:
        return f"{self.what} diverged at epoch {epoch} step {step} ({why}); {self.remedy}"


def _train_fast(site, data, config, intervention, desc, activations=None):
    activations = cache_activations(site, data.inputs) if activations is None else activations.to(data.labels.device)

    def logits_for(idx):
        weight = intervention.weight()  # once per step, shared by every subspace
        return suffix_logits(site, interchange(site, intervention, activations[data.base[idx]], activations[data.sources[idx]], weight))

    with frozen(site.model):
        history = optimise(intervention.parameters(), logits_for, data, config, desc)
    return intervention.weight().detach(), history


def predict(
    site: Site,
    trained: TrainedIntervention,
    data: InterchangeData,
    engine: str = "fast",
    batch_size: int = 8192,
    activations: torch.Tensor | None = None,
) -> torch.Tensor:
    """The intervened network's predicted class for every example (N,), on the CPU. `activations` as
    in `train`."""
    if str(site.name) != trained.site:
        raise ValueError(f"intervention was trained at {trained.site}, not at {site.name}")
    device = devices.of(site.model)
    data = data.to(device)
    if engine == "pyvene":
        from causal_das.das.pyvene_engine import predict_pyvene

        return predict_pyvene(site, trained, data, batch_size).cpu()
    intervention = trained.module().to(device)
    activations = cache_activations(site, data.inputs) if activations is None else activations.to(device)
    out = []
    with torch.no_grad(), frozen(site.model):
        weight = intervention.weight()
        for start in range(0, len(data), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(data)), device=device)
            hidden = interchange(site, intervention, activations[data.base[idx]], activations[data.sources[idx]], weight)
            out.append(suffix_logits(site, hidden).argmax(-1))
    return torch.cat(out).cpu()


def config_dict(config: DASConfig) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def n_steps(n_examples: int, config: DASConfig) -> int:
    return config.epochs * math.ceil(n_examples / config.batch_size)
