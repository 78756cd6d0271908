"""benchmarks/calibrate_verdicts.py, the measurement of the verdicts' false-positive rate and power:
its tallies on hand-made sweeps with a known count, its reuse of saved sweeps only when their inputs
match, and one real planted sweep end to end (about 15 s), rerun to check that it is reused."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import calibrate_verdicts as calibrate  # noqa: E402

from causal_das.studies.planted_positions import HOME  # noqa: E402

HOME_KEY = ["(X+Y)+Z", *HOME]


def cell(layer, position_set, real=False, on_selection=None):
    return {"key": ["(X+Y)+Z", layer, position_set], "real": real, "real_on_selection": real if on_selection is None else on_selection,
            "p_chance_adjusted": 0.01 if real else 1.0}


def planted_sweep(seed, home_real, false_reals=(), all_token_real=True):
    cells = [cell(*HOME, real=home_real), cell(0, "all", real=all_token_real), cell(1, "all", real=all_token_real)]
    cells += [cell(layer, str(token), real=(layer, str(token)) in false_reals) for layer in (0, 1) for token in range(6)
              if (layer, str(token)) != tuple(HOME)]
    return {"seed": seed, "cells": cells, "seconds": 1.0}


def test_tally_counts_nulls_power_and_leaves_out_the_partial_cells():
    sweeps = [planted_sweep(0, True), planted_sweep(1, False, false_reals=[(0, "2"), (1, "5")]), planted_sweep(2, True)]
    row = calibrate.tally("planted", sweeps)
    # 11 single-token nulls per sweep; the all-token cells (real in every sweep here) are not nulls.
    assert row["null_cells"] == 33 and row["null_cells_real"] == 2
    assert row["sweeps_with_a_false_real"] == 1 and abs(row["family_wise_rate"] - 1 / 3) < 1e-12
    assert abs(row["power"] - 2 / 3) < 1e-12
    low, high = row["power_interval"]
    assert low < 2 / 3 < high
    assert row["selection_null_cells_real"] == 2 and row["selection_power"] == row["power"]


def test_tally_reads_the_selection_verdict_apart():
    sweep = planted_sweep(0, True)
    sweep["cells"][0]["real_on_selection"] = False  # the home: real on the report pairs only
    row = calibrate.tally("planted", [sweep])
    assert row["power"] == 1.0 and row["selection_power"] == 0.0


def test_null_networks_count_every_cell():
    sweeps = [{"seed": 0, "seconds": 1.0, "cells": [{"key": ["(X+Y)+Z", 0, "all"], "real": True, "real_on_selection": False},
                                                   {"key": ["X+(Y+Z)", 4, "3"], "real": False, "real_on_selection": False}]}]
    row = calibrate.tally("random init", sweeps)
    assert (row["null_cells"], row["null_cells_real"], row["selection_null_cells_real"]) == (2, 1, 0)
    assert "power" not in row


def test_a_saved_sweep_is_reused_only_with_the_same_inputs(tmp_path):
    args = calibrate.parse_args(["--null_seeds", "1"])
    inputs = calibrate.sweep_inputs("random init", args)
    path = tmp_path / "random_init_0.json"
    path.write_text(json.dumps({"seed": 0, "inputs": inputs, "cells": [], "seconds": 1.0}))
    assert calibrate.saved_sweep(path, inputs)["seed"] == 0
    other = calibrate.sweep_inputs("random init", calibrate.parse_args(["--layers", "0", "5"]))
    assert calibrate.saved_sweep(path, other) is None
    stale = {**inputs, "rule": "an older rule"}
    assert calibrate.saved_sweep(path, stale) is None
    assert calibrate.saved_sweep(tmp_path / "missing.json", inputs) is None


def test_one_planted_sweep_end_to_end_then_reused(tmp_path, capsys):
    out = tmp_path / "verdicts.json"
    argv = ["--planted_seeds", "1", "--cases", "planted", "--out", str(out)]
    assert calibrate.main(argv) == 0
    first = json.loads(out.read_text())
    saved = json.loads((tmp_path / "verdicts_sweeps" / "planted_0.json").read_text())
    assert len(saved["cells"]) == 14  # 2 layers x 7 position sets
    assert [row["case"] for row in first["cases"]] == ["planted"]
    assert first["cases"][0]["null_cells"] == 11
    assert calibrate.main(argv) == 0
    assert "1 reused" in capsys.readouterr().out
    second = json.loads(out.read_text())
    assert second["cases"] == first["cases"]


def test_an_untrained_network_has_no_real_cell(tmp_path):
    """A tiny version of the calibration's random-init case: a 2-block GPT-2 left untrained (nothing in
    it computes a sum). The three arithmetic models x 7 position sets at its last block, judged as the
    main job judges: no cell is real, on either split. (The permuted-label network needs minutes of
    training to fit its labels: it is measured by the benchmark only.)"""
    from causal_das.das import engine
    from causal_das.experiments import arithmetic_positions as gp
    from causal_das.studies import arithmetic_decoder, position_verdicts
    from causal_das.studies.arithmetic_network import Network

    tokenizer = arithmetic_decoder.build_tokenizer()
    model = arithmetic_decoder.build_default_model(tokenizer, width=32, n_layers=2, n_heads=2, seed=0)
    network = Network.load(model.eval(), arithmetic_decoder.encode_prompts(tokenizer), [1])
    config = gp.PositionSweepConfig(causal_models=calibrate.ARITHMETIC, n_training=300, n_selection=400, n_testing=400, epochs=1,
                                    control="none", results_path=str(tmp_path))
    records = []
    with engine.frozen(network.model):
        for position_set in calibrate.SETS:
            keys = [(m, 1, position_set) for m in calibrate.ARITHMETIC]
            out = gp.run_group(network, None, keys, 4, config, tmp_path, {key: {} for key in keys}, {})
            records += [out[key] for key in keys]
    verdicts, claims = position_verdicts.judge_cells(records)
    assert claims["n_claims"] == 21
    assert max(r["iia_own_model"] for r in records) < 0.3  # chance-level everywhere: the variables are not there
    assert not any(v["alignment_real"] or v["selection"]["alignment_real"] for v in verdicts), [
        (r["causal_model"], r["layer"], r["position_set"]) for r, v in zip(records, verdicts, strict=True) if v["alignment_real"]]
