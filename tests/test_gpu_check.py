"""benchmarks/gpu_check.py, the one command that checks a GPU machine, run on the CPU at tiny sizes so
that it never rots: its JSON's structure, every check passing, measured numbers on the right side of
their tolerances (and not trivially so), and the judging and the estimate on inputs with a known
answer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))

import gpu_check  # noqa: E402
import gpu_check_cases as cases  # noqa: E402
import gpu_check_speed as speed  # noqa: E402

from causal_das.das import engine  # noqa: E402
from causal_das.studies import arithmetic_cells  # noqa: E402
from causal_das.tasks import arithmetic  # noqa: E402

# One site of each kind (MLP, CNN rows, GPT-2's own site at some tokens, a decoder pyvene maps and one
# it does not), both engines, one script: about a minute on one core.
SITES = ["mlp", "cnn_rows", "gpt2_positions", "llama", "gpt_neox"]
SCRIPT_STEP = "hierarchical_equality"


def run(*args, out: Path):
    # One thread: the check's many tiny networks gain nothing from more, and the machine is shared.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    proc = run("--device", "cpu", "--shape", "tiny", "--sites", *SITES, "--scripts", SCRIPT_STEP, "--fast_steps", "2", "--pyvene_steps", "1",
               out=out)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def test_report_has_every_part_and_passes(checked):
    report, stdout = checked
    for key in ("config", "cuda", "tolerances", "equivalence", "scripts", "speed", "thesis_sweep_estimate", "goals", "versions", "git_commit"):
        assert key in report, key
    assert report["passed"] is True and report["device"] == "cpu"
    assert report["cuda"]["torch"] == torch.__version__ and report["cuda"]["cuda_build"] == torch.version.cuda
    assert report["goals"]["judged"] is False  # the goals are for the thesis shape on a GPU
    assert "PASSED" in stdout and "[gpu_check" in stdout


def test_every_site_engine_and_precision_is_checked_against_the_cpu(checked):
    report, _ = checked
    rows = {(r["site"], r["engine"], r.get("precision")): r for r in report["equivalence"]}
    expected = {(site, "fast", p) for site in SITES for p in ("fp32", "bf16")}
    expected |= {(site, "pyvene", "fp32") for site in SITES if site != "gpt_neox"}
    expected |= {("gpt_neox", "pyvene", None)}
    assert set(rows) == expected
    assert rows[("gpt_neox", "pyvene", None)]["status"] == "not applicable"
    for key, row in rows.items():
        if row["status"] == "not applicable":
            continue
        assert row["status"] == "pass", (key, row)
        precision = row["precision"]
        assert row["orthonormality"] <= cases.ORTHONORMALITY_TOLERANCE
        assert row["predictions_equal"] >= cases.MIN_EQUAL_PREDICTIONS[precision]
        assert row["predictions_equal_fixed_w"] >= cases.MIN_EQUAL_PREDICTIONS[precision]
        if precision == "fp32":
            # The same code on the same CPU: bit for bit the reference run.
            assert row["w_max_abs_diff"] == 0.0 and row["predictions_equal"] == 1.0, key
        else:
            # bf16 really ran in bf16 (W moved off the fp32 run), and stayed within its bound.
            assert 0.0 < row["w_max_abs_diff"] <= cases.W_TOLERANCE["bf16"], key
        # Determinism is measured once per site: the fast engine at the default precision (fp32 here).
        assert row.get("repeat_identical") is (True if (row["engine"], precision) == ("fast", "fp32") else None), key
        if row["engine"] == "fast":
            # The engine's interchange is fp32 (rounding, so not zero) in every precision.
            assert 0.0 < row["interchange_rel_error"] <= cases.INTERCHANGE_TOLERANCE, key
        else:
            assert row["interchange_rel_error"] is None


def test_the_script_ran_on_the_device(checked):
    report, _ = checked
    (row,) = report["scripts"]
    assert row["name"] == SCRIPT_STEP and row["rc"] == 0 and row["status"] == "pass" and row["seconds"] > 0
    assert row["arguments"][-4:] == ["--device", "cpu", "--precision", "auto"] and "--quick" in row["arguments"]


def test_speed_and_the_estimate_follow_the_preset(checked):
    report, _ = checked
    measured = report["speed"]
    assert measured["shape"] == "tiny" and measured["n"] == 6 * speed.SHAPES["tiny"]["width"]
    assert measured["k"] == arithmetic_cells.scaled_k(arithmetic_cells.THESIS_K[:1], measured["n"])[0]
    preset = speed.thesis_preset()
    assert set(measured["batches"]) == {"128", str(preset.batch_size)}
    for batch in measured["batches"].values():
        assert [r["layer"] for r in batch["rows"]] == list(range(speed.SHAPES["tiny"]["n_layers"]))
        assert all(r["fast"] > 0 and r["pyvene"] > 0 for r in batch["rows"])
        assert abs(batch["speedup_summed"] - batch["pyvene_sum"] / batch["fast_sum"]) <= 1e-9 * batch["speedup_summed"]
    estimate = report["thesis_sweep_estimate"]
    ks = arithmetic_cells.thesis_k(measured["n"])
    assert estimate["preset"]["k"] == list(ks)
    for family, numbers in estimate["families"].items():
        models = len(arithmetic.get_family(family))
        assert numbers["trained_cells"] == models * (len(ks) - 1) * measured["n_layers"]  # k = n is a full swap
        assert numbers["seconds"] > 0
    steps = engine.n_steps(preset.n_training, preset.das_config(ks[0]))
    assert set(estimate["preset"]["steps_per_cell"].values()) == {steps}


def test_the_estimate_adds_up_on_known_times():
    """One second a step at every layer and k, nothing else: the sweep takes cells x steps x networks."""
    n_layers, n = 3, 6 * 8
    ks = arithmetic_cells.thesis_k(n)
    trained = [k for k in ks if k < n]
    rows = [{"layer": layer, "fast": 1.0, "floor": 0.0, "pyvene": 2.0} for layer in range(n_layers)]
    measured = {"n": n, "k": trained[0], "n_layers": n_layers, "layers": list(range(n_layers)), "cache_seconds": 0.0,
                "batches": {str(speed.thesis_preset().batch_size): speed.summarise(rows, n_layers)},
                "k_scaling": {"relative": {str(k): 1.0 for k in trained}}, "predict_seconds": {str(layer): 0.0 for layer in range(n_layers)}}
    estimate = speed.estimate_thesis_sweep(measured)
    preset = speed.thesis_preset()
    steps = engine.n_steps(preset.n_training, preset.das_config(trained[0]))
    networks = 2 if preset.control == "random_init" else 1  # the random-init control repeats every cell
    for family, numbers in estimate["families"].items():
        cells = len(arithmetic.get_family(family)) * len(trained) * n_layers
        assert numbers["seconds"] == cells * steps * networks
    total_models = sum(len(arithmetic.get_family(f)) for f in arithmetic.FAMILIES)
    assert estimate["pyvene_training_seconds_both_families"] == 2.0 * total_models * len(trained) * n_layers * steps * networks


JUDGED = {"w_max_abs_diff": 0.0, "predictions_equal": 1.0, "predictions_equal_fixed_w": 1.0, "orthonormality": 1e-7, "interchange_rel_error": 1e-7}


@pytest.mark.parametrize(("change", "phrase"), [
    ({"w_max_abs_diff": 2 * cases.W_TOLERANCE["fp32"]}, "max |dW|"),
    ({"predictions_equal": cases.MIN_EQUAL_PREDICTIONS["fp32"] - 0.01}, "predictions equal <"),
    ({"predictions_equal_fixed_w": cases.MIN_EQUAL_PREDICTIONS["fp32"] - 0.01}, "with the CPU's W"),
    ({"orthonormality": 10 * cases.ORTHONORMALITY_TOLERANCE}, "W^T W - I"),
    ({"interchange_rel_error": 10 * cases.INTERCHANGE_TOLERANCE}, "not fp32"),
    ({"w_max_abs_diff": float("nan")}, "max |dW|"),
])
def test_judge_fails_what_is_out_of_tolerance(change, phrase):
    assert cases.judge("fp32", JUDGED) == []
    (failure,) = cases.judge("fp32", {**JUDGED, **change})
    assert phrase in failure


def test_bf16_is_judged_by_its_own_bounds():
    looser = {**JUDGED, "w_max_abs_diff": cases.W_TOLERANCE["bf16"] / 2, "predictions_equal": cases.MIN_EQUAL_PREDICTIONS["bf16"]}
    assert cases.judge("bf16", looser) == [] and len(cases.judge("fp32", looser)) == 2
    # pyvene's W trained on another device is not comparable (None): only what is comparable is judged.
    assert cases.judge("fp32", {**JUDGED, "w_max_abs_diff": None, "predictions_equal": None, "interchange_rel_error": None}) == []


def test_every_script_is_in_the_default_selection():
    scripts = {script for _, script, _ in gpu_check.script_steps(["all"], ROOT / "results")}
    assert scripts == {"reproduce_das_experiment.py", "mlp/pattern_matching_das.py", "mlp/wrong_causal_graph_ablation_study.py", "train_gpt2.py",
                       "run_das.py", "evaluate_das.py", "visualizations.py", "disentangle_causal_models.py", "cnn/train_cnn.py", "cnn/ellipse_das.py"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the no-CUDA path does not apply")
def test_without_a_gpu_it_says_how_to_get_one_and_fails(tmp_path):
    out = tmp_path / "report.json"
    proc = run(out=out)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(out.read_text())
    assert report["passed"] is False and "equivalence" not in report
    advice = report["cuda"]["advice"]
    assert advice in proc.stdout
    if torch.version.cuda is None:
        assert "download.pytorch.org/whl/" in advice and torch.__version__.split("+")[0] in advice


def test_an_unknown_script_step_is_one_line(tmp_path):
    out = tmp_path / "report.json"
    proc = run("--device", "cpu", "--scripts", "no_such_step", out=out)
    assert proc.returncode == 2 and "no_such_step" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
