"""Prompts for a language-model DAS site: rendered text, named token positions, packed batches.

A task writes its prompts from templates (`render("is {W} like {X} ?", values)`), which record
where each variable's value was written (a character span). A *position function* turns a prompt
into one token index (`last_token()`, `fixed(i)`, `token_of("X")`, in the spirit of causalab's
token positions); the same name can land on different tokens in different templates.

`PromptEncoder` turns an input setting (one numpy array per variable, n rows) into one long
tensor (n, 2T + P) that the DAS engines can index like any other table of inputs. Each row packs

    [ token ids (T) | attention mask (T) | token index of each named position (P) ]

with T the longest prompt of that call (shorter ones padded on the tokenizer's `padding_side`)
and the positions in padded coordinates, in the order they were declared. Different calls may pad
to different T; `unpack` recovers T from the width. A site picks its positions with
`encoder.slots(*names)`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PositionFn = Callable[["Prompt", Sequence[int], Any], int]  # (prompt, unpadded ids, tokenizer) -> token index


@dataclass(frozen=True)
class Prompt:
    """A prompt's text and the character span [start, end) of each input variable's written value."""

    text: str
    spans: dict[str, tuple[int, int]]


def render(template: str, values: Mapping[str, object]) -> Prompt:
    """`template` (str.format placeholders: `{W}`, `{X:>3}`, `{Y!r}`) filled from `values`, with the
    span of each placeholder's rendered value (the first occurrence where a name repeats)."""
    pieces, spans, length = [], {}, 0
    for literal, field, spec, conversion in string.Formatter().parse(template):
        pieces.append(literal)
        length += len(literal)
        if field is None:
            continue
        if not field.isidentifier():
            raise ValueError(f"template {template!r}: placeholder {{{field}}} must be a plain variable name")
        if field not in values:
            raise ValueError(f"template {template!r} needs a value for {field!r}; got {sorted(values)}")
        value = values[field]
        value = {"r": repr, "s": str, "a": ascii}[conversion](value) if conversion else value
        written = format(value, spec or "")
        spans.setdefault(field, (length, length + len(written)))
        pieces.append(written)
        length += len(written)
    return Prompt("".join(pieces), spans)


@dataclass(frozen=True)
class Fixed:
    """The token at `index` of the unpadded prompt; a negative index counts from its end."""

    index: int

    def __call__(self, prompt: Prompt, ids: Sequence[int], tokenizer) -> int:
        if not -len(ids) <= self.index < len(ids):
            raise ValueError(f"position {self.index} is outside the {len(ids)}-token prompt {prompt.text!r}")
        return self.index % len(ids)


@dataclass(frozen=True)
class TokenOf:
    """The token whose characters cover the first character of `variable`'s value."""

    variable: str

    def __call__(self, prompt: Prompt, ids: Sequence[int], tokenizer) -> int:
        if self.variable not in prompt.spans:
            raise ValueError(f"variable {self.variable!r} is not written in the prompt {prompt.text!r} (it has {sorted(prompt.spans)})")
        start, end = prompt.spans[self.variable]
        if start == end:
            raise ValueError(f"variable {self.variable!r} is written as an empty string in {prompt.text!r}: no token holds it")
        offsets = token_offsets(prompt, ids, tokenizer)
        covering = [t for t, (a, b) in enumerate(offsets) if a <= start < b]
        # A tokenizer that trims spaces from its offsets may leave a value's leading space uncovered.
        inside = [t for t, (a, b) in enumerate(offsets) if start <= a < end and b > a]
        found = covering or inside
        if not found:
            raise ValueError(f"no token of {prompt.text!r} covers variable {self.variable!r} at characters {start}..{end}")
        return found[0]


def last_token() -> Fixed:
    """The last token of the prompt (the one a causal LM predicts the next token from)."""
    return Fixed(-1)


def fixed(index: int) -> Fixed:
    """The token at `index` of the unpadded prompt; negative counts from its end."""
    return Fixed(int(index))


def token_of(variable: str) -> TokenOf:
    """The token holding the first character of `variable`'s written value (from the fast
    tokenizer's offset mapping)."""
    return TokenOf(variable)


def token_offsets(prompt: Prompt, ids: Sequence[int], tokenizer) -> list[tuple[int, int]]:
    """The character offsets of each of `ids`, the tokenization of `prompt.text` (with or without
    the tokenizer's special tokens, whichever reproduces `ids`)."""
    if isinstance(ids, _Tokens) and ids.offsets is not None:  # the encoder tokenized with offsets already
        return ids.offsets
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"token positions need a fast tokenizer (offset mapping); {type(tokenizer).__name__} is not one")
    ids = list(ids)
    for special in (False, True):
        encoded = tokenizer(prompt.text, add_special_tokens=special, return_offsets_mapping=True)
        if list(encoded["input_ids"]) == ids:
            return [tuple(pair) for pair in encoded["offset_mapping"]]
    raise ValueError(f"the token ids given for {prompt.text!r} are not its tokenization by {type(tokenizer).__name__}")


class _Tokens(list):
    """A prompt's token ids with their character offsets (None from a slow tokenizer), so that a
    position function need not tokenize the prompt again."""

    def __init__(self, ids, offsets):
        super().__init__(ids)
        self.offsets = None if offsets is None else [tuple(pair) for pair in offsets]


@dataclass(frozen=True)
class Slots:
    """Which packed position slots a site reads: `indices` into the `total` declared positions."""

    names: tuple[str, ...]
    indices: tuple[int, ...]
    total: int


def unpack(rows: torch.Tensor, n_positions: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed rows (B, 2T + P) -> (ids (B, T), attention mask (B, T), positions (B, P))."""
    if rows.ndim != 2 or (rows.shape[1] - n_positions) % 2 or rows.shape[1] < n_positions:
        raise ValueError(f"packed prompts must be (batch, 2T + {n_positions}); got shape {tuple(rows.shape)}")
    width = (rows.shape[1] - n_positions) // 2
    return rows[:, :width], rows[:, width : 2 * width], rows[:, 2 * width :]


def shared_positions(rows: torch.Tensor, slots: Slots) -> tuple[int, ...]:
    """The token positions `slots` select, when they are the same in every row (what pyvene's fixed
    unit locations need); ValueError otherwise."""
    positions = unpack(rows, slots.total)[2][:, list(slots.indices)]
    if len(positions) == 0 or not bool((positions == positions[:1]).all()):
        raise ValueError(f"positions {', '.join(slots.names)} are not at the same token index in every row")
    return tuple(int(p) for p in positions[0])


class PromptEncoder:
    """Input settings -> packed rows (see the module docstring).

    `render` maps one row's values ({variable: value}) to its `Prompt`; `positions` names the
    position functions, in the order their slots are packed."""

    def __init__(self, tokenizer, render: Callable[[dict], Prompt], positions: Mapping[str, PositionFn], add_special_tokens: bool = False):
        if not positions:
            raise ValueError("PromptEncoder needs at least one named position")
        if getattr(tokenizer, "padding_side", "right") not in ("left", "right"):
            raise ValueError(f"tokenizer padding_side must be 'left' or 'right', not {tokenizer.padding_side!r}")
        self.tokenizer, self.render, self.add_special_tokens = tokenizer, render, add_special_tokens
        self.positions = dict(positions)
        self.names = tuple(self.positions)

    @property
    def n_positions(self) -> int:
        return len(self.names)

    @property
    def pad_id(self) -> int:
        # Padding is masked out, so its id only has to be a valid token; 0 where there is no pad token.
        pad = self.tokenizer.pad_token_id
        return 0 if pad is None else int(pad)

    def slots(self, *names: str) -> Slots:
        """The slots of `names` (all declared positions when none are given), for a site."""
        names = names or self.names
        unknown = [name for name in names if name not in self.positions]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"positions {list(names)} must be distinct names among the declared {list(self.names)}")
        return Slots(tuple(names), tuple(self.names.index(name) for name in names), self.n_positions)

    def prompts(self, setting: Mapping[str, np.ndarray]) -> list[Prompt]:
        """The rendered prompt of every row of `setting` ({variable: (n,) array})."""
        lengths = {len(values) for values in setting.values()}
        if len(lengths) > 1:
            raise ValueError(f"every variable of the input setting needs the same number of rows; got {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        # Python scalars, so that a template formats 3 and not np.int64(3).
        return [self.render({k: _plain(v[i]) for k, v in setting.items()}) for i in range(n)]

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Each text's unpadded token ids (with their offsets, from a fast tokenizer)."""
        if not texts:
            return []
        fast = bool(getattr(self.tokenizer, "is_fast", False))
        encoded = self.tokenizer(texts, add_special_tokens=self.add_special_tokens, return_offsets_mapping=fast)
        offsets = encoded["offset_mapping"] if fast else [None] * len(texts)
        return [_Tokens(ids, pairs) for ids, pairs in zip(encoded["input_ids"], offsets, strict=True)]

    def __call__(self, setting: Mapping[str, np.ndarray]) -> torch.Tensor:
        """Packed rows (n, 2T + P), long; see the module docstring."""
        prompts = self.prompts(setting)
        encoded = self.tokenize([p.text for p in prompts])
        width = max((len(ids) for ids in encoded), default=0)
        rows = torch.zeros((len(prompts), 2 * width + self.n_positions), dtype=torch.long)
        rows[:, :width] = self.pad_id
        left = self.tokenizer.padding_side == "left"
        for i, (prompt, ids) in enumerate(zip(prompts, encoded, strict=True)):
            if not ids:
                raise ValueError(f"prompt {prompt.text!r} has no tokens")
            start = width - len(ids) if left else 0
            rows[i, start : start + len(ids)] = torch.tensor(ids)
            rows[i, width + start : width + start + len(ids)] = 1
            for slot, name in enumerate(self.names):
                index = self.positions[name](prompt, ids, self.tokenizer)
                if not 0 <= index < len(ids):
                    raise ValueError(f"position {name!r} returned token {index} for the {len(ids)}-token prompt {prompt.text!r}")
                rows[i, 2 * width + slot] = start + index
        return rows


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
