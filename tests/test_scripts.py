"""The scripts end to end on the real CLI (--quick), determinism, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "hierarchical_equality": ROOT / "reproduce_das_experiment.py",
    "pattern_matching": ROOT / "mlp" / "pattern_matching_das.py",
    "ablation": ROOT / "mlp" / "wrong_causal_graph_ablation_study.py",
}
# Timing fields and where the files were written are allowed to differ between two runs.
# "threads" (in `compute`): a worker process records its one thread, the run beside it its own.
TIMING_KEYS = {"seconds", "train_seconds", "cells_in_pass", "command", "results_path", "threads"}


def run(script, *args, check=True):
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def strip_timing(value):
    if isinstance(value, dict):
        return {k: strip_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [strip_timing(v) for v in value]
    return value


def files_under(path: Path) -> dict:
    return {p.relative_to(path): p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} if path.exists() else {}


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("he")
    run(SCRIPTS["hierarchical_equality"], "--quick", "--results_path", out)
    return out


def test_layer_sweep_writes_json_png_and_interventions(quick_sweep):
    result = json.loads((quick_sweep / "results.json").read_text())
    assert set(result["layers"]) == {"0", "1", "2"}
    layer = result["layers"]["0"]
    assert set(layer["by_subset"]) == {"{WX}", "{YZ}", "{WX,YZ}"}
    assert {"majority", "copy_base_label", "copy_source_label", "network_no_intervention"} <= set(layer["baselines"])
    assert "control_random_init" in layer
    assert result["subspaces"] == {"WX": [0, 7], "YZ": [8, 15]}
    assert result["versions"]["torch"] and "config" in result and "git_commit" in result
    assert (quick_sweep / "iia_per_layer.png").stat().st_size > 1000
    for layer in "012":
        assert (quick_sweep / "interventions" / f"L{layer}" / "weights.safetensors").is_file()
        assert (quick_sweep / "cells" / f"L{layer}.json").is_file()


def test_same_seed_same_files(quick_sweep, tmp_path):
    run(SCRIPTS["hierarchical_equality"], "--quick", "--results_path", tmp_path)
    first = strip_timing(json.loads((quick_sweep / "results.json").read_text()))
    second = strip_timing(json.loads((tmp_path / "results.json").read_text()))
    assert first == second
    assert (quick_sweep / "interventions/L0/weights.safetensors").read_bytes() == (tmp_path / "interventions/L0/weights.safetensors").read_bytes()
    run(SCRIPTS["hierarchical_equality"], "--quick", "--seed", "1", "--results_path", tmp_path)
    assert strip_timing(json.loads((tmp_path / "results.json").read_text())) != first


def test_evaluate_saved_reproduces_iia(quick_sweep):
    proc = run(SCRIPTS["hierarchical_equality"], "--evaluate_saved", "--results_path", quick_sweep)
    evaluation = json.loads((quick_sweep / "evaluation.json").read_text())
    assert evaluation["matches_saved"] is True, proc.stdout


def test_pattern_matching_quick_has_its_own_alignment_per_layer(tmp_path):
    run(SCRIPTS["pattern_matching"], "--quick", "--layers", "0", "2", "--export_pyvene", "--results_path", tmp_path)
    result = json.loads((tmp_path / "results.json").read_text())
    assert set(result["layers"]) == {"0", "2"} and result["causal_model"] == "ABAB"
    w0 = (tmp_path / "interventions/L0/weights.safetensors").read_bytes()
    w2 = (tmp_path / "interventions/L2/weights.safetensors").read_bytes()
    assert w0 != w2
    assert json.loads((tmp_path / "interventions/L2/config.json").read_text())["site"] == "mlp.block_output.L2"
    # The pyvene-format export loads back into pyvene and reproduces the fast engine's logits.
    import torch

    from causal_das.das import engine
    from causal_das.das import pyvene_engine as pe
    from causal_das.models import mlp
    from causal_das.models.mlp import MLPSite

    site = MLPSite(mlp.load(tmp_path / "model"), 2)
    intervenable, spec = pe.load_exported(site, tmp_path / "interventions/L2/pyvene")
    trained = engine.TrainedIntervention.load(tmp_path / "interventions/L2")
    x = torch.randn(12, 16)
    sources = torch.stack([x[4:8], x[8:12]], dim=1)
    with torch.no_grad():
        reference = pe.intervened_logits(intervenable, spec, (8, 8), x[:4], sources)
        ours = site.suffix(trained.module()(site.prefix(x[:4]), site.prefix(sources.flatten(0, 1)).view(4, 2, 16)))
    assert (reference - ours).abs().max().item() < 1e-5


def test_ablation_quick_writes_table_and_heatmap(tmp_path):
    run(SCRIPTS["ablation"], "--quick", "--results_path", tmp_path)
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["models"] == ["ABAB", "AABB(AND)", "ABBA"]
    assert len(result["iia"]) == 3 and all(len(row) == 3 for row in result["iia"])
    assert all(0 <= v <= 1 for row in result["iia"] for v in row)
    assert len(result["control_random_init_iia"]) == 3
    assert (tmp_path / "iia_heatmap.png").stat().st_size > 1000


def test_pyvene_engine_runs_from_the_cli(tmp_path):
    run(SCRIPTS["pattern_matching"], "--quick", "--engine", "pyvene", "--layers", "1", "--control", "none", "--results_path", tmp_path)
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["config"]["engine"] == "pyvene" and "control_random_init" not in result["layers"]["1"]


BAD_INPUTS = [
    ("hierarchical_equality", ["--engine", "nnsight"], "invalid choice"),
    ("hierarchical_equality", ["--subspace_dims", "8", "9"], "need 17 dimensions"),
    ("hierarchical_equality", ["--subspace_dims", "8"], "needs 2 sizes"),
    ("hierarchical_equality", ["--layers", "3"], "do not exist"),
    ("pattern_matching", ["--layers", "-1"], "do not exist"),
    ("ablation", ["--layer", "7"], "do not exist"),
    ("hierarchical_equality", ["--das_lr", "0"], "positive"),
    ("hierarchical_equality", ["--das_epochs", "two"], "invalid positive_int"),
    ("ablation", ["--control", "shuffled"], "invalid choice"),
]


@pytest.mark.parametrize(("script", "args", "message"), BAD_INPUTS)
def test_bad_input_one_line_no_files(tmp_path, script, args, message):
    out = tmp_path / "results"
    proc = run(SCRIPTS[script], "--quick", "--results_path", out, *args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not files_under(out)


def test_results_path_that_is_a_file(tmp_path):
    target = tmp_path / "results"
    target.write_text("not a directory")
    proc = run(SCRIPTS["hierarchical_equality"], "--quick", "--results_path", target, check=False)
    assert proc.returncode == 2 and "is a file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert target.read_text() == "not a directory"


def test_corrupted_saved_intervention(quick_sweep, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(quick_sweep, copy)
    (copy / "evaluation.json").unlink(missing_ok=True)
    weights = copy / "interventions/L1/weights.safetensors"
    weights.write_bytes(b"\x00garbage")
    before = files_under(copy)
    proc = run(SCRIPTS["hierarchical_equality"], "--evaluate_saved", "--results_path", copy, check=False)
    assert proc.returncode == 2 and "corrupt" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert files_under(copy) == before


def test_unknown_task_in_config():
    from causal_das.studies.four_objects_mlp import MLPExperimentConfig

    with pytest.raises(ValueError, match="unknown task"):
        MLPExperimentConfig(task="aabbcc").validate()
    with pytest.raises(ValueError, match="unknown engine"):
        MLPExperimentConfig(engine="jax").validate()
