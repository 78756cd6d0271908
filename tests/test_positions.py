"""The position sweep (`run_das.py --position_sets`) on a tiny trained GPT-2: cells per (causal model,
layer, position set), every baseline beside each, the causal-attention negative control, resuming."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from causal_das.experiments import arithmetic_positions as gp
from causal_das.studies import arithmetic_decoder, arithmetic_network, graph_files, position_verdicts
from causal_das.tasks import arithmetic as A

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--width", "16", "--n_layers", "3", "--n_heads", "2"]
SMALL = ["--n_training", "256", "--n_testing", "300", "--epochs", "1", "--batch_size", "64"]


def run(script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt2") / "model"
    proc = run("train_gpt2.py", "--output_dir", out, "--epochs", "3", *TINY)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("text, positions", [("all", (0, 1, 2, 3, 4, 5)), ("3", (3,)), ("2-3", (2, 3)), ("4,0", (0, 4))])
def test_position_sets_parse(text, positions):
    assert gp.parse_position_set(text) == positions


@pytest.mark.parametrize("text", ["6", "3-1", "x", "", "1,1"])
def test_bad_position_sets_are_refused(text):
    with pytest.raises(ValueError, match="not a set of token positions"):
        gp.parse_position_set(text)


def test_where_a_variable_can_exist_under_causal_attention():
    expected = {"(X+Y)+Z": 2, "(X+Z)+Y": 4, "X+(Y+Z)": 4, "(X)+Y+Z": 0, "X+(Y)+Z": 2, "X+Y+(Z)": 4, "(X+Y+Z)": 4}
    assert {name: gp.earliest_position(A.get_model(name)) for name in expected} == expected
    assert not gp.can_exist(A.get_model("(X+Y)+Z"), (0, 1)) and gp.can_exist(A.get_model("(X+Y)+Z"), (1, 2))


def test_position_sweep_end_to_end(model_dir, tmp_path):
    out = tmp_path / "positions"
    proc = run("run_das.py", "--model_path", model_dir, "--position_sets", "all", "3", "4-5", "--layers", "1", *SMALL, "--results_path", out)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"] == 5 and summary["position_sets"] == ["all", "3", "4-5"]
    assert len(summary["cells"]) == 9
    cell = json.loads((out / "cells" / "PXZ_Y" / "L01_p3.json").read_text())
    assert cell["variable_can_exist"] is False and cell["earliest_position"] == 4  # X+Z needs Z, at token 4
    assert json.loads((out / "cells" / "PXY_Z" / "L01_p3.json").read_text())["variable_can_exist"] is True
    same_site = cell["baselines"]
    for name in ("full_patch", "pca", "neuron_mask", "control_random_init", "copy_base_label", "network_no_intervention"):
        assert 0 <= same_site[name] <= 1, name
    assert len(same_site["random_subspace"]["draws"]) == 3 and len(same_site["neuron_mask_neurons"]) == 5
    assert cell["best_baseline"]["name"] in position_verdicts.SAME_K_BASELINES
    assert cell["das_minus_best_baseline"] == pytest.approx(cell["iia_own_model"] - cell["best_baseline"]["iia"])
    assert set(cell["illusion"]) >= {"variance_fraction", "projected_iia", "flagged", "span_dims"}
    assert (out / "interventions" / "PXZ_Y" / "L01_p3" / "weights.safetensors").is_file()
    assert (out / "positions_iia.png").stat().st_size > 10_000 and (out / "positions_margin.png").is_file()
    # A rerun reuses every cell; the full patch of all six tokens is the same in every model's cell.
    again = run("run_das.py", "--model_path", model_dir, "--position_sets", "all", "3", "4-5", "--layers", "1", *SMALL, "--results_path", out)
    assert again.returncode == 0 and "reusing 9 of 9 cells" in again.stdout
    # Another k on the same results path is the user's own conflict: refused.
    other = run("run_das.py", "--model_path", model_dir, "--position_sets", "3", "--layers", "1", "--low_rank_dims", "3", *SMALL, "--results_path", out)
    assert other.returncode != 0 and "other settings" in other.stderr


def test_position_sweep_bad_flags(model_dir, tmp_path):
    proc = run("run_das.py", "--model_path", model_dir, "--position_sets", "7", "--results_path", tmp_path / "p")
    assert proc.returncode != 0 and "not a set of token positions" in proc.stderr and not (tmp_path / "p").exists()
    proc = run("run_das.py", "--model_path", model_dir, "--position_sets", "3", "--low_rank_dims", "4", "8", "--results_path", tmp_path / "p")
    assert proc.returncode != 0 and "one --low_rank_dims value" in proc.stderr


def test_graphs_and_the_division_at_the_position_sweeps_sites(model_dir, tmp_path):
    """`graphs --site best` puts each causal model whose alignment is real (on the selection pairs)
    at its own best site, or stops where none is; `--site L:P` puts every model at one site; the
    analyses after them follow the graphs they are given."""
    import numpy as np
    import torch

    from causal_das.das import engine

    sweep = tmp_path / "positions"
    proc = run("run_das.py", "--model_path", model_dir, "--position_sets", "all", "3", "4-5", "--layers", "1", "2", *SMALL,
               "--control", "none", "--results_path", sweep)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((sweep / "summary.json").read_text())
    best = tmp_path / "best"
    proc = run("disentangle_causal_models.py", "graphs", "--sweep_path", sweep, "--results_path", best)
    assert proc.returncode == 0, proc.stderr
    index = json.loads((best / "graphs.json").read_text())
    possible = {m: [c for c in summary["cells"] if c["causal_model"] == m and c["variable_can_exist"]] for m in summary["causal_models"]}
    real = [m for m, cells in possible.items() if any(c["selection"]["alignment_real"] for c in cells)]
    assert [g["causal_model"] for g in index["graphs"]] == real
    if not real:  # this tiny network has nothing real: the best-site disentangling stops, saying so
        assert index["stopped"] and "stops here" in proc.stdout
    for g in index["graphs"]:
        top = max(possible[g["causal_model"]], key=lambda c: (c["selection"]["alignment_real"], c["selection"]["das_minus_chance"]))
        assert g["group"] == "best sites" and (g["layer"], g["position_set"]) == (top["layer"], top["position_set"])
        assert g["selection"]["das_minus_chance"] == top["selection"]["das_minus_chance"]
    # The analyses after the graphs follow the graphs they are given: every model at one site.
    at_all = tmp_path / "at_all"
    proc = run("disentangle_causal_models.py", "graphs", "--sweep_path", sweep, "--site", "1:all", "--results_path", at_all)
    assert proc.returncode == 0, proc.stderr
    index = json.loads((at_all / "graphs.json").read_text())
    for step in (["cliques"], ["divide", "--faithfulness", "0.8", "--resamples", "3"], ["classify"], ["predict", "3,7,2"]):
        proc = run("disentangle_causal_models.py", *step, "--results_path", at_all)
        assert proc.returncode == 0, (step, proc.stderr)
    division = json.loads((at_all / "division.json").read_text())
    assert [row["layer"] for row in division["layers"]] == ["L1:all"]
    assert division["layers"][0]["stability"]["resamples"] == 3
    assert set(division["layers"][0]["stability"]["sets"]) == {g["causal_model"] for g in index["graphs"]} == set(summary["causal_models"])
    assert division["layers"][0]["sites"] == {g["causal_model"]: g["site"] for g in index["graphs"]}
    # One site for every model: a graph at token 3 of layer 1 (the untouched first tokens' keys cached)
    # equals the position sweep's own W evaluated pair by pair.
    at_site = tmp_path / "site"
    proc = run("disentangle_causal_models.py", "graphs", "--sweep_path", sweep, "--site", "1:3", "--causal_models", "(X+Y)+Z", "X+(Y+Z)",
               "--results_path", at_site)
    assert proc.returncode == 0, proc.stderr
    row = json.loads((at_site / "graphs.json").read_text())["graphs"][0]
    assert (row["group"], row["site"], row["record"]) == ("L1:3", "L1:3", "graphs/PXY_Z/L01_p3_k5.json")
    graph = graph_files.load_graph(at_site / row["record"])
    model, tokenizer = arithmetic_decoder.load_classifier(model_dir)
    ids = arithmetic_decoder.encode_prompts(tokenizer)
    trained = engine.TrainedIntervention.load(sweep / "interventions" / "PXY_Z" / "L01_p3")
    pairs = np.random.default_rng(0).integers(0, A.N_TRIPLES, size=(200, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    data = engine.InterchangeData(ids, torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])[:, None], torch.zeros(len(pairs), dtype=torch.long))
    with engine.frozen(model):
        predicted = engine.predict(arithmetic_network.Network.load(model, ids, [1]).site(1, (3,)), trained, data).numpy()
    expected = predicted == A.counterfactual_labels(A.get_model("(X+Y)+Z"), pairs[:, 0], pairs[:, 1])
    assert np.array_equal(graph.correct[pairs[:, 0], pairs[:, 1]], expected)
    # What does not fit the sweep is refused in one line.
    for args, fragment in ((["--layers", "1"], "--site"), (["--site", "7:3"], "no cell"), (["--site", "1:9"], "LAYER:POSITIONS")):
        proc = run("disentangle_causal_models.py", "graphs", "--sweep_path", sweep, *args, "--results_path", tmp_path / "bad")
        assert proc.returncode != 0 and fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)


def _summary_cell(model, layer, position_set, das, pca, flagged, chance=0.08):
    """A summary row whose selection-pair and report-pair numbers agree (what the paired tests would
    say at these margins on 1000 pairs)."""
    cell = {"causal_model": model, "layer": layer, "position_set": position_set, "iia_own_model": das, "iia_interval": [das - 0.03, das + 0.03],
            "n_test_pairs": 1000, "variable_can_exist": True, "illusion": {"flagged": flagged},
            "baselines": {"network_no_intervention": chance, "network_on_source": chance, "random_subspace": {"mean": chance},
                          "pca": pca, "full_patch": pca, "neuron_mask": chance}}
    margin = das - max(pca, chance)
    real = not flagged and das - chance > 0.1
    verdict = {**position_verdicts.chance_margin(cell), "alignment_real": real, "p_chance": 1e-9 if real else 0.5,
               "p_chance_adjusted": 1e-8 if real else 1.0, "das_minus_chance_interval": [das - chance - 0.04, das - chance + 0.04]}
    selection = {"n_pairs": 1000, "iia_own_model": das, "chance_baseline": verdict["chance_baseline"], "das_minus_chance": das - chance,
                 "p_chance": verdict["p_chance"], "p_chance_adjusted": verdict["p_chance_adjusted"], "alignment_real": real}
    return {**cell, **verdict, "das_minus_best_baseline": margin, "das_beats_baselines": margin > 0.03,
            "best_baseline": {"name": "pca", "iia": pca}, "illusion_flagged": flagged, "selection": selection}


def test_the_best_site_is_where_the_alignment_is_real_not_where_pca_fails():
    """The known-answer network's shape: at the induced site PCA aligns the variable as well as DAS; at
    all six tokens PCA fails by construction and DAS is an illusion. The best site is the induced one;
    a model with no real alignment anywhere is left out."""
    from causal_das.studies import graph_sites

    cells = [_summary_cell("(X+Y)+Z", 1, "all", 0.70, 0.09, flagged=True), _summary_cell("(X+Y)+Z", 2, "3", 0.59, 0.60, flagged=False),
             _summary_cell("(X+Y)+Z", 3, "3", 0.09, 0.09, flagged=False),
             _summary_cell("X+(Y+Z)", 1, "all", 0.50, 0.09, flagged=True), _summary_cell("X+(Y+Z)", 4, "4", 0.09, 0.08, flagged=False)]
    assert [c["alignment_real"] for c in cells] == [False, True, False, False, False]
    summary = {"experiment": "position_sweep", "k": 16, "position_sets": ["all", "3", "4"], "causal_models": ["(X+Y)+Z", "X+(Y+Z)"],
               "cells": cells}
    keys, k, why = graph_sites.select(summary, Path("sweep"), None, None, None, ["best"])
    assert k == 16 and [(key.causal_model, key.layer, key.position_set) for key in keys] == [("(X+Y)+Z", 2, "3")]
    assert why[keys[0]]["alignment_real"] and why[keys[0]]["das_minus_chance"] == pytest.approx(0.51)
    assert why[keys[0]]["report"]["iia_own_model"] == 0.59
    # Only the selection pairs choose: poisoning every report-pair number (another cell real, with the
    # widest margin) changes nothing; changing the selection pairs' numbers does.
    for c in cells:
        c.update(alignment_real=(c["layer"], c["position_set"]) == (3, "3"), das_minus_chance=0.9 if c["layer"] == 3 else -0.5,
                 iia_own_model=0.99 if c["layer"] == 3 else 0.0, p_chance_adjusted=0.0 if c["layer"] == 3 else 1.0)
    poisoned, _, _ = graph_sites.select(summary, Path("sweep"), None, None, None, ["best"])
    assert poisoned == keys
    cells[2]["selection"].update(alignment_real=True, das_minus_chance=0.6)
    moved, _, _ = graph_sites.select(summary, Path("sweep"), None, None, None, ["best"])
    assert [(key.layer, key.position_set) for key in moved] == [(3, "3")]
    # When no model's alignment is real anywhere on the selection pairs, there is no best site: the
    # disentangling at best sites stops (graphs.json says why, and so does each later step).
    for c in cells:
        c["selection"]["alignment_real"] = False
    keys, _, why = graph_sites.select(summary, Path("sweep"), None, None, None, ["best"])
    assert keys == [] and why == {}


def test_each_disentangling_step_says_that_it_stopped_and_why(tmp_path):
    from causal_das.studies import graph_sites

    (tmp_path / "cliques.png").write_bytes(b"stale figure of an earlier run")
    (tmp_path / "graphs.json").write_text(json.dumps({"experiment": "iia_graphs", "graphs": [], "stopped": graph_sites.NOTHING_REAL}))
    from test_bad_input import run_cli  # in this process: a stopped step costs milliseconds

    for step in ("cliques", "divide", "classify", "predict"):
        args = {"divide": ["--faithfulness", "0.8"], "predict": ["3,7,2"]}.get(step, [])
        code, out, err = run_cli("disentangle_causal_models.py", [step, *args, "--results_path", tmp_path])
        assert code == 0 and "stopped: no causal model has a real alignment" in out, err
    assert json.loads((tmp_path / "cliques.json").read_text())["stopped"] == graph_sites.NOTHING_REAL
    assert json.loads((tmp_path / "classification.json").read_text())["experiment"] == "classification"
    assert not (tmp_path / "cliques.png").exists()
    # The seed comparison leaves out runs that stopped; with fewer than two left it stops too.
    from causal_das.experiments import disentangling

    record = disentangling.run_seed_comparison([tmp_path, tmp_path], tmp_path / "seeds.json")
    assert "fewer than two divisions" in record["stopped"] and list(record["stopped_runs"]) == [str(tmp_path)]
