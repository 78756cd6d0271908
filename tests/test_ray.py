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
    from causal_das import executors

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if it were not installed
    with pytest.raises(ValueError, match="pip install -r requirements-ray.txt"):
        executors.import_ray()
