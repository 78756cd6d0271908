"""GPT-2 run in pieces for DAS: its blocks with attention over a few tokens spelled out, its head,
and `GPT2Site`, the fast site of a GPT-2 classifier (a `GPT2ForSequenceClassification`, or a
`GPT2LMHeadModel` read at answer tokens: `answer_head.AnswerClassifier`) whose prompts all have
`seq_len` tokens and no padding (the X+Y+Z study's front is `studies.arithmetic_decoder`; prompts of
different lengths and any other decoder go through `models.lm_site`).

`GPT2Site` cuts the network at the `block_output` of one block (pyvene's name: the block's output,
before the final `ln_f`; note that Hugging Face's last `hidden_states` entry has `ln_f` applied and
is *not* that), over the chosen token positions concatenated as pyvene concatenates them.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from causal_das.das.site import PyveneSpec, SiteName
from causal_das.models import gpt2_untouched
from causal_das.models.answer_head import class_head, pyvene_view
from causal_das.models.attention import softmax_over_few

log = logging.getLogger(__name__)



# -- running the network in pieces ---------------------------------------------------------------


def _mask_and_positions(model, hidden: torch.Tensor):
    """The attention mask and position ids GPT2Model itself would build for unpadded prompts."""
    from transformers.masking_utils import create_causal_mask

    position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    mask = create_causal_mask(config=model.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None, position_ids=position_ids)
    return mask, position_ids


def run_blocks(model, hidden: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Blocks start..stop-1 of the transformer on hidden (B, T, d)."""
    if start >= stop:
        return hidden
    blocks = model.base_model.h[start:stop]
    if _plain_attention_pays(model, hidden):
        causal = torch.full((hidden.shape[1],) * 2, float("-inf"), device=hidden.device, dtype=hidden.dtype).triu(1)
        for block in blocks:
            hidden = _block_with_plain_attention(block, hidden, causal)
        return hidden
    mask, position_ids = _mask_and_positions(model, hidden)
    for block in blocks:
        hidden = block(hidden, None, mask, position_ids=position_ids)
    return hidden


def _plain_attention_pays(model, hidden: torch.Tensor) -> bool:
    """On the CPU, attention over a few tokens is faster as two matrix products and a softmax than
    through PyTorch's fused CPU kernel (benchmarks/bench_sweep.py: about 1.25x per DAS step of the
    default model); in eval mode only (no dropout) and for the plain GPT-2 attention."""
    config = model.config
    return (hidden.device.type == "cpu" and not model.training and hidden.shape[1] <= PLAIN_ATTENTION_MAX_TOKENS
            and not config.add_cross_attention and not config.reorder_and_upcast_attn)


PLAIN_ATTENTION_MAX_TOKENS = 32  # beyond a few dozen tokens the fused kernel is the faster one


def _block_with_plain_attention(block, hidden: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
    """GPT2Block in eval mode with the arithmetic of Hugging Face's eager attention: softmax(q k^T *
    scaling + causal mask) v (tests compare the logits with pyvene's to 1e-5)."""
    attention = block.attn
    batch, length, _ = hidden.shape
    query, key, value = attention.c_attn(block.ln_1(hidden)).split(attention.split_size, dim=2)

    def heads(x):
        return x.view(batch, length, attention.num_heads, attention.head_dim).transpose(1, 2)

    scores = torch.matmul(heads(query), heads(key).transpose(-1, -2)) * attention.scaling + causal
    mixed = torch.matmul(softmax_over_few(scores), heads(value)).transpose(1, 2).reshape(batch, length, -1)
    hidden = hidden + attention.c_proj(mixed)
    return hidden + block.mlp(block.ln_2(hidden))


def embed(model, input_ids: torch.Tensor) -> torch.Tensor:
    transformer = model.base_model
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return transformer.drop(transformer.wte(input_ids) + transformer.wpe(positions))


@torch.no_grad()
def block_outputs(model, input_ids: torch.Tensor, layers, chunk: int = 4096) -> dict[int, torch.Tensor]:
    """{layer: block_output (N, T, d)} for the given layers, in one forward pass per chunk."""
    layers = sorted(set(layers))
    out = {layer: [] for layer in layers}
    for i in range(0, len(input_ids), chunk):
        hidden, done = embed(model, input_ids[i : i + chunk].to(model.device)), 0
        for layer in layers:
            hidden = run_blocks(model, hidden, done, layer + 1)
            done = layer + 1
            out[layer].append(hidden)
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def head(model, hidden: torch.Tensor, after: int) -> torch.Tensor:
    """Logits from block_output of block `after` (B, T, d): the remaining blocks, `ln_f`, and the
    class head at the last token (prompts are unpadded, so the last token is the one GPT-2 reads):
    the score head, or the answer rows of the LM head."""
    n_layers = model.config.n_layer
    if after + 1 < n_layers:
        hidden = run_blocks(model, hidden, after + 1, n_layers - 1)
        last = _final_block_at_last_position(model, hidden)
    else:
        last = hidden[:, -1]
    return class_head(model)(model.base_model.ln_f(last))


def _final_block_at_last_position(model, hidden: torch.Tensor) -> torch.Tensor:
    """The final block's output at the last position only, (B, d): nothing reads the other positions
    there, and skipping them saves most of a block per step. The last query attends to every key,
    so no causal mask is needed. Same arithmetic as GPT2Block in eval mode (tests compare the logits
    with pyvene's to 1e-5); in training mode, where dropout would matter, the block runs whole."""
    n_layers = model.config.n_layer
    block = model.base_model.h[n_layers - 1]
    if block.training or model.config.add_cross_attention:
        return run_blocks(model, hidden, n_layers - 1, n_layers)[:, -1]
    attention = block.attn
    batch, length, _ = hidden.shape
    query, key, value = attention.c_attn(block.ln_1(hidden)).split(attention.split_size, dim=2)

    def heads(x):
        return x.reshape(batch, x.shape[1], attention.num_heads, attention.head_dim).transpose(1, 2)

    mixed = nn.functional.scaled_dot_product_attention(heads(query[:, -1:]), heads(key), heads(value), scale=attention.scaling)
    last = hidden[:, -1] + attention.c_proj(mixed.transpose(1, 2).reshape(batch, -1))
    return last + block.mlp(block.ln_2(last))


class GPT2Site:
    """block_output of block `layer` at `positions`, concatenated: n = len(positions) * d.

    The site's state is the whole block output (B, T*d): positions that are not intervened on keep
    the base's values, and `coordinates` names the state entries DAS rotates (None: all of them).
    When the positions start after token 0 (and a block follows the site), the state also carries
    the keys and values the untouched first tokens give every later block, and the suffix runs only
    the positions that can change (`gpt2_untouched`).
    """

    def __init__(self, model, layer: int, positions: tuple[int, ...] | None, seq_len: int):
        n_layers, width = model.config.n_layer, model.config.n_embd
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} does not exist: the model has blocks 0..{n_layers - 1}")
        positions = tuple(range(seq_len)) if positions is None else tuple(positions)
        if not positions or len(set(positions)) != len(positions) or not all(0 <= p < seq_len for p in positions):
            raise ValueError(f"positions {list(positions)} must be distinct token positions in 0..{seq_len - 1}")
        self.model, self.layer, self.positions, self.width, self.seq_len = model.eval(), layer, positions, width, seq_len
        self.name = SiteName("gpt2", "block_output", layer, positions)
        self.n = len(positions) * width
        if positions == tuple(range(seq_len)):
            self.coordinates = None
        else:
            self.coordinates = torch.cat([torch.arange(p * width, (p + 1) * width) for p in positions])
        # Tokens before the first intervened one: their keys and values are cached in the state.
        reuse = gpt2_untouched.REUSE_UNTOUCHED_KEYS and layer < n_layers - 1
        self.untouched = min(positions) if reuse else 0

    def prefix(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not self.untouched:
            return block_outputs(self.model, input_ids, [self.layer])[self.layer].flatten(1)
        outputs = block_outputs(self.model, input_ids, range(self.layer, self.model.config.n_layer - 1))
        return torch.cat([outputs[self.layer].flatten(1), gpt2_untouched.cached_keys(self.model, outputs, self.layer, self.untouched)], dim=1)

    def suffix(self, state: torch.Tensor) -> torch.Tensor:
        if self.untouched:
            return gpt2_untouched.logits(self.model, state, self.layer, self.untouched, self.seq_len)
        return head(self.model, state.view(len(state), self.seq_len, self.width), self.layer)

    def pyvene_spec(self) -> PyveneSpec:
        network, logits = pyvene_view(self.model)  # a next-token head: the LM, its answer logits at the last token
        return PyveneSpec(
            model=network,
            layer=self.layer,
            component="block_output",
            positions=self.positions,
            to_pyvene_inputs=lambda ids: {"input_ids": ids},
            logits=logits,
        )


# -- training ------------------------------------------------------------------------------------


