"""The main job follows its inputs like a build system (at smoke sizes, every step of it), and its
first run writes every step's files.

A second run reuses everything. A run after the GPT-2 changed, as it does when another machine
(another floating-point order) trained it, recomputes exactly what depends on that network: the two
sweeps, their evaluations, the graphs and the analyses of the graphs; the MLP and CNN experiments
and the network itself are reused. And sweep cells that another machine computed on its own network
(records naming another fingerprint, as committed results once did) are recomputed, not refused:
before results followed their inputs, that rerun stopped at the first sweep ("computed with other
settings") and left a fresh machine without results.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GPT2_DOWNSTREAM = ("gpt2_das_arithmetic", "gpt2_das_simple", "gpt2_evaluate", "graphs", "cliques", "divide", "classify")
UNTOUCHED = ("hierarchical_equality", "pattern_matching", "wrong_causal_graph_ablation", "gpt2_model",
             "cnn_model", "cnn_single", "cnn_flat", "cnn_multi", "cnn_layers", "cnn_layers_fc1")
# The reruns after a change: what depends on the network and what does not (the position sweep's
# chain, which depends on it the same way, is left out: its recomputation would double the time).
RERUN = (*GPT2_DOWNSTREAM, *UNTOUCHED)


def pipeline(results: Path, *only: str) -> dict[str, str]:
    """Runs the quick main job (its `only` steps if given); returns {step: its console output} (""
    for the whole output)."""
    proc = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "--quick", "--results_path", str(results),
                           *(("--only", *only) if only else ())],
                          capture_output=True, text=True, cwd=ROOT, timeout=900, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps, name = {}, None
    for line in proc.stdout.splitlines():
        if match := re.match(r"== (\w+): ", line):
            name = match.group(1)
            steps[name] = ""
        elif name is not None and not line.startswith("== "):
            steps[name] += line + "\n"
    return {**steps, "": proc.stdout}


def freshness_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("reusing", "recomputing", "retraining"))]


def as_if_trained_elsewhere(model_dir: Path) -> None:
    """The GPT-2 another machine would have trained with the same flags: slightly different weights,
    with the training record that goes with them."""
    from safetensors.torch import load_file, save_file

    from causal_das.runtime.provenance import model_fingerprint
    from causal_das.studies import arithmetic_decoder

    weights = load_file(str(model_dir / "model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    weights = {k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, str(model_dir / "model.safetensors"))
    record = json.loads((model_dir / "training.json").read_text())
    record["model_fingerprint"] = model_fingerprint(arithmetic_decoder.load_classifier(model_dir)[0])
    (model_dir / "training.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The quick main job from an empty results path. The tests of what it wrote come first in this
    module: `runs` reruns the job on the same path after changing the network."""
    results = tmp_path_factory.mktemp("main_job")
    return results, pipeline(results)


def test_a_fresh_run_says_nothing_about_reuse(first_run):
    _, first = first_run
    for step, output in first.items():
        assert freshness_lines(output) == [], (step, freshness_lines(output))


def test_the_gpt2_and_disentangling_steps_write_their_files(first_run):
    results, first = first_run
    gpt2_dir = results / "gpt2"
    assert "main job finished" in first[""] and "HELD-OUT accuracy" in first[""] and "predicted" in first[""]
    assert (gpt2_dir / "model" / "training.json").is_file() and (gpt2_dir / "model" / "training_curves.png").is_file()
    for family, n_models in (("arithmetic", 3), ("simple", 4)):
        summary = json.loads((gpt2_dir / f"das_{family}" / "summary.json").read_text())
        assert len(summary["cells"]) == n_models * 2 * 2  # layers 0 and 2, k = 5 (256 scaled to n = 96) and the full swap
        assert (gpt2_dir / f"das_{family}" / "evaluation.json").is_file()
        assert (gpt2_dir / f"das_{family}" / "iia_per_layer.png").stat().st_size > 1000
    for figure in ("sanity_check.png", "empirical.png", "overview.png", "disentangling/graphs.png", "disentangling/cliques.png",
                   "disentangling/division.png", "disentangling/classification_tree.png"):
        assert (gpt2_dir / figure).stat().st_size > 5000, figure


def test_the_cnn_steps_write_their_cells(first_run):
    results, _ = first_run
    summary = json.loads((results / "cnn" / "das" / "summary.json").read_text())
    names = {c["cell"] for c in summary["cells"]}
    assert {"single_circularity+colour_conv1_rows_k64", "single_circularity+colour_conv1_flat_k64",
            "multi_circularity+colour_conv1_rows_k64", "single_area_fc1_rows_k1"} <= names
    assert set(summary["layer_table"]) == {"circularity", "colour", "area"}
    assert set(summary["layer_table"]["colour"]) == {"conv1", "conv3", "fc1"}


@pytest.fixture(scope="module")
def runs(first_run):
    results, first = first_run
    second = pipeline(results)
    graphs_before = json.loads((results / "gpt2" / "disentangling" / "graphs.json").read_text())
    as_if_trained_elsewhere(results / "gpt2" / "model")
    third = pipeline(results, *RERUN)
    return results, first, second, third, graphs_before


def test_a_second_run_reuses_every_result(runs):
    _, first, second, *_ = runs
    for step, output in second.items():
        lines = freshness_lines(output)
        if step in ("", "gpt2_figures", "predict", "predict_best_sites", "compare"):  # figures and a table from JSON: nothing to reuse
            continue
        if "stopped: " in output:  # nothing real to disentangle at (the quick sizes' network): it stopped the first time too
            assert step.endswith("_best_sites") and "stopped: " in first[step], (step, output)
            continue
        assert lines and all(line.startswith("reusing") for line in lines), (step, lines)
        assert len(lines) <= (2 if step == "gpt2_evaluate" else 1), (step, lines)  # the evaluation covers two sweeps


def test_after_the_network_changed_exactly_its_dependents_are_recomputed(runs):
    results, _, _, third, graphs_before = runs
    for step in UNTOUCHED:
        lines = freshness_lines(third[step])
        assert lines and all(line.startswith("reusing") for line in lines), (step, lines)
    expected = {
        "gpt2_das_arithmetic": "recomputing 12 of 12 cells: the network changed",
        "gpt2_das_simple": "recomputing 16 of 16 cells: the network changed",
        "graphs": "recomputing 3 of 3 graphs: their sweep cells and the trained W changed",
        "cliques": "recomputing cliques.json: the IIA graphs changed",
        "divide": "recomputing division.json: the IIA graphs changed",
    }
    for step, line in expected.items():
        assert freshness_lines(third[step]) == [line], (step, freshness_lines(third[step]))
    assert all(line.startswith("recomputing") and "the network" in line for line in freshness_lines(third["gpt2_evaluate"]))
    assert freshness_lines(third["classify"])[0].startswith("recomputing classification.json: ")
    # The recomputed results are those of the changed network, not the old ones.
    summary = json.loads((results / "gpt2" / "das_arithmetic" / "summary.json").read_text())
    training = json.loads((results / "gpt2" / "model" / "training.json").read_text())
    assert summary["model_fingerprint"] == training["model_fingerprint"]
    graphs_after = json.loads((results / "gpt2" / "disentangling" / "graphs.json").read_text())
    assert [g["mean_iia"] for g in graphs_after["graphs"]] != [g["mean_iia"] for g in graphs_before["graphs"]]


def computed_elsewhere(sweep: Path) -> None:
    """Makes every cell of a sweep look computed on another machine's network: its record names
    another fingerprint (where the record keeps it: `inputs`, or `settings` in older records)."""
    for path in (sweep / "cells").rglob("*.json"):
        record = json.loads(path.read_text())
        where = record["inputs"] if "model_fingerprint" in record.get("inputs", {}) else record["settings"]
        where["model_fingerprint"] = "0123456789abcdef"
        path.write_text(json.dumps(record))


def test_cells_computed_on_another_machines_network_are_recomputed_not_refused(runs):
    results, *_ = runs
    graphs_before = (results / "gpt2" / "disentangling" / "graphs.json").read_text()
    computed_elsewhere(results / "gpt2" / "das_arithmetic")
    steps = pipeline(results, *RERUN)
    assert freshness_lines(steps["gpt2_das_arithmetic"]) == ["recomputing 12 of 12 cells: the network changed"]
    # Recomputed here on the same network, the cells and their W come out identical: nothing below them is stale.
    for step in ("gpt2_das_simple", "gpt2_evaluate", "graphs", "cliques", "divide", "classify", *UNTOUCHED):
        lines = freshness_lines(steps[step])
        assert lines and all(line.startswith("reusing") for line in lines), (step, lines)
    assert json.loads((results / "gpt2" / "disentangling" / "graphs.json").read_text())["graphs"] == json.loads(graphs_before)["graphs"]
