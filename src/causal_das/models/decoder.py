"""Any Hugging Face decoder-only classifier as a DAS site: the residual stream after decoder layer L
at chosen token positions. The classifier is a sequence classifier (`score` head) or a causal LM
read at declared answer tokens (`answer_head.AnswerClassifier`).

The site is found through the model's own structure, not one class per family and not a list of
model types (`lm_structure.find_structure`): the base model, its list of decoder layers, its final
norm, and the head (`answer_head.class_head`). The prefix runs the model's own forward and takes
layer L's output (a forward hook; the rest of the forward is cut short). The suffix calls the later
layers themselves with the arguments the model's forward passes them (the rotary position
embeddings, the causal or sliding-window mask, the position ids), recorded once per site from a
forward pass on one prompt: those arguments depend only on the prompt length, which is fixed (the
task's prompts have six tokens and no padding), and they broadcast over the batch. Then the final
norm and the head at the last token, the one a sequence classifier pools when nothing is padded.

Whether that recomposition is the model is checked, not assumed: each site runs one probe prompt
through its prefix and suffix and compares the logits with the model's own forward, and stops with
one line when they differ (an encoder whose classifier pools its first token, a head the model
transforms in a way the site does not know). Tests compare the two to 1e-5 at every layer for each
tested family.

GPT-2 keeps its own faster site (`gpt2.GPT2Site`: the final block at the last position only,
attention spelled out for six tokens, cached keys of untouched tokens).
"""

from __future__ import annotations

import torch

from causal_das.das.site import PyveneSpec, SiteName
from causal_das.models.answer_head import class_head, language_model, pyvene_view
from causal_das.models.lm_structure import find_structure


class _Stop(Exception):
    """Raised by the prefix hook once layer L has run: the rest of the forward is not needed."""


def decoder_parts(model):
    """(decoder layers, final norm or None) of a decoder-only classifier, found from its structure;
    ValueError (one line) naming what is missing."""
    structure = find_structure(language_model(model))
    return structure.layers, structure.final_norm


def layer_outputs(model, input_ids: torch.Tensor, layers) -> dict[int, torch.Tensor]:
    """{layer: that decoder layer's output (N, T, d)} from one forward pass of the model, cut short
    after the last of `layers` (forward hooks keep each wanted layer's output)."""
    decoder_layers, _ = decoder_parts(model)
    wanted = sorted(set(layers))
    if not wanted or not all(0 <= index < len(decoder_layers) for index in wanted):
        raise ValueError(f"layers {wanted} must be decoder layers of the model, 0..{len(decoder_layers) - 1}")
    captured = {}

    def keep(index):
        def hook(module, args, output):
            captured[index] = output[0] if isinstance(output, tuple) else output
            if index == wanted[-1]:
                raise _Stop

        return hook

    handles = [decoder_layers[index].register_forward_hook(keep(index)) for index in wanted]
    try:
        with torch.no_grad():
            # Nothing is padded: the mask says so (GPT-2 warns without one).
            model.base_model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def interchange_logits(model, input_ids: torch.Tensor, n_bases: int, layer: int, positions) -> torch.Tensor:
    """Logits (n_bases, classes) of the first `n_bases` prompts of `input_ids` (2 * n_bases, T) run
    with decoder layer `layer`'s output at `positions` taken from the other prompts (their sources,
    in the same order): interchange intervention training on any decoder.

    One forward pass of the model itself, with a hook that swaps the positions as the layer returns:
    differentiable, in whatever mode (train or eval) the model is in, and with every argument the
    model's forward passes its layers (the recorded arguments of `DecoderSite` are for eval-mode
    suffixes). The sources run through the later layers too; that costs a second suffix, which
    GPT-2's own path (`arithmetic_iit.interchange_logits`) avoids."""
    decoder_layers, _ = decoder_parts(model)
    if not 0 <= layer < len(decoder_layers):
        raise ValueError(f"layer {layer} does not exist: the model has decoder layers 0..{len(decoder_layers) - 1}")
    swap = torch.zeros(input_ids.shape[1], dtype=torch.bool, device=input_ids.device)
    swap[list(positions)] = True

    def interchange(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        mixed = torch.cat([torch.where(swap[None, :, None], hidden[n_bases:], hidden[:n_bases]), hidden[n_bases:]])
        return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

    handle = decoder_layers[layer].register_forward_hook(interchange)
    try:
        # Nothing is padded: the classifier reads the last token of every prompt.
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits
    finally:
        handle.remove()
    return logits[:n_bases]


class DecoderSite:
    """Output of decoder layer `layer` at `positions` of a `seq_len`-token prompt, concatenated:
    n = len(positions) * hidden size. The state is the whole layer output (B, seq_len * d); the
    positions DAS does not intervene on keep the base's values (`coordinates`)."""

    def __init__(self, model, layer: int, positions: tuple[int, ...] | None, seq_len: int):
        self.layers, self.norm = decoder_parts(model)
        self.head = class_head(model)
        width, n_layers = model.config.hidden_size, len(self.layers)
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} does not exist: the model has decoder layers 0..{n_layers - 1}")
        positions = tuple(range(seq_len)) if positions is None else tuple(positions)
        if not positions or len(set(positions)) != len(positions) or not all(0 <= p < seq_len for p in positions):
            raise ValueError(f"positions {list(positions)} must be distinct token positions in 0..{seq_len - 1}")
        self.model, self.layer, self.positions, self.width, self.seq_len = model.eval(), layer, positions, width, seq_len
        self.name = SiteName(model.config.model_type, "block_output", layer, positions)
        self.n = len(positions) * width
        self.coordinates = None if positions == tuple(range(seq_len)) else torch.cat([torch.arange(p * width, (p + 1) * width) for p in positions])
        self._arguments = self._record_layer_arguments()
        self._check_recomposition()

    def _record_layer_arguments(self) -> list[tuple[tuple, dict]]:
        """What the model's forward passes each layer after `layer`, besides the hidden states."""
        recorded = [None] * len(self.layers)

        def hook(index):
            def record(module, args, kwargs):
                kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                recorded[index] = (tuple(args[1:]), kwargs)

            return record

        handles = [self.layers[i].register_forward_pre_hook(hook(i), with_kwargs=True) for i in range(self.layer + 1, len(self.layers))]
        try:
            device = next(self.model.parameters()).device
            with torch.no_grad():
                ids = torch.zeros((1, self.seq_len), dtype=torch.long, device=device)
                self.model.base_model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        return recorded

    def _check_recomposition(self) -> None:
        """The suffix of the prefix of one probe prompt must give the model's own logits; else one line."""
        config = self.model.config
        pad = getattr(config, "pad_token_id", None)
        tokens = [t for t in range(min(getattr(config, "vocab_size", 2), self.seq_len + 2)) if t != pad] or [0]
        device = next(self.model.parameters()).device
        probe = torch.tensor([[tokens[(i + 1) % len(tokens)] for i in range(self.seq_len)]], device=device)
        with torch.no_grad():
            own = self.model(input_ids=probe, attention_mask=torch.ones_like(probe), use_cache=False).logits.float()
            ours = self.suffix(self.prefix(probe)).float()
        # Loose enough for bf16 and TF32 rounding; a wrong token, norm or head is off by the logits' size.
        scale = own.abs().max().item() if own.numel() else 0.0
        if own.shape == ours.shape and (ours - own).abs().max().item() <= 2e-2 * (1 + scale):
            return
        found = (f"max difference {(ours - own).abs().max().item():.3g} on logits up to {scale:.3g}" if own.shape == ours.shape
                 else f"logits of shape {tuple(ours.shape)}, the model's {tuple(own.shape)}")
        raise ValueError(f"{type(language_model(self.model)).__name__}: the site's prefix and suffix at layer {self.layer} do not "
                         f"recompose the model's own logits ({found}); its head does not read the final-normed last token "
                         "as a decoder's does")

    def prefix(self, input_ids: torch.Tensor) -> torch.Tensor:
        return layer_outputs(self.model, input_ids, [self.layer])[self.layer].flatten(1)

    def suffix(self, state: torch.Tensor) -> torch.Tensor:
        hidden = state.view(len(state), self.seq_len, self.width)
        for index in range(self.layer + 1, len(self.layers)):
            args, kwargs = self._arguments[index]
            hidden = self.layers[index](hidden, *args, **kwargs)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        last = hidden[:, -1]
        return self.head(last if self.norm is None else self.norm(last))

    def pyvene_spec(self) -> PyveneSpec:
        network, logits = pyvene_view(self.model)
        from causal_das.das.pyvene_engine import maps_model

        if not maps_model(network):  # pyvene 0.1.8's model card lists classes, not families
            raise ValueError(f"pyvene 0.1.8 does not support {type(network).__name__}; use the fast engine (--engine fast)")
        return PyveneSpec(model=network, layer=self.layer, component="block_output", positions=self.positions,
                          to_pyvene_inputs=lambda ids: {"input_ids": ids}, logits=logits)
