"""Sites: where in a network DAS intervenes, and the prefix/suffix split that makes DAS fast.

A site cuts a frozen network in two: the *prefix* maps inputs to the activations at the site,
flattened to (batch, n); the *suffix* maps (possibly intervened) activations to logits. Because the
network is frozen, the fast engine runs each prefix once per distinct input and trains only through
the suffix.

Site names follow one grammar, built and parsed only here:
`<model>.<component>.L<layer>[.pos<positions>]`, e.g. `mlp.block_output.L0`,
`gpt2.block_output.L7.pos0-5` (token positions 0 to 5) or `gpt2.block_output.L7.pos0_2_4`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

_SITE_NAME = re.compile(r"^(?P<model>[a-z0-9_]+)\.(?P<component>[a-z_]+)\.L(?P<layer>\d+)(?:\.pos(?P<positions>\d+-\d+|\d+(?:_\d+)*))?$")


@dataclass(frozen=True)
class SiteName:
    model: str
    component: str
    layer: int
    positions: tuple[int, ...] | None = None  # token positions, in the order they are concatenated

    def __str__(self) -> str:
        text = f"{self.model}.{self.component}.L{self.layer}"
        if self.positions is not None:
            first, last = self.positions[0], self.positions[-1]
            if len(self.positions) > 1 and self.positions == tuple(range(first, last + 1)):
                text += f".pos{first}-{last}"
            else:
                text += ".pos" + "_".join(map(str, self.positions))
        return text

    @classmethod
    def parse(cls, text: str) -> SiteName:
        match = _SITE_NAME.match(text)
        if match is None:
            raise ValueError(f"malformed site name {text!r}; expected e.g. 'mlp.block_output.L0'")
        positions, spec = None, match["positions"]
        if spec is not None and "-" in spec:
            first, last = map(int, spec.split("-"))
            positions = tuple(range(first, last + 1))
        elif spec is not None:
            positions = tuple(map(int, spec.split("_")))
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
    row_dim: int | None = None


class Site(Protocol):
    """A frozen network split at one place. `n` is the dimension DAS rotates."""

    name: SiteName
    n: int
    model: torch.nn.Module  # the frozen network, put in eval mode while DAS runs
    # Indices of the state entries DAS rotates (n of them); None when it rotates the whole state.
    coordinates: torch.Tensor | None
    # Optional (default 1): the state is `rows` consecutive n-vectors, all rotated by the same W
    # (the CNN's rows view); then n_state = rows * n.
    rows: int

    def prefix(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (batch, ...) -> site state (batch, n_state), n_state >= n."""
        ...

    def suffix(self, hidden: torch.Tensor) -> torch.Tensor:
        """site state (batch, n_state) -> logits (batch, classes)."""
        ...

    def pyvene_spec(self) -> PyveneSpec:
        ...
