"""The Ray executor: a tiny sweep on a local Ray instance with 2 CPUs writes the same files as the
local executor (JSON apart from timing fields, W byte for byte)."""

import subprocess
import sys

import pytest
from test_faults import ROOT, SWEEP, contents

pytest.importorskip("ray", reason="the Ray executor is optional: pip install -r requirements-ray.txt")


def test_ray_executor_writes_the_local_executors_files(tmp_path):
    model = tmp_path / "gpt2"
    subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--output_dir", str(model), "--width", "16", "--n_layers", "3",
                    "--n_heads", "2", "--epochs", "1"], check=True, capture_output=True, cwd=ROOT, timeout=600)
    runs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        proc = subprocess.run([sys.executable, str(ROOT / "run_das.py"), "--model_path", str(model), "--results_path", str(out), *SWEEP,
                               "--executor", executor, "--ray_cpus", "2"], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stderr
        runs[executor] = contents(out)
    assert len([k for k in runs["ray"] if k.startswith("cells/")]) == 9
    assert runs["ray"] == runs["local"]


def test_missing_ray_is_one_clear_line(monkeypatch):
    from causal_das.runtime import executors

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if it were not installed
    with pytest.raises(ValueError, match="pip install -r requirements-ray.txt"):
        executors.import_ray()


def test_ray_executor_for_evaluation_and_graphs(tmp_path):
    """evaluate_das.py and disentangle_causal_models.py graphs on Ray give the local executor's files."""
    model = tmp_path / "gpt2"
    subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--output_dir", str(model), "--width", "16", "--n_layers", "3",
                    "--n_heads", "2", "--epochs", "1"], check=True, capture_output=True, cwd=ROOT, timeout=600)
    sweep = tmp_path / "sweep"
    small = ["--layers", "0", "--low_rank_dims", "4", "--n_training", "128", "--n_testing", "64", "--epochs", "1", "--control", "none"]
    subprocess.run([sys.executable, str(ROOT / "run_das.py"), "--model_path", str(model), "--results_path", str(sweep), *small],
                   check=True, capture_output=True, cwd=ROOT, timeout=600)
    outputs = {}
    for executor in ("local", "ray"):
        flags = ["--executor", executor, "--ray_cpus", "2"]
        evaluation = subprocess.run([sys.executable, str(ROOT / "evaluate_das.py"), "--results_path", str(sweep), "--n_testing", "300",
                                     "--output_name", f"evaluation_{executor}.json", *flags], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert evaluation.returncode == 0, evaluation.stderr
        graphs = subprocess.run([sys.executable, str(ROOT / "disentangle_causal_models.py"), "graphs", "--sweep_path", str(sweep),
                                 "--results_path", str(tmp_path / f"graphs_{executor}"), "--layers", "0", *flags],
                                capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert graphs.returncode == 0, graphs.stderr
        outputs[executor] = (contents(sweep)[f"evaluation_{executor}.json"], contents(tmp_path / f"graphs_{executor}"))
    assert len([k for k in outputs["ray"][1] if k.endswith(".npz")]) == 3
    assert outputs["ray"] == outputs["local"]
