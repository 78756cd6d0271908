"""Any Hugging Face decoder language model as a multi-site network (`das.multi_site`): each causal
variable at its own decoder layer and its own named prompt positions.

Cache (once per table of `prompts.PromptEncoder` rows): one forward pass of every distinct prompt,
cut short after the last site's layer (`lm_site.layer_outputs`), gives each variable's source state
(layer L_v's output at the prompt's own positions P_v, concatenated in the order the site names
them: pyvene's order) and every prompt's output of the first site's layer L_0, where intervened runs
start: the network is frozen, so nothing before L_0 depends on the rotations.

Run: the base's cached L_0 output gets the edits of the sites at L_0; then the model's own forward
runs on from there (`LanguageModelSite.logits`: the layers up to L_0 pass their input through, the
model builds its masks, rotary embeddings, final norm and head itself), with a forward hook on each
later site's layer that edits that layer's output before the next layer reads it. Every edit
gathers the base row's own token positions (they move with the template), so a prompt gives the
same result alone and padded in a batch, on either padding side.

Two variables at one layer must not share a token: their rotations are not coordinated (pyvene
would apply one after the other, each ignoring the other), so the network refuses such sites, by
name in `widths` and, for two names that land on one token in some prompt, in `cache`. Variables
that share a site belong in one rotation with a subspace each (`engine.train`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from causal_das.das.multi_site import Edit, MultiSiteCache, VariableSite
from causal_das.models.lm_site import LanguageModelSite, layer_outputs
from causal_das.models.lm_structure import find_structure
from causal_das.models.prompts import PromptEncoder, unpack
from causal_das.runtime import devices

CHUNK = 1024  # prompts per forward pass while filling the cache


@dataclass(frozen=True)
class _Plan:
    """Where each variable sits: its layer and its slots among the packed positions."""

    layers: tuple[int, ...]
    slots: tuple[tuple[int, ...], ...]
    first: int
    suffix: LanguageModelSite  # runs the model on from layer `first`


@dataclass
class _Bases:
    """Every cached prompt's layer-`first` output (M, T, d) in the network's dtype, mask and positions."""

    hidden: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    plan: _Plan


class LanguageModelMultiSite:
    """A decoder LM (a causal LM or a sequence classifier, any dtype) over prompts packed by
    `encoder`, with sites named by `das.multi_site.VariableSite`s (positions: the encoder's names).

    Args:
        model: a Hugging Face decoder model.
        encoder: the `PromptEncoder` whose rows the data's inputs are.
        head: "auto", "sequence_classification" or "next_token" (as `lm_site.LanguageModelSite`).
        answers: next-token head only: the classes' token ids (None: the whole vocabulary).
    """

    def __init__(self, model, encoder: PromptEncoder, head: str = "auto", answers: Sequence[int] | None = None):
        self.structure = find_structure(model, head)
        self.model, self.encoder, self.head, self.answers = model.eval(), encoder, head, answers
        parameter = next(p for p in model.parameters() if p.is_floating_point())
        self.device, self.dtype = parameter.device, parameter.dtype
        self._sites: dict[tuple[int, tuple[str, ...]], LanguageModelSite] = {}

    def site(self, variable: VariableSite) -> LanguageModelSite:
        """The single site of `variable` (its checks: the layer exists, the positions are declared)."""
        key = (int(variable.layer), variable.positions)
        if key not in self._sites:
            try:
                slots = self.encoder.slots(*variable.positions)
                self._sites[key] = LanguageModelSite(self.model, key[0], slots, head=self.head, answers=self.answers)
            except ValueError as error:
                raise ValueError(f"variable {variable.name!r}: {error}") from None
        return self._sites[key]

    def widths(self, sites: Sequence[VariableSite]) -> tuple[int, ...]:
        if not sites:
            raise ValueError("multi-site DAS needs at least one variable site")
        widths = []
        for variable in sites:
            site = self.site(variable)
            if variable.k > site.n:
                raise ValueError(f"variable {variable.name!r}: k = {variable.k} is more than its site's n = {site.n} "
                                 f"({len(variable.positions)} position(s) x width {site.width})")
            widths.append(site.n)
        for a, b in itertools.combinations(sites, 2):
            shared = sorted(set(a.positions) & set(b.positions))
            if a.layer == b.layer and shared:
                raise ValueError(f"variables {a.name!r} and {b.name!r} share position(s) {shared} of layer {a.layer}; give them disjoint "
                                 "positions, or one site with a subspace each (engine.train)")
        return tuple(widths)

    def _plan(self, sites: Sequence[VariableSite]) -> _Plan:
        self.widths(sites)
        first = min(int(s.layer) for s in sites)
        return _Plan(tuple(int(s.layer) for s in sites), tuple(self.site(s).slots.indices for s in sites), first,
                     self.site(next(s for s in sites if s.layer == first)))

    @torch.no_grad()
    def cache(self, inputs: torch.Tensor, sites: Sequence[VariableSite]) -> MultiSiteCache:
        plan = self._plan(sites)
        inputs = inputs.to(self.device)
        _, mask, positions = unpack(inputs, self.encoder.n_positions)
        _check_shared_tokens(sites, plan, positions)
        sources, bases = [[] for _ in sites], []
        with devices.network_autocast(self.device):
            for start in range(0, len(inputs), CHUNK):
                rows = inputs[start : start + CHUNK]
                ids, chunk_mask, _ = unpack(rows, self.encoder.n_positions)
                outputs = layer_outputs(self.model, ids, chunk_mask, sorted(set(plan.layers)), self.structure)
                for v, variable in enumerate(sites):
                    site = self.site(variable)
                    sources[v].append(site.state(outputs[variable.layer], rows)[:, : site.n])  # checks the positions
                # Zero what padded positions hold (a NaN there must not reach a real token), as lm_site does.
                hidden = outputs[plan.first]
                bases.append(torch.where(chunk_mask[..., None].bool(), hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
                             .to(self.dtype))
        hidden = torch.cat(bases) if bases else torch.empty(0, mask.shape[1], 0, device=self.device, dtype=self.dtype)
        return MultiSiteCache([torch.cat(s) if s else torch.empty(0, self.site(v).n, device=self.device) for s, v in zip(sources, sites, strict=True)],
                              _Bases(hidden, mask, positions, plan))

    def run(self, cache: MultiSiteCache, base: torch.Tensor, edits: Sequence[Edit | None]) -> torch.Tensor:
        bases: _Bases = cache.base
        plan = bases.plan
        if len(edits) != len(plan.layers):
            raise ValueError(f"{len(edits)} edits for a cache of {len(plan.layers)} variable sites")
        base = base.to(self.device)
        hidden, mask, positions = bases.hidden[base], bases.mask[base], bases.positions[base]
        hidden = _apply(hidden, positions, plan, edits, plan.first)
        later = sorted({layer for layer, edit in zip(plan.layers, edits, strict=True) if layer > plan.first and edit is not None})
        layers = self.structure.layers
        handles = [layers[layer].register_forward_hook(functools.partial(_edit_output, positions, plan, edits, layer)) for layer in later]
        try:
            with devices.network_autocast(self.device):
                return plan.suffix.logits(hidden, mask).float()
        finally:
            for handle in handles:
                handle.remove()


def _apply(hidden: torch.Tensor, positions: torch.Tensor, plan: _Plan, edits: Sequence[Edit | None], layer: int) -> torch.Tensor:
    """hidden (B, T, d), a layer's output, with the edits of the variables at `layer` applied at each
    row's own positions (B, P_all); fp32 edits, the result in hidden's dtype."""
    for v, edit in enumerate(edits):
        if edit is None or plan.layers[v] != layer:
            continue
        chosen = positions[:, list(plan.slots[v])]  # (B, P_v) token indices of this row
        index = chosen[..., None].expand(-1, -1, hidden.shape[-1])
        edited = edit(hidden.gather(1, index).flatten(1).float())  # (B, P_v * d)
        hidden = hidden.scatter(1, index, edited.to(hidden.dtype).reshape(index.shape))
    return hidden


def _edit_output(positions, plan, edits, layer, module, args, output):
    """Forward hook of a later site's layer: its output with that layer's edits applied."""
    hidden = output[0] if isinstance(output, tuple | list) else output
    edited = _apply(hidden, positions, plan, edits, layer)
    return (edited, *output[1:]) if isinstance(output, tuple | list) else edited


def _check_shared_tokens(sites: Sequence[VariableSite], plan: _Plan, positions: torch.Tensor) -> None:
    """ValueError when two variables at one layer land on one token of some prompt."""
    for a, b in itertools.combinations(range(len(sites)), 2):
        if plan.layers[a] != plan.layers[b]:
            continue
        first, second = positions[:, list(plan.slots[a])], positions[:, list(plan.slots[b])]
        clash = (first[:, :, None] == second[:, None, :]).flatten(1).any(1)
        if bool(clash.any()):
            row = int(clash.nonzero()[0, 0])
            raise ValueError(f"variables {sites[a].name!r} ({', '.join(sites[a].positions)}) and {sites[b].name!r} "
                             f"({', '.join(sites[b].positions)}) land on the same token of prompt {row} at layer {plan.layers[a]}; "
                             "their sites must not share a token")
