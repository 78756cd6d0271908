"""Training and evaluating DAS interventions: one contract (`das.data`), two engines.

- `fast` (default): prefix activations are computed once for every distinct input (the network is
  frozen); a training step gathers base and source activations by index, applies the interchange
  with W computed once, and runs only the suffix.
- `pyvene`: the same intervention, initialised with the same W and fed the same batches in the same
  order, trained through `pyvene.IntervenableModel` as the seeds did (see `pyvene_engine`).

Both return a `TrainedIntervention` (W, subspace sizes, site) and predict through `predict`. The
fast engine also trains and predicts many cells that share a site in one suffix pass per step
(`train_cells`, `predict_cells`); `train` and `predict` are their one-cell case.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

# The engines' contract, re-exported: callers write `engine.train(site, engine.InterchangeData(...),
# engine.DASConfig(...))` and get an `engine.TrainedIntervention` back.
from causal_das.das import memory
from causal_das.das.data import DASConfig, InterchangeData, TrainedIntervention, config_dict, n_steps
from causal_das.das.intervention import DistributedInterchange, weights_of
from causal_das.das.site import Site
from causal_das.das.training import DivergenceGuard, batch_order, optimise, optimise_cells
from causal_das.runtime import devices

__all__ = [
    "ENGINES", "Cell", "DASConfig", "DivergenceGuard", "InterchangeData", "TrainedIntervention", "batch_order", "cache_activations",
    "config_dict", "frozen", "initial_intervention", "interchange", "n_steps", "optimise", "optimise_cells", "predict", "predict_cells",
    "suffix_logits", "train", "train_cells",
]

log = logging.getLogger(__name__)

ENGINES = ("fast", "pyvene")
CPU_PASS_ROWS = 512  # the most intervened states `predict_cells` runs through the suffix at once on the CPU


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
    """The site's suffix on an (intervened) state, in the network precision; fp32 logits. The fp32
    state enters the network in the network's own dtype: a no-op for an fp32 network, and for a bf16
    checkpoint kept in bf16 (--precision bf16) the cast autocast does not do itself (a LayerNorm with
    bf16 weights refuses an fp32 input on the CPU); W and the interchange before it stay fp32."""
    with devices.network_autocast(hidden.device):
        return site.suffix(hidden.to(next(site.model.parameters()).dtype)).float()


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


@dataclass(frozen=True)
class Cell:
    """One intervention to train at a site that it shares with other cells: its counterfactual data
    (every cell of one `train_cells` call indexes the same table of inputs), how to train it, and a
    name for progress and error messages."""

    data: InterchangeData
    config: DASConfig
    desc: str = "DAS"


def train(
    site: Site, data: InterchangeData, config: DASConfig, engine: str = "fast", desc: str = "DAS", activations: torch.Tensor | None = None
) -> TrainedIntervention:
    """Trains W at `site` so that interchanges reproduce `data.labels`. See the module docstring.

    `activations` (fast engine only): the site state of every row of `data.inputs`, if the caller
    already has it (a sweep computes every layer's in one forward pass)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if engine == "fast":
        return train_cells(site, [Cell(data, config, desc)], activations)[0]
    _check_sources(data, config)
    intervention = initial_intervention(site, config)
    start = time.perf_counter()
    if not intervention.trainable:
        weight, history = intervention.weight().detach(), {"epochs": [], "note": FULL_SWAP_NOTE}
    else:
        from causal_das.das.pyvene_engine import train_pyvene

        # pyvene applies W inside the network's forward pass: the whole run stays IEEE fp32.
        with devices.full_fp32(devices.of(site.model)):
            weight, history = train_pyvene(site, data.to(devices.of(site.model)), config, intervention.weight().detach(), desc)
    history["train_seconds"] = time.perf_counter() - start
    return TrainedIntervention(str(site.name), site.n, tuple(config.subspace_sizes), weight.cpu(), engine, history)


FULL_SWAP_NOTE = "k = n: a full swap, nothing to train"


def _check_sources(data: InterchangeData, config: DASConfig) -> None:
    if data.n_variables != len(config.subspace_sizes):
        raise ValueError(f"data has {data.n_variables} source(s) per example but {len(config.subspace_sizes)} subspace(s) were given")


def train_cells(
    site: Site, cells: list[Cell], activations: torch.Tensor | None = None, max_cells_per_pass: int | None = None
) -> list[TrainedIntervention]:
    """Trains every cell's W at `site` with the fast engine, several cells per suffix pass.

    Each step gathers each cell's own batch, applies each cell's own W, runs the concatenated states
    through one suffix forward + backward and sums the cells' mean losses (`optimise_cells`), so a
    cell gets the W it would get trained alone (same seed, batch order and initial W). A pass holds
    at most `max_cells_per_pass` cells (None: as many as `memory.cells_per_pass` fits in the
    device's budget). A full swap (k = n) needs no training. `activations` as in `train`."""
    if not cells:
        return []
    inputs = cells[0].data.inputs
    for cell in cells:
        _check_sources(cell.data, cell.config)
        if cell.data.inputs is not inputs and not torch.equal(cell.data.inputs, inputs):
            raise ValueError("train_cells: every cell must index the same table of inputs (data.inputs)")
    device = devices.of(site.model)
    activations = cache_activations(site, inputs) if activations is None else activations.to(device)
    datas = [cell.data.to(device) for cell in cells]
    # W starts from a CPU generator, so a seed gives the same start on every device.
    interventions = [initial_intervention(site, cell.config).to(device) for cell in cells]
    results: list[TrainedIntervention | None] = [None] * len(cells)
    for c, intervention in enumerate(interventions):
        if not intervention.trainable:
            history = {"epochs": [], "note": FULL_SWAP_NOTE, "train_seconds": 0.0}
            results[c] = TrainedIntervention(str(site.name), site.n, tuple(cells[c].config.subspace_sizes), intervention.weight().cpu(), "fast", history)
    trainable = [c for c, result in enumerate(results) if result is None]
    if max_cells_per_pass is None and trainable:
        with frozen(site.model):
            max_cells_per_pass = memory.cells_per_pass(lambda hidden: suffix_logits(site, hidden), activations,
                                                       max(cells[c].config.batch_size for c in trainable))
    for first in range(0, len(trainable), max_cells_per_pass or 1):
        chosen = trainable[first : first + max_cells_per_pass]
        started = time.perf_counter()
        histories = _train_pass(site, activations, [datas[c] for c in chosen], [cells[c] for c in chosen], [interventions[c] for c in chosen])
        seconds = time.perf_counter() - started
        for c, history in zip(chosen, histories, strict=True):
            # Seconds of the whole pass, which trained `cells_in_pass` cells together.
            history.update(train_seconds=seconds, cells_in_pass=len(chosen))
            weight = interventions[c].weight().detach().cpu()
            results[c] = TrainedIntervention(str(site.name), site.n, tuple(cells[c].config.subspace_sizes), weight, "fast", history)
    return results


def _train_pass(site, activations, datas, cells, interventions) -> list[dict]:
    def logits_for(batches):
        with devices.full_fp32(activations.device):
            weights = weights_of([interventions[c] for c, _ in batches])
            hidden = torch.cat([
                interchange(site, interventions[c], activations[datas[c].base[idx]], activations[datas[c].sources[idx]], weight)
                for (c, idx), weight in zip(batches, weights, strict=True)
            ])
        return suffix_logits(site, devices.full_fp32_backward(hidden)).split([len(idx) for _, idx in batches])

    descs = [cell.desc for cell in cells]
    with frozen(site.model):
        return optimise_cells([list(iv.parameters()) for iv in interventions], logits_for, datas, [cell.config for cell in cells], descs)


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
    if engine == "pyvene":
        if str(site.name) != trained.site:
            raise ValueError(f"intervention was trained at {trained.site}, not at {site.name}")
        from causal_das.das.pyvene_engine import predict_pyvene

        with devices.full_fp32(devices.of(site.model)):
            return predict_pyvene(site, trained, data.to(devices.of(site.model)), batch_size).cpu()
    return predict_cells(site, [trained], data, batch_size, activations)[0]


def predict_cells(
    site: Site,
    trained: list[TrainedIntervention],
    data: InterchangeData | list[InterchangeData],
    batch_size: int = 8192,
    activations: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Predicted classes (N_c,) of each trained intervention at `site` on its data (one dataset for
    all, or one per intervention, all indexing the same inputs), on the CPU; the fast engine, with up
    to `batch_size` intervened states of several interventions in one suffix pass."""
    for one in trained:
        if str(site.name) != one.site:
            raise ValueError(f"intervention was trained at {one.site}, not at {site.name}")
    device = devices.of(site.model)
    datas = [d.to(device) for d in (data if isinstance(data, list) else [data] * len(trained))]
    if len(datas) != len(trained):
        raise ValueError(f"predict_cells: {len(trained)} interventions but {len(datas)} datasets")
    if not trained:
        return []
    activations = cache_activations(site, datas[0].inputs) if activations is None else activations.to(device)
    interventions = [one.module().to(device) for one in trained]
    # Rows of each cell per pass: the cells share `batch_size`, so a pass has the same size as one
    # cell's alone. On the CPU a pass stays within CPU_PASS_ROWS: beyond a few hundred rows its
    # activations fall out of the caches and each row costs more (benchmarks/bench_sweep.py).
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_PASS_ROWS)
    rows = max(1, batch_size // len(trained))
    out = [[] for _ in trained]
    with torch.no_grad(), frozen(site.model):
        with devices.full_fp32(device):
            weights = weights_of(interventions)
        for start in range(0, max(len(d) for d in datas), rows):
            chunk = [(c, torch.arange(start, min(start + rows, len(d)), device=device)) for c, d in enumerate(datas) if start < len(d)]
            with devices.full_fp32(device):
                hidden = torch.cat([interchange(site, interventions[c], activations[datas[c].base[idx]], activations[datas[c].sources[idx]],
                                                weights[c]) for c, idx in chunk])
            predicted = suffix_logits(site, hidden).argmax(-1).split([len(idx) for _, idx in chunk])
            for (c, _), part in zip(chunk, predicted, strict=True):
                out[c].append(part)
    return [torch.cat(parts).cpu() for parts in out]
