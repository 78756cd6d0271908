"""A planted network for the position sweep: X+Y lives at one (layer, token) only, rotated across the
neurons beside louder nuisance features, so an alignment judgement must find it there (power) and
nowhere else (every other single-token cell is a null case). `tests/test_positions_planted.py` and
`benchmarks/calibrate_verdicts.py` run the sweep on it."""

from __future__ import annotations

import torch
from torch import nn

from causal_das.das.site import SiteName
from causal_das.tasks import arithmetic as A

HOME = (1, "3")  # (layer, position set) where X+Y lives
WIDTH, TOKENS = 8, 6
SUM = 0.3  # the scale of X+Y in its direction: small beside the nuisance features (scale 3), so PCA misses it


def rotation(seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(WIDTH, WIDTH, generator=torch.Generator().manual_seed(seed)))[0]


class SlotNetwork(nn.Module):
    """Six token slots of WIDTH features, two layers, causal by construction (slot p reads slots <= p).

    Layer 0, slot p: the value of token p (numbers / 10; 0 for '+' and '=') on the first axis of a
    rotated basis R0. Layer 1: slot 3 holds SUM * (X + Y) on the first axis of its own rotation R1 and
    two loud nuisance features (3 sin(7X + 3Y), 3 cos(5X - 2Y)) that nothing reads; every other slot
    copies layer 0. The output reads X+Y from slot 3 and Z from slot 4 of layer 1."""

    def __init__(self):
        super().__init__()
        self.register_buffer("r0", rotation(0))
        self.register_buffer("r1", rotation(1))
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so `engine.frozen` and the device work

    def layer0(self, ids: torch.Tensor) -> torch.Tensor:
        values = torch.where(ids <= 10, ids.float() / 10, torch.zeros_like(ids, dtype=torch.float))
        features = torch.zeros(*ids.shape, WIDTH)
        features[..., 0] = values
        return features @ self.r0.T  # (B, 6, WIDTH)

    def layer1(self, h0: torch.Tensor) -> torch.Tensor:
        value = h0 @ self.r0[:, 0]  # (B, 6): each slot's token value back from its rotation
        x, y = value[:, 0] * 10, value[:, 2] * 10
        features = torch.zeros(len(h0), WIDTH)
        features[:, 0] = SUM * (x + y)
        features[:, 1] = 3 * torch.sin(7 * x + 3 * y)
        features[:, 2] = 3 * torch.cos(5 * x - 2 * y)
        return torch.cat([h0[:, :3], (features @ self.r1.T)[:, None], h0[:, 4:]], dim=1)

    def output(self, h1: torch.Tensor) -> torch.Tensor:
        total = (h1[:, 3] @ self.r1[:, 0]) / SUM + (h1[:, 4] @ self.r0[:, 0]) * 10
        classes = torch.arange(A.N_CLASSES, dtype=torch.float) + A.OFFSET
        return -4 * (total[:, None] - classes) ** 2 * self.scale


class SlotSite:
    def __init__(self, net: SlotNetwork, layer: int, positions: tuple[int, ...]):
        self.model, self.layer, self.positions = net, layer, positions
        self.name = SiteName("planted", "slots", layer, positions)
        self.n = len(positions) * WIDTH
        self.coordinates = torch.cat([torch.arange(p * WIDTH, (p + 1) * WIDTH) for p in positions])

    def prefix(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.model.layer0(ids)
        return (h if self.layer == 0 else self.model.layer1(h)).flatten(1)

    def suffix(self, state: torch.Tensor) -> torch.Tensor:
        h = state.view(len(state), TOKENS, WIDTH)
        return self.model.output(h if self.layer == 1 else self.model.layer1(h))


class Planted:
    """What `arithmetic_positions.run_group` needs of a network: the slot network, its prompts and answers."""

    def __init__(self):
        self.model = SlotNetwork()
        self.input_ids = torch.tensor([[x, 11, y, 11, z, 12] for x, y, z in A.TRIPLES.tolist()])
        with torch.no_grad():
            self.plain_predictions = SlotSite(self.model, 0, tuple(range(6))).suffix(
                SlotSite(self.model, 0, tuple(range(6))).prefix(self.input_ids)).argmax(-1).numpy()

    def site(self, layer, positions):
        return SlotSite(self.model, layer, positions)

    def site_states(self, site):
        with torch.no_grad():
            return site.prefix(self.input_ids)
