"""Faults: a sweep killed mid-run, a truncated cell, two sweeps on one results path, determinism.

Each compares the final files with those of an uninterrupted run with the same flags and seed:
the cell and summary JSON equal apart from timing fields, the saved W byte for byte.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# "threads" (in `compute`): a worker process records its one thread, the run beside it its own.
TIMING_KEYS = {"seconds", "train_seconds", "cells_in_pass", "command", "results_path", "git_commit", "threads"}
SWEEP = ["--layers", "0", "1", "2", "--low_rank_dims", "4", "--n_training", "384", "--n_testing", "64", "--epochs", "2",
         "--batch_size", "32", "--control", "none", "--seed", "3"]
N_CELLS = 3 * 3  # three arithmetic models x three layers x one k


def sweep_command(model: Path, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "run_das.py"), "--model_path", str(model), "--results_path", str(out), *SWEEP]


def strip_timing(value):
    if isinstance(value, dict):
        return {k: strip_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [strip_timing(v) for v in value]
    return value


def contents(directory: Path) -> dict:
    """Every visible file under `directory`: JSON without timing fields, other files as bytes."""
    out = {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        key = path.relative_to(directory).as_posix()
        out[key] = strip_timing(json.loads(path.read_text())) if path.suffix == ".json" else path.read_bytes()
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "gpt2"
    proc = subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--output_dir", str(out), "--width", "16", "--n_layers", "3",
                           "--n_heads", "2", "--epochs", "1"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory) -> dict:
    """An uninterrupted run; a second one checks determinism across runs."""
    runs = []
    for name in ("first", "second"):
        out = tmp_path_factory.mktemp(name)
        proc = subprocess.run(sweep_command(model, out), capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stderr
        runs.append(contents(out))
    assert len([k for k in runs[0] if k.startswith("cells/")]) == N_CELLS
    return runs


def test_same_flags_and_seed_give_the_same_files(reference):
    first, second = reference
    assert first == second


def finished_cells(out: Path) -> int:
    return len(list((out / "cells").rglob("*.json"))) if (out / "cells").exists() else 0


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(model, reference, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(sweep_command(model, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 300
    while finished_cells(out) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = finished_cells(out)
    assert 2 <= done < N_CELLS, f"the kill came too late to test anything ({done} cells finished)"
    for path in (out / "cells").rglob("*.json"):  # what is there is whole
        assert json.loads(path.read_text())["status"] == "done"
    rerun = subprocess.run(sweep_command(model, out), capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"reusing {done} of {N_CELLS} cells" in rerun.stdout
    assert contents(out) == reference[0]


def test_truncated_cell_is_recomputed(model, reference, tmp_path):
    out = tmp_path / "truncated"
    assert subprocess.run(sweep_command(model, out), capture_output=True, cwd=ROOT, timeout=600).returncode == 0
    victim = sorted((out / "cells").rglob("*.json"))[4]
    victim.write_text(victim.read_text()[:50])
    rerun = subprocess.run(sweep_command(model, out), capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"recomputing 1 of {N_CELLS} cells: some files were corrupt or incomplete" in rerun.stdout and "computed 1 cell(s) here" in rerun.stdout
    assert contents(out) == reference[0]


def test_two_sweeps_on_one_results_path_share_the_cells(model, reference, tmp_path):
    out = tmp_path / "shared"
    procs = [subprocess.Popen(sweep_command(model, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "TQDM_DISABLE": "1"}) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    # A run that started after the other had finished everything computes nothing and says so.
    computed = [int(m.group(1)) if (m := re.search(r"computed (\d+) cell\(s\) here", stdout)) else 0 for stdout, _ in outputs]
    assert sum(computed) == N_CELLS, f"cells computed per run: {computed}; each cell must be computed exactly once"
    assert contents(out) == reference[0]


def test_an_interrupted_evaluation_resumes_from_its_finished_cells(model, tmp_path):
    out = tmp_path / "evaluated"
    assert subprocess.run(sweep_command(model, out), capture_output=True, cwd=ROOT, timeout=600).returncode == 0
    evaluate = [sys.executable, str(ROOT / "evaluate_das.py"), "--results_path", str(out), "--n_testing", "200"]
    first = subprocess.run(evaluate, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert first.returncode == 0, first.stderr
    expected = strip_timing(json.loads((out / "evaluation.json").read_text()))
    kept = sorted((out / "evaluations").rglob("*.json"))
    assert len(kept) == N_CELLS
    # What a run killed after seven cells leaves, plus one cell file cut short.
    kept[0].unlink()
    kept[1].write_text(kept[1].read_text()[:40])
    rerun = subprocess.run(evaluate, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"reusing {N_CELLS - 2} of {N_CELLS} cell evaluations" in rerun.stdout
    assert f"recomputing 1 of {N_CELLS} cell evaluations: some files were corrupt or incomplete" in rerun.stdout
    assert strip_timing(json.loads((out / "evaluation.json").read_text())) == expected
    # Other settings are another evaluation: nothing reused, nothing overwritten.
    other = subprocess.run([*evaluate[:-1], "150"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert other.returncode == 0 and "reusing" not in other.stdout
    assert len(list((out / "evaluations").rglob("*.json"))) == 2 * N_CELLS


def test_an_interrupted_mlp_layer_sweep_resumes(tmp_path):
    command = [sys.executable, str(ROOT / "reproduce_das_experiment.py"), "--quick", "--control", "none", "--results_path"]
    whole = subprocess.run([*command, str(tmp_path / "whole")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "resumed"
    assert subprocess.run([*command, str(out)], capture_output=True, cwd=ROOT, timeout=600).returncode == 0
    # What a run killed during layer 2 leaves: the model, layers 0 and 1, no results.json.
    (out / "results.json").unlink()
    (out / "cells" / "L2.json").unlink()
    rerun = subprocess.run([*command, str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "reusing 2 of 3 layers" in rerun.stdout
    assert contents(out) == contents(tmp_path / "whole")
    # Other settings on the same path are recomputed, not mixed in.
    other = subprocess.run([*command, str(out), "--seed", "5"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert other.returncode == 0 and "reusing" not in other.stdout and "recomputing 3 of 3 layers: the flags changed" in other.stdout
