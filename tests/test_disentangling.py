"""Disentangling: IIA graphs against single-pair evaluations, cliques, division, classification, the
scripts end to end (visualizations.py, disentangle_causal_models.py) and their bad inputs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_das.analysis import classification, cliques, division
from causal_das.das import engine
from causal_das.experiments import arithmetic_evaluation
from causal_das.studies import arithmetic_cells, arithmetic_decoder, graph_files
from causal_das.studies.arithmetic_analysis import FEATURES, INPUTS, features
from causal_das.tasks import arithmetic as A

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--width", "16", "--n_layers", "3", "--n_heads", "2"]


def run(script, *args, check=True):
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def one_line_error(proc, *fragments):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A tiny trained GPT-2 and an arithmetic sweep at its last two layers (k=4 and the full swap)."""
    root = tmp_path_factory.mktemp("disentangle")
    run("train_gpt2.py", "--output_dir", root / "model", "--epochs", "3", *TINY)
    run("run_das.py", "--model_path", root / "model", "--causal_model_type", "arithmetic", "--results_path", root / "das",
        "--layers", "1", "2", "--low_rank_dims", "4", "--n_training", "512", "--n_testing", "200", "--epochs", "1", "--control", "none")
    return root


@pytest.fixture(scope="module")
def analysis(sweep):
    out = sweep / "disentangling"
    proc = run("disentangle_causal_models.py", "graphs", "--sweep_path", sweep / "das", "--results_path", out)
    assert "mean IIA" in proc.stdout
    return out


def test_graph_cells_equal_single_pair_evaluations_in_both_orientations(sweep, analysis):
    model, tokenizer = arithmetic_decoder.load_classifier(sweep / "model")
    ids = arithmetic_decoder.encode_prompts(tokenizer)
    rng = np.random.default_rng(1)
    for name in ("(X+Y)+Z", "X+(Y+Z)"):
        graph = graph_files.load_graph(analysis / "graphs" / f"{arithmetic_cells.cell_name(name, 1, 4)}.json")
        trained = engine.TrainedIntervention.load(sweep / "das" / "interventions" / arithmetic_cells.cell_name(name, 1, 4))
        site = arithmetic_decoder.site(model, 1)
        pairs = rng.choice(A.N_TRIPLES, size=(6, 2), replace=False)
        # Include a pair the graph scores 1 and one it scores 0 when there are any, so both outcomes are compared.
        for wanted in (True, False):
            hits = np.argwhere(graph.correct == wanted)
            hits = hits[hits[:, 0] != hits[:, 1]]
            if len(hits):
                pairs = np.vstack([pairs, hits[:1]])
        for i, j in pairs:
            base, source = np.array([i, j]), np.array([j, i])  # both orientations
            data = engine.InterchangeData(ids, torch.as_tensor(base), torch.as_tensor(source)[:, None], torch.zeros(2, dtype=torch.long))
            predicted = engine.predict(site, trained, data, "fast").numpy()  # prefix computed afresh, no cached states
            expected = predicted == A.counterfactual_labels(A.get_model(name), base, source)
            assert graph.correct[i, j] == expected[0] and graph.correct[j, i] == expected[1]
            assert graph.weight[i, j] == graph.weight[j, i] == expected.mean()


def test_graph_mean_iia_equals_the_all_pairs_evaluation(sweep, analysis):
    record = json.loads((analysis / "graphs" / f"{arithmetic_cells.cell_name('(X+Z)+Y', 2, 4)}.json").read_text())
    evaluation = arithmetic_evaluation.evaluate_saved(sweep / "das", ("arithmetic",), 0, True, 0, cell_filter=lambda c: c["layer"] == 2 and c["k"] == 4
                                   and c["causal_model"] == "(X+Z)+Y")
    assert record["mean_iia"] == pytest.approx(evaluation["cells"][0]["iia"]["(X+Z)+Y"], abs=1e-12)
    fractions = record["weight_fractions"]
    assert sum(fractions.values()) == pytest.approx(1.0)


def test_graphs_resume_and_detect_truncated_or_missing_arrays(sweep, analysis, tmp_path):
    proc = run("disentangle_causal_models.py", "graphs", "--sweep_path", sweep / "das", "--results_path", analysis)
    assert "recomputing" not in proc.stdout
    index = json.loads((analysis / "graphs.json").read_text())
    assert len(index["graphs"]) == 6 and index["k"] == 4
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(analysis, copy)
    array = copy / "graphs" / "PXY_Z" / "L01_k4.npz"
    array.write_bytes(array.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated"):
        graph_files.load_graph(array.with_suffix(".json"))
    one_line_error(run("disentangle_causal_models.py", "cliques", "--results_path", copy, check=False), "truncated", "L01_k4.npz")
    array.unlink()
    one_line_error(run("disentangle_causal_models.py", "divide", "--faithfulness", "0.8", "--results_path", copy, check=False),
                   "missing", "L01_k4.npz")
    # Rerunning graphs repairs the copy: the missing array's graph is recomputed, equal to the original.
    proc = run("disentangle_causal_models.py", "graphs", "--sweep_path", sweep / "das", "--results_path", copy)
    assert "recomputing" in proc.stdout
    assert np.array_equal(graph_files.load_graph(array.with_suffix(".json")).correct, graph_files.load_graph(analysis / "graphs" / "PXY_Z" / "L01_k4.json").correct)


def test_analysis_steps_end_to_end(analysis):
    proc = run("disentangle_causal_models.py", "cliques", "--results_path", analysis)
    assert "coverage" in proc.stdout
    record = json.loads((analysis / "cliques.json").read_text())
    for g in record["graphs"]:
        graph = graph_files.load_graph(analysis / "graphs" / f"{arithmetic_cells.cell_name(g['causal_model'], g['layer'], g['k'])}.json")
        seen = set()
        for clique in g["cliques"]:
            nodes = clique["nodes"]
            assert len(nodes) >= 5 and not seen & set(nodes)
            seen |= set(nodes)
            block = graph.agreement[np.ix_(nodes, nodes)]
            assert block.sum() == len(nodes) * (len(nodes) - 1)  # every pair joined by a weight-1 edge
    run("disentangle_causal_models.py", "divide", "--faithfulness", "0.75", "--results_path", analysis)
    result = json.loads((analysis / "division.json").read_text())
    for layer in result["layers"]:
        members = [i for m in result["order"] for i in layer["sets"][m]] + layer["unexplained"]
        assert sorted(members) == list(range(A.N_TRIPLES))  # each triple in exactly one place
        assert result["rule"] == layer["rule"] == "member" and layer["other_rule"]["rule"] == "mean"
        for m in result["order"]:
            if layer["sets"][m]:
                assert layer["weakest_member_iia"][m] >= 0.75 and layer["mean_pairwise_iia"][m] >= 0.75
            if layer["other_rule"]["sets"][m]:
                assert layer["other_rule"]["mean_pairwise_iia"][m] >= 0.75
    proc = run("disentangle_causal_models.py", "classify", "--results_path", analysis)
    assert "HELD-OUT accuracy" in proc.stdout
    record = json.loads((analysis / "classification.json").read_text())
    assert record["n_heldout"] == 200 and 0 <= record["heldout_accuracy"] <= 1
    proc = run("disentangle_causal_models.py", "predict", "3,7,2", "10+1+4", "--results_path", analysis)
    rows = [line for line in proc.stdout.splitlines() if line.strip().startswith(("3+7+2", "10+1+4"))]
    assert len(rows) == 2
    for name in ("graphs", "cliques", "division", "classification_tree"):
        assert (analysis / f"{name}.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["divide", "--faithfulness", "1.5"], ["--faithfulness", "[0, 1]"]),
        (["divide", "--faithfulness", "-0.1"], ["--faithfulness", "[0, 1]"]),
        (["predict", "11,1,1"], ["1..10"]),
        (["predict", "3,7"], ["1..10"]),
    ],
)
def test_bad_arguments_give_one_line(analysis, args, fragments):
    one_line_error(run("disentangle_causal_models.py", *args, "--results_path", analysis, check=False), *fragments)


def test_results_path_without_cells_or_graphs(tmp_path):
    one_line_error(run("disentangle_causal_models.py", "graphs", "--sweep_path", tmp_path, "--results_path", tmp_path / "out", check=False),
                   "no run_das.py results")
    (tmp_path / "summary.json").write_text(json.dumps({"cells": [], "causal_models": [], "layers": [], "n": 6}))
    one_line_error(run("disentangle_causal_models.py", "graphs", "--sweep_path", tmp_path, "--results_path", tmp_path / "out", check=False),
                   "lists no DAS cells")
    for command in (["cliques"], ["divide", "--faithfulness", "0.5"], ["classify"], ["predict", "1,2,3"]):
        one_line_error(run("disentangle_causal_models.py", *command, "--results_path", tmp_path / "none", check=False), "first")
    assert not list((tmp_path / "none").glob("*.json")) if (tmp_path / "none").exists() else True


def test_visualizations_from_json_only(sweep, tmp_path):
    import shutil

    root = tmp_path / "gpt2"
    shutil.copytree(sweep / "das", root / "das_arithmetic", ignore=shutil.ignore_patterns("interventions"))
    (root / "model").mkdir()
    shutil.copy(sweep / "model" / "training.json", root / "model" / "training.json")
    proc = run("visualizations.py", "--experiment", "sanity_check", "overview", "training", "--results_path", root, "--formats", "png", "pdf")
    assert "wrote" in proc.stdout
    for name in ("sanity_check.png", "sanity_check.pdf", "overview.png", "model/training_curves.png"):
        assert (root / name).stat().st_size > 5_000
    one_line_error(run("visualizations.py", "--experiment", "empirical", "--results_path", root, check=False), "das_simple", "run_das.py")
    one_line_error(run("visualizations.py", "--experiment", "all", "--results_path", tmp_path / "nothing", check=False), "not a directory")


def test_peel_cliques_finds_planted_cliques_exactly_and_greedily():
    rng = np.random.default_rng(0)
    n = 60
    adjacency = rng.random((n, n)) < 0.05
    adjacency = adjacency | adjacency.T
    planted = [list(range(0, 9)), list(range(20, 26))]
    for nodes in planted:
        adjacency[np.ix_(nodes, nodes)] = True
    np.fill_diagonal(adjacency, False)
    exact = cliques.peel_cliques(adjacency, min_size=5)
    assert [c["nodes"] for c in exact[:2]] == planted and {c["method"] for c in exact} == {"exact"}
    greedy = cliques.peel_cliques(adjacency, min_size=5, exact_nodes=0)
    assert {c["method"] for c in greedy} == {"greedy"}
    assert greedy[0]["nodes"] == planted[0]



def test_exact_max_clique_is_the_clique_networkx_finds():
    """The bit-set branch and bound returns networkx's own clique (not just one of the same size), so
    peeling, where ties decide what is left for the next clique, matches networkx step for step."""
    import networkx as nx

    rng = np.random.default_rng(1)
    for trial in range(12):
        n = int(rng.integers(20, 90))
        adjacency = rng.random((n, n)) < rng.uniform(0.1, 0.6)
        adjacency = np.triu(adjacency, 1)
        adjacency = adjacency | adjacency.T
        nodes = np.flatnonzero(rng.random(n) < 0.8)  # as after earlier cliques were peeled
        graph = nx.from_numpy_array(adjacency[np.ix_(nodes, nodes)].astype(np.uint8))
        expected, _ = nx.max_weight_clique(graph, weight=None)
        assert cliques.exact_max_clique(adjacency, nodes) == sorted(int(nodes[v]) for v in expected), trial

def test_division_grows_sets_in_order_and_respects_faithfulness():
    weight = np.zeros((A.N_TRIPLES, A.N_TRIPLES), dtype=np.float32)
    block_a, block_b = np.arange(0, 40), np.arange(40, 70)
    weight[np.ix_(block_a, block_a)] = 1.0
    weight[np.ix_(block_b, block_b)] = 1.0
    np.fill_diagonal(weight, 0)
    result = division.divide({"(X+Y)+Z": weight, "X+(Y+Z)": weight}, INPUTS, ["(X+Y)+Z", "X+(Y+Z)"], 1.0)
    assert result["sets"]["(X+Y)+Z"] == block_a.tolist() and result["sets"]["X+(Y+Z)"] == block_b.tolist()
    assert result["sizes"]["unexplained"] == A.N_TRIPLES - 70
    assert result["mean_pairwise_iia"]["(X+Y)+Z"] == pytest.approx(1.0)
    # Below 1 the mean rule keeps growing past the block while the set's mean stays above the
    # threshold; the member rule stops at the block, where every member still holds.
    loose = division.divide({"(X+Y)+Z": weight}, INPUTS, ["(X+Y)+Z"], 0.9, rule="mean")
    assert set(block_a) <= set(loose["sets"]["(X+Y)+Z"]) and len(loose["sets"]["(X+Y)+Z"]) > 40
    assert 0.9 <= loose["mean_pairwise_iia"]["(X+Y)+Z"] < 1.0 and loose["weakest_member_iia"]["(X+Y)+Z"] < 0.9
    assert division.divide({"(X+Y)+Z": weight}, INPUTS, ["(X+Y)+Z"], 0.9)["sets"]["(X+Y)+Z"] == block_a.tolist()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        division.divide({"(X+Y)+Z": weight}, INPUTS, ["(X+Y)+Z"], 1.2)


def test_classifier_learns_a_rule_and_the_stored_tree_predicts_like_sklearn():
    labels = np.where(A.TRIPLES[:, 0] <= 5, "(X+Y)+Z", np.where(A.TRIPLES.sum(1) % 3 == 0, "X+(Y+Z)", "unexplained"))
    correct = np.zeros((A.N_TRIPLES, A.N_TRIPLES), dtype=bool)
    record = classification.classify(labels.tolist(), {"(X+Y)+Z": correct, "X+(Y+Z)": correct}, INPUTS, 0.2, range(1, 6), 5, 0)
    assert record["heldout_accuracy"] == 1.0 and record["n_heldout"] == 200
    held = np.array(record["heldout_triples"])
    assert np.array_equal(classification.predict_with(record["tree"], INPUTS.features[held], FEATURES), labels[held])


def test_splits_that_change_no_prediction_are_merged_into_leaves():
    """sklearn splits wherever the impurity drops, even when both sides keep the same majority; such a
    split is no rule. On labels that are 'unexplained' almost everywhere (a minority class denser where
    X <= 5), the stored tree is one leaf, with no first rule, and predicts like sklearn's tree."""
    rng = np.random.default_rng(0)
    minority = rng.random(A.N_TRIPLES) < np.where(A.TRIPLES[:, 0] <= 5, 0.3, 0.05)
    labels = np.where(minority, "(X+Y)+Z", "unexplained")
    tree, _, _ = classification.fit_tree(features(A.TRIPLES), labels, (1, 2, 3), 5, 0)
    assert tree.tree_.node_count > 1 and set(tree.predict(features(A.TRIPLES))) == {"unexplained"}
    stored = classification.tree_to_json(tree, FEATURES, [str(c) for c in tree.classes_])
    assert len(stored["nodes"]) == 1 and stored["merged_splits"] >= 1
    assert classification.first_split(stored) is None and classification.rules_text(stored) == "|--- class: unexplained\n"
    correct = np.zeros((A.N_TRIPLES, A.N_TRIPLES), dtype=bool)
    record = classification.classify(labels.tolist(), {"(X+Y)+Z": correct}, INPUTS, 0.2, range(1, 4), 5, 0, splits=2)
    assert record["first_split"] is None and record["heldout_accuracy"] == record["heldout_majority_rate"]
    # A deep tree on noisy labels keeps its informative splits and merges the rest, predicting as before.
    noisy = np.where(A.TRIPLES[:, 0] <= 5, "(X+Y)+Z", "X+(Y+Z)")
    noisy[rng.random(A.N_TRIPLES) < 0.15] = "unexplained"
    x = features(A.TRIPLES)
    from sklearn.tree import DecisionTreeClassifier

    deep = DecisionTreeClassifier(max_depth=6, random_state=0).fit(x, noisy)
    stored = classification.tree_to_json(deep, FEATURES, [str(c) for c in deep.classes_])
    assert stored["merged_splits"] > 0 and len(stored["nodes"]) < deep.tree_.node_count
    assert classification.predict_with(stored, x, FEATURES) == deep.predict(x).tolist()
    assert classification.first_split(stored) == "X <= 5.50" and "|--- X <= 5.50" in classification.rules_text(stored)
