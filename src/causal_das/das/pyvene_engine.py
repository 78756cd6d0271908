"""The reference engine: the same DAS intervention trained and run through pyvene 0.1.8.

One `RotatedSpaceIntervention` (W square, k = n) or `LowRankRotatedSpaceIntervention` (k < n) per
causal variable, all at the same site and linked with `intervention_link_key` so they share one W;
each takes its own source and its own block of columns (`subspaces`). pyvene is imported here only.

pyvene facts this module works around (see EXPERIMENTS.md): its linked interventions report their
parameters twice, so the optimiser gets them deduplicated; unit locations are always passed per
example (a flat list switches the model into a "fast" mode for good); `subspaces` needs one entry
per example, so every batch, including a short last one, gets its own lists.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os

import torch

from causal_das.das.training import optimise
from causal_das.runtime import devices

log = logging.getLogger(__name__)


def _import_pyvene():
    # pyvene prints a line about nnsight at import; keep our output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        import pyvene
    return pyvene


def maps_model(model) -> bool:
    """Whether pyvene's model card maps this model's class (pyvene 0.1.8: GPT-2, Llama, Qwen2 and
    Gemma's classifiers and causal LMs; GPT-NeoX, Mistral and Gemma-2's causal LMs; a few more)."""
    _import_pyvene()
    from pyvene.models.intervenable_modelcard import type_to_module_mapping

    return type(model) in type_to_module_mapping


def build_intervenable(site, n: int, subspace_sizes: tuple[int, ...], weight: torch.Tensor | None = None):
    """A `pyvene.IntervenableModel` at `site` with one linked intervention per variable.

    Returns (intervenable, spec). If `weight` (n, k) is given it is loaded as the shared W.
    """
    pv = _import_pyvene()
    spec = site.pyvene_spec()
    k = sum(subspace_sizes)
    square = k == n
    intervention_type = pv.RotatedSpaceIntervention if square else pv.LowRankRotatedSpaceIntervention
    linked = len(subspace_sizes) > 1
    if spec.row_dim is not None:
        # pyvene has no dimension mapping for this model: build the one shared intervention here.
        kind = pv.RotatedSpaceIntervention if square else pv.LowRankRotatedSpaceIntervention
        shared = kind(embed_dim=n, low_rank_dimension=None if square else k, keep_last_dim=True)
    representations = [
        pv.RepresentationConfig(
            layer=spec.layer,
            component=spec.component,
            unit="pos",
            max_number_of_units=len(spec.positions),
            low_rank_dimension=None if square else k,
            intervention_link_key=0 if linked else None,
            intervention=shared if spec.row_dim is not None else None,
        )
        for _ in subspace_sizes
    ]
    types = {} if spec.row_dim is not None else {"intervention_types": intervention_type}
    config = pv.IntervenableConfig(representations=representations, **types)
    with contextlib.redirect_stdout(io.StringIO()):
        intervenable = pv.IntervenableModel(config, spec.model)
    intervenable.disable_model_gradients()
    spec.model.eval()
    # pyvene creates its interventions on the CPU; put them beside the network.
    intervenable.set_device(devices.of(spec.model), set_model=False)
    if weight is not None:
        load_weight(intervenable, weight)
    return intervenable, spec


def _unique_interventions(intervenable):
    seen, unique = set(), []
    for intervention in intervenable.interventions.values():
        module = intervention[0] if isinstance(intervention, tuple | list) else intervention
        if id(module) not in seen:
            seen.add(id(module))
            unique.append(module)
    return unique


def load_weight(intervenable, weight: torch.Tensor) -> None:
    """Sets the shared W of every intervention (through pyvene's orthogonal parametrisation)."""
    for module in _unique_interventions(intervenable):
        with torch.no_grad():
            module.rotate_layer.weight = weight.detach().clone().to(module.rotate_layer.weight.device)


def read_weight(intervenable) -> torch.Tensor:
    return _unique_interventions(intervenable)[0].rotate_layer.weight.detach().cpu().clone()


def _subspace_lists(subspace_sizes, batch):
    lists, start = [], 0
    for size in subspace_sizes:
        lists.append([list(range(start, start + size))] * batch)
        start += size
    return lists


def intervened_logits(intervenable, spec, subspace_sizes, base_inputs, source_inputs) -> torch.Tensor:
    """Runs pyvene's interchange: base_inputs (B, ...), source_inputs (B, V, ...) -> logits (B, C)."""
    batch = len(base_inputs)
    n_vars = len(subspace_sizes)
    locations = [[list(spec.positions)] * batch for _ in range(n_vars)]
    _, counterfactual = intervenable(
        spec.to_pyvene_inputs(base_inputs),
        [spec.to_pyvene_inputs(source_inputs[:, v]) for v in range(n_vars)],
        {"sources->base": (locations, locations)},
        subspaces=_subspace_lists(subspace_sizes, batch),
    )
    return spec.logits(counterfactual)


def train_pyvene(site, data, config, initial_weight: torch.Tensor, desc: str = "DAS (pyvene)"):
    """Trains with pyvene on the same batches, in the same order, from the same W as the fast engine."""
    intervenable, spec = build_intervenable(site, site.n, tuple(config.subspace_sizes), initial_weight)
    params = {id(p): p for p in intervenable.get_trainable_parameters()}  # linked: listed twice

    def logits_for(idx):
        return intervened_logits(intervenable, spec, config.subspace_sizes, data.inputs[data.base[idx]], data.inputs[data.sources[idx]])

    history = optimise(list(params.values()), logits_for, data, config, desc)
    return read_weight(intervenable), history


@torch.no_grad()
def predict_pyvene(site, trained, data, batch_size: int = 8192) -> torch.Tensor:
    intervenable, spec = build_intervenable(site, trained.n, trained.subspace_sizes, trained.weight)
    out = []
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)))
        logits = intervened_logits(intervenable, spec, trained.subspace_sizes, data.inputs[data.base[idx]], data.inputs[data.sources[idx]])
        out.append(logits.argmax(-1))
    return torch.cat(out)


def export(site, trained, directory: str | os.PathLike) -> None:
    """Writes `trained` in pyvene's own `IntervenableModel.save` format."""
    intervenable, _ = build_intervenable(site, trained.n, trained.subspace_sizes, trained.weight)
    with contextlib.redirect_stdout(io.StringIO()):
        intervenable.save(str(directory))


def load_exported(site, directory: str | os.PathLike):
    """Loads a directory written by `export` with pyvene's `IntervenableModel.load`; returns
    (intervenable, spec)."""
    pv = _import_pyvene()
    spec = site.pyvene_spec()
    with contextlib.redirect_stdout(io.StringIO()):
        intervenable = pv.IntervenableModel.load(str(directory), spec.model)
    return intervenable, spec
