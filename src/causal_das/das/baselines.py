"""What a DAS alignment is judged against, at the same site and the same k, and the illusion check.

An IIA number means little alone: a full patch of the site may already give it, a random subspace of
the same size may come close, and the top principal directions or k single neurons (the localist
alignment of the DAS paper) may do as well without any rotation being learned. Every baseline here
is a fixed W with orthonormal columns, so it is evaluated exactly like a trained one
(`engine.predict_cells`, in the same suffix passes):

- `full_patch`: the whole site from the source (k = n; no training);
- `random_subspaces`: untrained random W, a few draws (report their mean and spread);
- `principal_subspace`: the top-k principal directions of the site's activations over the inputs;
- `train_neuron_masks`: a learned mask over the site's neurons, DBM-style (below), then the k
  highest-scoring neurons as W = the k columns of the identity.

The interpretability illusion (Makelov, Lange & Nanda 2023): a subspace patch can move the output
through a direction the network never uses on real inputs, e.g. W mixing a dormant direction (read
downstream, never active) with a disconnected one (active, read by nothing). `illusion_check`
measures how much of the activations' variance W's subspace carries and the IIA of W projected onto
the span of the activations the network really produces (the principal directions that explain
99.9% of their variance); `illusion_flag` says whether the IIA collapses under that projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from causal_das.das.data import InterchangeData, TrainedIntervention
from causal_das.das.intervention import orthonormal_columns
from causal_das.das.training import optimise_cells

SPAN_VARIANCE = 0.999  # the activation span of the illusion check explains this fraction of the variance
RANK_TOLERANCE = 1e-3  # a projected column shorter than this is outside the span: dropped


def site_activations(site, states: torch.Tensor) -> torch.Tensor:
    """(M, n) the entries of the site states that DAS rotates (its `coordinates`; all of them when None)."""
    if getattr(site, "rows", 1) > 1:
        raise ValueError("baselines work on sites with one row per example (not the CNN's row view)")
    coordinates = getattr(site, "coordinates", None)
    return states if coordinates is None else states[:, coordinates.to(states.device)]


def fixed(site, weight: torch.Tensor, kind: str, sizes: tuple[int, ...] | None = None, **info) -> TrainedIntervention:
    """A baseline W (n, k) as a `TrainedIntervention` at `site`, evaluated like a trained one; `sizes`
    splits its columns into one subspace per variable (default: one subspace)."""
    sizes = tuple(sizes) if sizes is not None else (weight.shape[1],)
    return TrainedIntervention(str(site.name), site.n, sizes, weight.float().cpu(), "fast", {"baseline": kind, **info})


def full_patch(site) -> TrainedIntervention:
    return fixed(site, torch.eye(site.n), "full_patch")


def random_subspaces(site, sizes: tuple[int, ...], draws: int, seed: int) -> list[TrainedIntervention]:
    """`draws` untrained W (n, sum(sizes)), orthonormal columns from a seeded Gaussian (pyvene's
    initial W), split into `sizes`."""
    generator = torch.Generator().manual_seed(seed * 7_919 + 17)
    return [fixed(site, orthonormal_columns(torch.randn(site.n, sum(sizes), generator=generator)), "random_subspace", sizes, draw=d)
            for d in range(draws)]


def principal_directions(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(variances (r,), directions (n, r)) of the centred activations (M, n), largest first (fp64)."""
    centred = activations.double() - activations.double().mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    return singular.square() / max(1, len(activations) - 1), vh.T


def principal_subspace(site, activations: torch.Tensor, k: int) -> TrainedIntervention:
    """W = the top-k principal directions of the site's activations (M, n)."""
    variances, directions = principal_directions(activations)
    explained = float(variances[:k].sum() / variances.sum()) if variances.sum() > 0 else 0.0
    return fixed(site, directions[:, :k], "pca", variance_explained=explained)


def activation_span(activations: torch.Tensor, variance: float = SPAN_VARIANCE) -> torch.Tensor:
    """(n, r) orthonormal: the fewest principal directions that explain `variance` of the activations."""
    variances, directions = principal_directions(activations)
    total = variances.sum()
    if total <= 0:
        return directions[:, :0]
    r = int(torch.searchsorted(torch.cumsum(variances, 0) / total, torch.tensor(variance, dtype=total.dtype, device=total.device)).item()) + 1
    return directions[:, : min(r, directions.shape[1])]


def variance_fraction(weight: torch.Tensor, activations: torch.Tensor) -> float:
    """The share of the activations' variance (around their mean) that lies in W's subspace."""
    centred = activations.double() - activations.double().mean(0)
    total = centred.square().sum()
    # A trained W comes back on the CPU; the activations live on the network's device.
    return float((centred @ weight.to(centred.device, torch.float64)).square().sum() / total) if total > 0 else 0.0


def project_onto_span(site, trained: TrainedIntervention, span: torch.Tensor) -> TrainedIntervention:
    """W projected onto `span` (n, r) and re-orthonormalised; directions that lie (almost) wholly
    outside the span are dropped, so the projection can have fewer than k columns (even none: then
    it is no intervention at all)."""
    projected = span @ (span.T @ trained.weight.to(span.device, torch.float64))
    u, singular, _ = torch.linalg.svd(projected, full_matrices=False)
    kept = int((singular > RANK_TOLERANCE).sum())
    return fixed(site, u[:, :kept], "projected_onto_activation_span", columns_kept=kept)


def illusion_check(trained: TrainedIntervention, activations: torch.Tensor, span: torch.Tensor) -> dict:
    """The numbers that do not need the network: W's share of the variance, the span's size, and how
    much of W lies in the span (mean squared length of W's columns after projection)."""
    inside = (span.T @ trained.weight.to(span.device, torch.float64)).square().sum(0)
    return {"variance_fraction": variance_fraction(trained.weight, activations), "span_dims": int(span.shape[1]),
            "span_variance": SPAN_VARIANCE, "weight_in_span": float(inside.mean())}


def illusion_flag(iia: float, projected_iia: float, no_intervention: float) -> bool:
    """True when W's IIA collapses once W is confined to the activation span: the projection keeps
    less than half of what W gains over leaving the base alone (only for a W that gains > 0.05)."""
    gain = iia - no_intervention
    return gain > 0.05 and projected_iia - no_intervention < 0.5 * gain


# -- the neuron-aligned baseline -----------------------------------------------------------------


@dataclass(frozen=True)
class MaskSchedule:
    """How the neuron masks train (DBM, as in MIB's causal-variable track): each neuron i gets a score
    s_i, the interchange takes m_i = sigmoid(s_i / T) of the source's value of neuron i, T falls
    geometrically from `start_temperature` to `end_temperature` over training so the mask hardens,
    and `sparsity` x mean(m) is added to the loss so that only the neurons that matter stay open."""

    start_temperature: float = 1.0
    end_temperature: float = 0.01
    sparsity: float = 0.05

    def temperature(self, step: int, total: int) -> float:
        fraction = step / max(1, total - 1)
        return self.start_temperature * (self.end_temperature / self.start_temperature) ** fraction


def masked_interchange(site, base: torch.Tensor, sources: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The site state (B, ...) with each rotated coordinate i moved a fraction masks[v, i] of the way
    to source v (sources (B, V, ...), masks (V, n))."""
    coordinates = getattr(site, "coordinates", None)
    if coordinates is not None:
        coordinates = coordinates.to(base.device)
        base_part, sources = base[:, coordinates], sources[:, :, coordinates]
    else:
        base_part = base
    mixed = base_part + (masks * (sources - base_part.unsqueeze(1))).sum(1)
    return mixed if coordinates is None else base.index_copy(1, coordinates, mixed)


def disjoint_top(scores: torch.Tensor, sizes: tuple[int, ...]) -> list[list[int]]:
    """For each variable v, sizes[v] neurons, no neuron twice: the highest (variable, neuron) scores
    first."""
    chosen: list[list[int]] = [[] for _ in sizes]
    taken = set()
    for flat in torch.argsort(scores.flatten(), descending=True).tolist():
        v, neuron = divmod(flat, scores.shape[1])
        if neuron not in taken and len(chosen[v]) < sizes[v]:
            chosen[v].append(neuron)
            taken.add(neuron)
    return [sorted(c) for c in chosen]


def train_neuron_masks(site, datas: list[InterchangeData], configs: list, sizes: tuple[int, ...], activations: torch.Tensor, suffix,
                       schedule: MaskSchedule = MaskSchedule(), descs: list[str] | None = None) -> list[TrainedIntervention]:
    """One learned neuron mask per dataset and variable (every cell together in one suffix pass per
    step, like `engine.train_cells`), each turned into the localist alignment of the sizes[v]
    highest-scoring neurons of each variable v (disjoint, `disjoint_top`). `suffix(hidden)` runs the
    network after the site; `configs` are the cells' DAS configs (epochs, batch size, lr, seed: the
    same training budget as DAS)."""
    device = activations.device
    datas = [data.to(device) for data in datas]
    scores = [torch.zeros(len(sizes), site.n, device=device, requires_grad=True) for _ in datas]
    total = max(math.ceil(len(d) / c.batch_size) * c.epochs for d, c in zip(datas, configs, strict=True))
    step = [0]
    masks: dict[int, torch.Tensor] = {}

    def logits_for(batches):
        temperature = schedule.temperature(step[0], total)
        step[0] += 1
        hidden = []
        for c, idx in batches:
            masks[c] = torch.sigmoid(scores[c] / temperature)
            hidden.append(masked_interchange(site, activations[datas[c].base[idx]], activations[datas[c].sources[idx]], masks[c]))
        return suffix(torch.cat(hidden)).split([len(idx) for _, idx in batches])

    descs = descs or [f"neuron mask {c}" for c in range(len(datas))]
    histories = optimise_cells([[s] for s in scores], logits_for, datas, configs, descs,
                               penalty=lambda c: schedule.sparsity * masks[c].mean())
    out = []
    for score, history in zip(scores, histories, strict=True):
        neurons = disjoint_top(score.detach().cpu(), sizes)
        weight = torch.eye(site.n)[:, [i for chosen in neurons for i in chosen]]
        out.append(fixed(site, weight, "neuron_mask", sizes, neurons=neurons if len(sizes) > 1 else neurons[0],
                         open_after_training=int((score.detach() > 0).sum()), training=history))
    return out
