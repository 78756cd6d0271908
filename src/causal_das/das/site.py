"""Sites: where in a network DAS intervenes, and the prefix/suffix split that makes DAS fast.

A site cuts a frozen network in two: the *prefix* maps inputs to the activations at the site,
flattened to (batch, n); the *suffix* maps (possibly intervened) activations to logits. Because the
network is frozen, the fast engine runs each prefix once per distinct input and trains only through
the suffix.

Site names follow one grammar, built and parsed only here:
`<model>.<component>.L<layer>[.pos<first>-<last>]`, e.g. `mlp.block_output.L0` or
`gpt2.block_output.L7.pos0-5`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

_SITE_NAME = re.compile(r"^(?P<model>[a-z0-9_]+)\.(?P<component>[a-z_]+)\.L(?P<layer>\d+)(?:\.pos(?P<first>\d+)-(?P<last>\d+))?$")


@dataclass(frozen=True)
class SiteName:
    model: str
    component: str
    layer: int
    positions: tuple[int, int] | None = None  # first and last token position, inclusive

    def __str__(self) -> str:
        text = f"{self.model}.{self.component}.L{self.layer}"
        if self.positions is not None:
            text += f".pos{self.positions[0]}-{self.positions[1]}"
        return text

    @classmethod
    def parse(cls, text: str) -> SiteName:
        match = _SITE_NAME.match(text)
        if match is None:
            raise ValueError(f"malformed site name {text!r}; expected e.g. 'mlp.block_output.L0'")
        positions = None
        if match["first"] is not None:
            positions = (int(match["first"]), int(match["last"]))
        return cls(match["model"], match["component"], int(match["layer"]), positions)


@dataclass(frozen=True)
class PyveneSpec:
    """What the pyvene engine needs to intervene at a site through `pyvene.IntervenableModel`.

    `model` is a network pyvene knows (e.g. its own `MLPForClassification` holding our weights);
    `to_pyvene_inputs` turns a batch of our inputs into the dict the model's forward takes;
    `logits` pulls (batch, classes) logits out of the model's output; `positions` are the token
    positions intervened at (concatenated by pyvene, as our prefix concatenates them).
    """

    model: torch.nn.Module
    layer: int
    component: str
    positions: tuple[int, ...]
    to_pyvene_inputs: Callable[[torch.Tensor], dict[str, Any]]
    logits: Callable[[Any], torch.Tensor]


class Site(Protocol):
    """A frozen network split at one place. `n` is the dimension DAS rotates."""

    name: SiteName
    n: int
    model: torch.nn.Module  # the frozen network, put in eval mode while DAS runs

    def prefix(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (batch, ...) -> activations (batch, n)."""
        ...

    def suffix(self, hidden: torch.Tensor) -> torch.Tensor:
        """activations (batch, n) -> logits (batch, classes)."""
        ...

    def pyvene_spec(self) -> PyveneSpec:
        ...
