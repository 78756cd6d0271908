"""Training and evaluating DAS interventions: one contract (`das.data`), two engines.

- `fast` (default): prefix activations are computed once for every distinct input (the network is
  frozen); a training step gathers base and source activations by index, applies the interchange
  with W computed once, and runs only the suffix.
- `pyvene`: the same intervention, initialised with the same W and fed the same batches in the same
  order, trained through `pyvene.IntervenableModel` as the seeds did (see `pyvene_engine`).

Both return a `TrainedIntervention` (W, subspace sizes, site) and predict through `predict`.
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch
from torch import nn

# The engines' contract, re-exported: callers write `engine.train(site, engine.InterchangeData(...),
# engine.DASConfig(...))` and get an `engine.TrainedIntervention` back.
from causal_das.das.data import DASConfig, InterchangeData, TrainedIntervention, config_dict, n_steps
from causal_das.das.intervention import DistributedInterchange
from causal_das.das.site import Site
from causal_das.das.training import DivergenceGuard, batch_order, optimise
from causal_das.runtime import devices

__all__ = [
    "ENGINES", "DASConfig", "DivergenceGuard", "InterchangeData", "TrainedIntervention", "batch_order", "cache_activations",
    "config_dict", "frozen", "initial_intervention", "interchange", "n_steps", "optimise", "predict", "suffix_logits", "train",
]

log = logging.getLogger(__name__)

ENGINES = ("fast", "pyvene")


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
