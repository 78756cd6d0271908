"""The Ray executor: a tiny sweep, its evaluation and its graphs on a local Ray instance with 2 CPUs
write the same files as the local executor (JSON apart from timing fields, W and graphs byte for byte)."""

import subprocess
import sys

import pytest
from test_faults import ROOT, SWEEP, contents

pytest.importorskip("ray", reason="the Ray executor is optional: pip install -r requirements-ray.txt")


def test_missing_ray_is_one_clear_line(monkeypatch):
    from causal_das.runtime import executors

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if it were not installed
    with pytest.raises(ValueError, match="pip install -r requirements-ray.txt"):
        executors.import_ray()


def test_ray_executor_writes_the_local_executors_files(tmp_path):
    """run_das.py, evaluate_das.py and disentangle_causal_models.py graphs on Ray give the local
    executor's files (one network and one sweep serve all three; the graphs at the last layer, whose
    suffix is only the head)."""
    model = tmp_path / "gpt2"
    subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--output_dir", str(model), "--width", "16", "--n_layers", "3",
                    "--n_heads", "2", "--epochs", "1"], check=True, capture_output=True, cwd=ROOT, timeout=600)
    sweeps = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        proc = subprocess.run([sys.executable, str(ROOT / "run_das.py"), "--model_path", str(model), "--results_path", str(out), *SWEEP,
                               "--executor", executor, "--ray_cpus", "2"], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stderr
        sweeps[executor] = contents(out)
    assert len([k for k in sweeps["ray"] if k.startswith("cells/")]) == 9
    assert sweeps["ray"] == sweeps["local"]
    sweep, outputs = tmp_path / "local", {}
    for executor in ("local", "ray"):
        flags = ["--executor", executor, "--ray_cpus", "2"]
        evaluation = subprocess.run([sys.executable, str(ROOT / "evaluate_das.py"), "--results_path", str(sweep), "--n_testing", "100",
                                     "--output_name", f"evaluation_{executor}.json", *flags], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert evaluation.returncode == 0, evaluation.stderr
        graphs = subprocess.run([sys.executable, str(ROOT / "disentangle_causal_models.py"), "graphs", "--sweep_path", str(sweep),
                                 "--results_path", str(tmp_path / f"graphs_{executor}"), "--layers", "2", *flags],
                                capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert graphs.returncode == 0, graphs.stderr
        outputs[executor] = (contents(sweep)[f"evaluation_{executor}.json"], contents(tmp_path / f"graphs_{executor}"))
    assert len([k for k in outputs["ray"][1] if k.endswith(".npz")]) == 3
    assert outputs["ray"] == outputs["local"]
