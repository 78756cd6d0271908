"""The position sweep on a planted network whose answer is known: X+Y lives at one (layer, token) only,
rotated across the neurons and beside louder nuisance features, so DAS must beat every baseline there
and find nothing anywhere else."""

import numpy as np
import torch
from torch import nn

from causal_das.das.site import SiteName
from causal_das.experiments import arithmetic_positions as gp
from causal_das.studies import position_verdicts
from causal_das.tasks import arithmetic as A

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
    """What `arithmetic_positions.run_group` needs of a network."""

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


def test_the_position_sweep_finds_the_planted_partial_sum_where_it_lives_and_nowhere_else(tmp_path):
    planted = Planted()
    assert np.mean(planted.plain_predictions == A.LABELS) == 1.0  # the planted network computes X+Y+Z
    config = gp.PositionSweepConfig(causal_models=("(X+Y)+Z",), n_training=2000, n_testing=1000, epochs=2, lr=0.05,
                                    control="none", results_path=str(tmp_path))
    cells = {}
    for layer in (0, 1):
        for position_set in ("all", "0", "1", "2", "3", "4", "5"):
            key = ("(X+Y)+Z", layer, position_set)
            cells[layer, position_set] = gp.run_group(planted, None, [key], 2, config, tmp_path, {key: {}}, {})[key]
    # The paired claims, adjusted over the 14 cells: the planted site is real and beats every same-k
    # baseline; no site without the variable (every single token but 3 at layer 1, every one at layer
    # 0) is called real.
    verdicts, claims = position_verdicts.judge_cells(list(cells.values()))
    verdict = dict(zip(cells, verdicts, strict=True))
    assert claims["n_claims"] == 14 and claims["method"] == "holm"
    assert verdict[1, "3"]["alignment_real"] and verdict[1, "3"]["das_beats_baselines"], verdict[1, "3"]
    assert verdict[1, "3"]["p_chance_adjusted"] < 1e-6 and verdict[1, "3"]["das_minus_chance_interval"][0] > 0.5
    assert not any(v["alignment_real"] for (layer, s), v in verdict.items() if s != "all" and (layer, s) != (1, "3")), verdict
    home = cells[1, "3"]
    low, high = home["iia_interval"]
    assert low <= home["iia_own_model"] <= high and high - low < 0.01  # IIA 1.0 on 1000 pairs: Wilson [0.996, 1]
    assert home["paired"]["same_k"]["comparisons"]["pca"]["own_only"] > 500  # PCA takes the loud nuisance
    assert home["das_minus_best_baseline"] > 0.5  # PCA takes the loud nuisance, two neurons or a random plane only part of X+Y
    assert home["baselines"]["full_patch"] > 0.95  # the slot carries X+Y; a 2-dim rotation is enough
    assert not home["illusion"]["flagged"]
    # All six tokens hold slot 3 at layer 1, and at layer 0 the copies of X and Y (slots 0 and 2), whose
    # joint swap mimics X+Y: what an all-token site mixes together.
    assert cells[1, "all"]["iia_own_model"] > 0.8 and cells[0, "all"]["iia_own_model"] > 0.8
    for (layer, position_set), cell in cells.items():
        if position_set != "all" and (layer, position_set) != (1, "3"):
            assert cell["iia_own_model"] < 0.3, (layer, position_set, cell["iia_own_model"])
    assert not cells[1, "0"]["variable_can_exist"] and not cells[0, "1"]["variable_can_exist"] and cells[0, "3"]["variable_can_exist"]


def test_what_chooses_sites_never_reads_the_report_pairs(tmp_path):
    """The selection split is drawn before the report split and evaluated apart: a sweep with another
    number of report pairs (other report pairs) has the same selection record, bit for bit."""
    planted, key = Planted(), ("(X+Y)+Z", 1, "4")
    records = []
    for n_testing in (600, 300):
        config = gp.PositionSweepConfig(causal_models=("(X+Y)+Z",), n_training=500, n_selection=400, n_testing=n_testing, epochs=1,
                                        lr=0.05, control="none", results_path=str(tmp_path))
        train, selection, report = config.pairs()
        assert not (set(train) & set(selection) or set(train) & set(report) or set(selection) & set(report))
        records.append(gp.run_group(planted, None, [key], 2, config, tmp_path, {key: {}}, {})[key])
    first, second = records
    assert first["selection"] == second["selection"] and first["selection"]["n_pairs"] == 400
    assert (first["n_test_pairs"], second["n_test_pairs"]) == (600, 300) and first["paired"] != second["paired"]
