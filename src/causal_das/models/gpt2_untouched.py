"""The GPT-2 suffix when an intervention leaves the first tokens alone: their keys and values are
the base's, so they are computed once per input and the blocks after the site run only on the
positions that can change.

Under causal attention, a position's block outputs depend only on it and the positions before it.
At a site whose token positions start at m > 0, positions 0..m-1 therefore keep the base's values
in every later block, and so do the keys and values they give each later block's attention. The
site state then carries, beside the block output at the site, those keys and values for every
block after it (computed with the prefix, once per input: they are the base's, like every entry
of the state the interchange does not touch), and the suffix runs positions m..5 only, their
queries attending to the cached keys and to their own. With m = 4 (the `Z`, `=` tokens) that is
2 of 6 positions per block. Same arithmetic as Hugging Face's eager attention; tests compare the
logits with the full suffix.
"""

from __future__ import annotations

import torch

from causal_das.models.answer_head import class_head
from causal_das.models.attention import softmax_over_few

REUSE_UNTOUCHED_KEYS = True  # off: every site runs its suffix on all positions (benchmarks compare both)


def cached_keys(model, outputs: dict[int, torch.Tensor], layer: int, untouched: int) -> torch.Tensor:
    """(N, blocks * 2 * untouched * d): for each block after `layer`, the keys and values of the
    first `untouched` positions, from `outputs` = {layer: block output (N, T, d)} of layers
    `layer`..n_layer-2 (each block's input is the previous block's output)."""
    parts = []
    for j in range(layer + 1, model.config.n_layer):
        block = model.base_model.h[j]
        _, key, value = block.attn.c_attn(block.ln_1(outputs[j - 1][:, :untouched])).split(block.attn.split_size, dim=2)
        parts += [key.flatten(1), value.flatten(1)]
    return torch.cat(parts, dim=1)


def _block_with_cached_keys(block, hidden, cached_key, cached_value, mask, last_only: bool):
    """GPT2Block in eval mode on the positions `hidden` (B, L, d) that follow the cached ones: their
    queries attend to the cached keys and to their own (`mask` keeps attention causal); with
    `last_only`, only the last position's output (B, d), all it attends to being in the past."""
    attention = block.attn
    batch = len(hidden)
    query, key, value = attention.c_attn(block.ln_1(hidden)).split(attention.split_size, dim=2)
    key, value = torch.cat([cached_key, key], dim=1), torch.cat([cached_value, value], dim=1)
    if last_only:
        query, hidden = query[:, -1:], hidden[:, -1:]

    def heads(x):
        return x.reshape(batch, x.shape[1], attention.num_heads, attention.head_dim).transpose(1, 2)

    rows = query.shape[1]
    if 1 < rows < key.shape[1]:
        # Zero queries for the cached positions (their rows are dropped below): the CPU's batched
        # matrix products over a few tokens are 2-3x faster when the query count equals the key
        # count (docs/engines.md#the-cpu-levers-measured).
        query = torch.cat([query.new_zeros(batch, key.shape[1] - rows, query.shape[2]), query], dim=1)
    scores = torch.matmul(heads(query), heads(key).transpose(-1, -2)) * attention.scaling
    if not last_only:
        scores = scores + mask
    mixed = torch.matmul(softmax_over_few(scores), heads(value))[:, :, -rows:].transpose(1, 2).reshape(batch, rows, -1)
    hidden = hidden + attention.c_proj(mixed)
    hidden = hidden + block.mlp(block.ln_2(hidden))
    return hidden[:, -1] if last_only else hidden


def logits(model, state: torch.Tensor, layer: int, untouched: int, seq_len: int) -> torch.Tensor:
    """The classifier's logits from a site state (B, T*d + cached keys) of block `layer` whose first
    `untouched` positions are the base's (`cached_keys` holds their keys and values)."""
    width, n_layer = model.config.n_embd, model.config.n_layer
    batch, changing = len(state), seq_len - untouched
    hidden = state[:, : seq_len * width].view(batch, seq_len, width)[:, untouched:]
    # The cached keys and values are the base's whatever the intervention (it touches only block
    # outputs): detached, so the backward neither differentiates attention through them nor fills a
    # state-sized zero gradient for every block's slice of them (W's gradient is the same).
    cache = state[:, seq_len * width :].detach().view(batch, n_layer - 1 - layer, 2, untouched, width)
    # The queries are padded to every position's row (see `_block_with_cached_keys`), so the usual
    # causal mask; a single changing position (the last) sees every key.
    mask = torch.full((seq_len, seq_len), float("-inf"), device=state.device, dtype=state.dtype).triu(1)
    if changing == 1:
        mask = mask[-1:]
    for b, j in enumerate(range(layer + 1, n_layer)):
        hidden = _block_with_cached_keys(model.base_model.h[j], hidden, cache[:, b, 0], cache[:, b, 1], mask, last_only=j == n_layer - 1)
    return class_head(model)(model.base_model.ln_f(hidden))
