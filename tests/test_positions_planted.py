"""The position sweep on a planted network whose answer is known: X+Y lives at one (layer, token) only,
rotated across the neurons and beside louder nuisance features, so DAS must beat every baseline there
and find nothing anywhere else."""

import numpy as np

from causal_das.experiments import arithmetic_positions as gp
from causal_das.studies import position_verdicts
from causal_das.studies.planted_positions import Planted
from causal_das.tasks import arithmetic as A


def test_the_position_sweep_finds_the_planted_partial_sum_where_it_lives_and_nowhere_else(tmp_path):
    planted = Planted()
    assert np.mean(planted.plain_predictions == A.LABELS) == 1.0  # the planted network computes X+Y+Z
    config = gp.PositionSweepConfig(causal_models=("(X+Y)+Z", "X+(Y+Z)"), n_training=2000, n_testing=1000, epochs=2, lr=0.05,
                                    control="none", results_path=str(tmp_path))
    cells, wrong = {}, {}
    for layer in (0, 1):
        for position_set in ("all", "0", "1", "2", "3", "4", "5"):
            # Beside it, X+(Y+Z), whose Y+Z no slot holds: 14 more null cells, trained in the same passes.
            keys = [("(X+Y)+Z", layer, position_set), ("X+(Y+Z)", layer, position_set)]
            records = gp.run_group(planted, None, keys, 2, config, tmp_path, {key: {} for key in keys}, {})
            cells[layer, position_set], wrong[layer, position_set] = records[keys[0]], records[keys[1]]
    # The paired claims, adjusted over the 28 cells: the planted site is real and beats every same-k
    # baseline; no site without the variable (every single token but 3 at layer 1, every one at layer
    # 0, every single token for X+(Y+Z)) is called real.
    verdicts, claims = position_verdicts.judge_cells([*cells.values(), *wrong.values()])
    verdict = dict(zip(cells, verdicts[:14], strict=True))
    assert claims["n_claims"] == 28 and claims["method"] == "holm"
    assert not any(v["alignment_real"] for (_, s), v in zip(wrong, verdicts[14:], strict=True) if s != "all"), verdicts[14:]
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
