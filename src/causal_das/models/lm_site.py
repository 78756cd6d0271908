"""Any Hugging Face decoder language model as a DAS site: the output of decoder layer L at named
token positions of prompts of different lengths, padded into one batch.

The site's inputs are `prompts.PromptEncoder` rows (ids, attention mask and the token index of
each named position, which may differ from row to row). Its state carries, per row,

    [ selected vectors (P*d) | layer-L output (T*d) | attention mask (T) | positions: high digits (P), low digits (P) ]

The first P*d entries are the site's `coordinates`, the only ones DAS rotates; the rest is what the
suffix needs from the base row. The token ids are not carried: the suffix never reads them (below).
Each position is stored as two base-256 digits, because `engine.suffix_logits` casts the whole
state to the network's dtype and bf16 holds integers exactly only up to 256 (mask values, 0 or 1,
and the digits survive the cast; an index up to 65535 does).

Prefix: the model's own forward with explicit `position_ids` (mask cumsum - 1: transformers 5 uses
arange positions otherwise, which shifts a left-padded prompt), cut short by a hook on layer L.
Padded positions are zeroed, so a NaN there (a fully masked query) cannot reach a real token.

Suffix: the (intervened) selected vectors are scattered back into the base's layer-L output at the
base's positions, then the model's own forward runs with layers 0..L replaced by pass-throughs (the
one at L returns that hidden state; replaced for the call only, always restored). The model itself
then builds the causal and sliding-window masks, the rotary embeddings of each layer type, applies
the final norm and its head, so whatever a family does there (Gemma's logit soft-capping, partial
rotary, parallel residuals) is done exactly as in its forward, with no per-family code. Only the
last real token reaches the head: a next-token head gets that row through a pre-hook (no vocabulary
logits at every position); a sequence classifier pools it, as Hugging Face pools the last
non-padding token.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Sequence

import torch

from causal_das.das.site import PyveneSpec, SiteName
from causal_das.models.lm_structure import LMStructure, find_structure, text_config
from causal_das.models.prompts import PromptEncoder, Slots, unpack

_DIGIT = 256  # positions are stored as two digits in 0..255, exact in bf16


class _Stop(Exception):
    """Raised by the prefix hook once the last wanted layer has run."""


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) position of each token among the real ones; padding gets 0 (left) or the last (right)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def last_real(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last real token."""
    return (torch.arange(mask.shape[1], device=mask.device) * mask.long()).argmax(-1)


def answer_ids(tokenizer, answers: Sequence[str]) -> list[int]:
    """The token id of each answer, written as it follows the prompt (e.g. " Paris" for a BPE
    tokenizer); ValueError if one is not exactly one token or two share one."""
    ids = []
    for answer in answers:
        tokens = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            pieces = tokenizer.convert_ids_to_tokens(tokens)
            raise ValueError(f"answer {answer!r} is {len(tokens)} tokens {pieces}, not one; a next-token answer must be a single token")
        ids.append(int(tokens[0]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"answers {list(answers)} do not have distinct token ids {ids}")
    return ids


def _layer_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) else output


def layer_outputs(model, ids: torch.Tensor, mask: torch.Tensor, layers: Sequence[int], structure: LMStructure | None = None
                  ) -> dict[int, torch.Tensor]:
    """{layer: that decoder layer's output (B, T, d)} from one forward pass of `model`'s base model
    on padded prompts (B, T), cut short after the last of `layers`."""
    structure = find_structure(model) if structure is None else structure
    wanted = sorted(set(layers))
    if not wanted or not all(0 <= index < len(structure.layers) for index in wanted):
        raise ValueError(f"layers {wanted} must be decoder layers of the model, 0..{len(structure.layers) - 1}")
    captured = {}

    def keep(index, module, args, output):
        captured[index] = _layer_output(output)
        if index == wanted[-1]:
            raise _Stop

    handles = [structure.layers[index].register_forward_hook(functools.partial(keep, index)) for index in wanted]
    try:
        structure.base(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _pass_through(given: torch.Tensor | None, tuple_length: int | None, *args, **kwargs):
    """A skipped layer: returns its input (or `given`), shaped as the layer's own output."""
    hidden = given if given is not None else (args[0] if args else kwargs["hidden_states"])
    return hidden if tuple_length is None else (hidden, *[None] * (tuple_length - 1))


@contextlib.contextmanager
def skipping_layers(layers, last: int, hidden: torch.Tensor, output_kinds: Sequence[int | None]):
    """Layers 0..`last` pass their input through for the duration, layer `last` returning `hidden`;
    `output_kinds[i]` is None where layer i returns a tensor, else its tuple's length. The layers are
    the model's own modules with their `forward` shadowed (attributes the model's forward reads, such
    as a layer's attention type, stay); whatever `forward` an instance had is restored."""
    saved = []
    try:
        for index in range(last + 1):
            layer = layers[index]
            saved.append((layer, layer.__dict__.get("forward")))
            layer.forward = functools.partial(_pass_through, hidden if index == last else None, output_kinds[index])
        yield
    finally:
        for layer, forward in saved:
            if forward is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = forward


class LanguageModelSite:
    """Output of decoder layer `layer` at the prompt positions `positions` (from
    `encoder.slots(...)`), concatenated: n = len(positions) * hidden size. See the module docstring.

    Args:
        model: a Hugging Face decoder, a causal LM or a sequence classifier, in any dtype.
        layer: the decoder layer whose output is the site, 0-based.
        positions: the slots of the packed prompt rows the site reads.
        head: "auto" (the model's sequence-classification head if it has one, else next token),
            "sequence_classification" or "next_token".
        answers: next-token head only: token ids of the classes (class i = answers[i]); None for
            logits over the whole vocabulary.
        pyvene_positions: the token indices every row's positions sit at, for the pyvene engine
            (which intervenes at the same positions in every row); see `prompts.shared_positions`.
    """

    rows = 1

    def __init__(self, model, layer: int, positions: Slots, head: str = "auto", answers: Sequence[int] | None = None,
                 pyvene_positions: Sequence[int] | None = None):
        self.structure = find_structure(model, head)
        self.layers, self.head_kind = self.structure.layers, self.structure.head_kind
        if not 0 <= layer < len(self.layers):
            raise ValueError(f"layer {layer} does not exist: {type(model).__name__} has decoder layers 0..{len(self.layers) - 1}")
        if not isinstance(positions, Slots) or not positions.indices:
            raise ValueError("positions must be the slots of at least one named position (encoder.slots(...))")
        self.model, self.layer, self.slots = model.eval(), layer, positions
        parameter = next(p for p in model.parameters() if p.is_floating_point())
        self.device, self.dtype = parameter.device, parameter.dtype
        self._output_kinds, self.width = self._probe()
        self.n = len(positions.indices) * self.width
        self.coordinates = torch.arange(self.n)
        self.name = SiteName(_model_name(model), "block_output", layer, positions.indices)
        self.answers = None if answers is None else self._check_answers(answers)
        self.pyvene_positions = None if pyvene_positions is None else tuple(int(p) for p in pyvene_positions)

    def _probe(self) -> tuple[list[int | None], int]:
        """How layers 0..L return their output (a tensor, or a tuple of what length) and the hidden
        size, from a forward pass on one token."""
        kinds = [None] * (self.layer + 1)

        def record(index, module, args, output):
            kinds[index] = len(output) if isinstance(output, tuple | list) else None
            if index == self.layer:
                raise _Stop(_layer_output(output).shape[-1])

        handles = [self.layers[i].register_forward_hook(functools.partial(record, i)) for i in range(self.layer + 1)]
        try:
            ids = torch.zeros((1, 1), dtype=torch.long, device=self.device)
            with torch.no_grad():
                self.structure.base(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.zeros_like(ids), use_cache=False)
        except _Stop as stop:
            return kinds, int(stop.args[0])
        finally:
            for handle in handles:
                handle.remove()
        raise ValueError(f"{type(self.model).__name__}: decoder layer {self.layer} did not run in the model's forward")

    def _check_answers(self, answers: Sequence[int]) -> torch.Tensor:
        if self.head_kind != "next_token":
            raise ValueError("answers are for a next-token head; this site's head is a sequence classifier")
        vocab = getattr(getattr(self.structure.head, "weight", None), "shape", (getattr(text_config(self.model), "vocab_size", 0),))[0]
        answers = [int(a) for a in answers]
        if not answers or len(set(answers)) != len(answers) or not all(0 <= a < vocab for a in answers):
            raise ValueError(f"answers {answers} must be distinct token ids in 0..{vocab - 1}")
        return torch.tensor(answers, device=self.device)

    # -- prefix -------------------------------------------------------------------------------------

    def prefix(self, inputs: torch.Tensor) -> torch.Tensor:
        """Packed prompt rows (B, 2T + P_all) -> site state (B, P*d + T*d + T + 2P), fp32."""
        inputs = inputs.to(self.device)
        ids, mask, _ = unpack(inputs, self.slots.total)
        return self.state(layer_outputs(self.model, ids, mask, [self.layer], self.structure)[self.layer], inputs)

    def state(self, hidden: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The site state of `inputs` from layer L's output on them (B, T, d): lets a sweep fill the
        states of several layers from one forward pass (`layer_outputs`)."""
        _, mask, positions = unpack(inputs.to(hidden.device), self.slots.total)
        chosen = positions[:, list(self.slots.indices)]
        self._check_chosen(chosen, mask)
        # Zero (not multiply: NaN * 0 is NaN) what padded positions hold.
        hidden = torch.where(mask[..., None].bool(), hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
        selected = hidden.gather(1, chosen[..., None].expand(-1, -1, hidden.shape[-1]))
        digits = torch.cat([chosen // _DIGIT, chosen % _DIGIT], 1)
        return torch.cat([selected.flatten(1).float(), hidden.flatten(1).float(), mask.float(), digits.float()], 1)

    def _check_chosen(self, chosen: torch.Tensor, mask: torch.Tensor) -> None:
        width, count = mask.shape[1], chosen.shape[1]
        in_range = (chosen >= 0) & (chosen < width)
        real = mask.gather(1, chosen.clamp(0, max(width - 1, 0))).bool() & in_range
        distinct = (chosen[:, :, None] == chosen[:, None, :]).sum((1, 2)) == count
        good = real.all(1) & distinct
        if len(good) and not bool(good.all()):  # one host sync per prefix call
            row = int((~good).nonzero()[0, 0])
            raise ValueError(f"row {row}: positions {', '.join(self.slots.names)} must be distinct real tokens of the prompt "
                             f"(they are tokens {chosen[row].tolist()} of {int(mask[row].sum())} real ones, padded to {width})")
        if width >= _DIGIT * _DIGIT:
            raise ValueError(f"prompts of {width} tokens are longer than the site can store positions for ({_DIGIT * _DIGIT - 1})")

    # -- suffix -------------------------------------------------------------------------------------

    def suffix(self, state: torch.Tensor) -> torch.Tensor:
        """Site state (B, P*d + T*d + T + 2P) -> logits (B, classes) at each row's last real token."""
        state = state.to(device=self.device, dtype=self.dtype)
        batch, count, d = len(state), len(self.slots.indices), self.width
        rest = state.shape[1] - count * d - 2 * count
        if rest < 0 or rest % (d + 1):
            raise ValueError(f"site state width {state.shape[1]} is not {count}*{d} + T*({d}+1) + {2 * count} for any prompt length T")
        width = rest // (d + 1)
        selected, hidden, mask, digits = state.split([count * d, width * d, width, 2 * count], 1)
        digits = digits.round().long()  # before combining: the combined index may not be exact in bf16
        chosen = digits[:, :count] * _DIGIT + digits[:, count:]
        mask = (mask > 0.5).long()
        hidden = hidden.reshape(batch, width, d).scatter(1, chosen[..., None].expand(-1, -1, d), selected.reshape(batch, count, d))
        return self.logits(hidden, mask)

    def logits(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of the model run on from layer L's output `hidden` (B, T, d)."""
        last = last_real(mask)
        rows = torch.arange(len(hidden), device=hidden.device)
        # The model's forward needs some input; the layers that would read it are skipped.
        embeds = hidden.new_zeros(()).expand(hidden.shape)
        kwargs = dict(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
        with skipping_layers(self.layers, self.layer, hidden, self._output_kinds):
            if self.head_kind == "sequence_classification":
                final = self.structure.base(**kwargs)[0]
                return self.structure.head(final[rows, last])

            def last_token_only(module, args):
                if args[0].shape[1] != hidden.shape[1]:
                    raise ValueError(f"{type(self.model).__name__} gave its head {args[0].shape[1]} positions, not all {hidden.shape[1]}")
                return (args[0][rows, last][:, None], *args[1:])

            handle = self.structure.head.register_forward_pre_hook(last_token_only)
            try:
                output = self.model(**kwargs)
            finally:
                handle.remove()
        logits = (output.logits if hasattr(output, "logits") else output[0])[:, -1]
        return logits if self.answers is None else logits[:, self.answers]

    # -- pyvene -------------------------------------------------------------------------------------

    def pyvene_spec(self) -> PyveneSpec:
        """The reference engine's view: pyvene's `block_output` of layer L at `pyvene_positions`,
        the same in every row (pyvene 0.1.8 takes one list of positions per batch here)."""
        from causal_das.das.pyvene_engine import maps_model

        if not maps_model(self.model):
            raise ValueError(f"pyvene 0.1.8 does not support {type(self.model).__name__}; use the fast engine (--engine fast)")
        if self.pyvene_positions is None:
            raise ValueError("pyvene intervenes at the same token positions in every row: build the site with "
                             "pyvene_positions=prompts.shared_positions(inputs, slots)")
        expected = torch.tensor(self.pyvene_positions)

        def to_pyvene_inputs(rows: torch.Tensor) -> dict:
            ids, mask, positions = unpack(rows, self.slots.total)
            if not torch.equal(positions[:, list(self.slots.indices)].cpu(), expected.expand(len(rows), -1)):
                raise ValueError(f"pyvene site: some rows' positions are not at tokens {list(self.pyvene_positions)}")
            if self.head_kind == "next_token" and not bool(mask[:, -1].all()):
                raise ValueError("pyvene site: a next-token head reads the last column, which is padding in some rows (pad on the left)")
            return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask), "use_cache": False}

        def logits(output) -> torch.Tensor:
            if self.head_kind == "sequence_classification":
                return output.logits
            return output.logits[:, -1] if self.answers is None else output.logits[:, -1, self.answers]

        return PyveneSpec(model=self.model, layer=self.layer, component="block_output", positions=self.pyvene_positions,
                          to_pyvene_inputs=to_pyvene_inputs, logits=logits)


def _model_name(model) -> str:
    config = text_config(model)
    kind = getattr(config, "model_type", None) or type(model).__name__
    return re.sub(r"[^a-z0-9_]", "_", kind.lower())


def site(model, layer: int, encoder: PromptEncoder, *position_names: str, answers: Sequence[int] | None = None,
         head: str = "auto") -> LanguageModelSite:
    """The site at decoder layer `layer` over the encoder's `position_names` (all when none)."""
    return LanguageModelSite(model, layer, encoder.slots(*position_names), head=head, answers=answers)
