"""--device and --precision: resolution, errors, bf16 where it is safe, and the CPU path of every
script. (CUDA itself is never used in tests; these run the same code with --device cpu.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_das.causal_model import sample_counterfactuals
from causal_das.das import engine
from causal_das.models.mlp import MLPClassifier, MLPSite
from causal_das.runtime import devices
from causal_das.runtime.executors import gpus_per_task
from causal_das.runtime.io import run_metadata
from causal_das.studies.four_objects_mlp import to_interchange
from causal_das.tasks.four_objects import get_task

ROOT = Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour of a machine without a GPU")


@pytest.fixture(autouse=True)
def restore_precision():
    yield
    devices.setup("cpu", "fp32")


@no_gpu
def test_auto_is_the_cpu_without_a_gpu_and_fp32_there():
    assert devices.setup("auto", "auto") == torch.device("cpu")
    cpu = devices.cpu_info()
    assert set(cpu) == {"cpu", "cpu_capability"} and cpu["cpu"] and cpu["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    threads = torch.get_num_threads()
    assert devices.current() == {"device": "cpu", "precision": "fp32", **cpu, "threads": threads}
    assert run_metadata()["compute"] == {"device": "cpu", "precision": "fp32", **cpu, "threads": threads}


@no_gpu
def test_cuda_without_a_gpu_and_tf32_on_cpu_are_clear_errors():
    with pytest.raises(ValueError, match="sees no CUDA GPU; use --device cpu"):
        devices.setup("cuda")
    with pytest.raises(ValueError, match="tf32 is a CUDA mode"):
        devices.setup("cpu", "tf32")
    with pytest.raises(ValueError, match="unknown device"):
        devices.resolve("tpu")


class FakeRay:
    def __init__(self, gpus):
        self.gpus = gpus

    def cluster_resources(self):
        return {"CPU": 8.0, **({"GPU": float(self.gpus)} if self.gpus else {})}


def test_ray_tasks_ask_for_a_gpu_exactly_when_the_cells_run_on_cuda():
    assert gpus_per_task(FakeRay(0), "auto") == 0
    assert gpus_per_task(FakeRay(2), "auto") == 1
    assert gpus_per_task(FakeRay(2), "cuda") == 1
    assert gpus_per_task(FakeRay(2), "cpu") == 0
    with pytest.raises(ValueError, match="the Ray cluster has no GPU"):
        gpus_per_task(FakeRay(0), "cuda")


def _mlp_and_data():
    torch.manual_seed(0)
    task = get_task("hierarchical_equality")
    cf = sample_counterfactuals(task.causal_model(), task.sampler(4), 512, np.random.default_rng(0))
    return MLPClassifier(16, n_layers=3).eval(), to_interchange(cf)


def test_bf16_runs_the_network_in_bf16_and_keeps_w_and_the_cache_in_fp32():
    model, data = _mlp_and_data()
    seen = []
    hook = model.mlp.h[2].ff1.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    config = engine.DASConfig((8, 8), epochs=2, batch_size=64, lr=5e-2, seed=0)
    site = MLPSite(model, 0)
    try:
        fp32 = engine.train(site, data, config)
        fp32_predictions = engine.predict(site, fp32, data)
        assert set(seen) == {torch.float32}
        seen.clear()
        devices.setup("cpu", "bf16")
        assert engine.cache_activations(site, data.inputs).dtype == torch.float32
        bf16 = engine.train(site, data, config)
        assert torch.bfloat16 in seen  # the suffix ran under autocast
        bf16_predictions = engine.predict(site, bf16, data)
    finally:
        hook.remove()
    w = bf16.weight
    assert w.dtype == torch.float32 and w.device.type == "cpu"
    assert (w.T @ w - torch.eye(16)).abs().max().item() < 1e-5
    assert bf16.history["epochs"][-1]["loss"] < bf16.history["epochs"][0]["loss"]
    assert not torch.equal(w, fp32.weight)  # bf16 did change the arithmetic ...
    agreement = (bf16_predictions == fp32_predictions).float().mean().item()
    assert agreement > 0.9, agreement  # ... but not what DAS learns


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in {"seconds", "train_seconds", "cells_in_pass", "command", "results_path"}}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def test_device_cpu_gives_the_default_runs_files(tmp_path):
    """The flag reaches the run (recorded in the results) and, on this machine, changes nothing else."""
    outputs = {}
    for name, extra in (("default", []), ("cpu", ["--device", "cpu", "--precision", "fp32"])):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, str(ROOT / "reproduce_das_experiment.py"), "--quick", "--layers", "0", "--control", "none",
                               "--results_path", str(out), *extra], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stderr
        outputs[name] = json.loads((out / "results.json").read_text())
    assert outputs["cpu"]["config"]["device"] == "cpu"
    compute = dict(outputs["cpu"]["compute"])
    assert compute.pop("threads") >= 1  # the child's own torch threads
    assert compute == {"device": "cpu", "precision": "fp32", **devices.cpu_info()}
    for record in outputs.values():
        record["config"].pop("device"), record["config"].pop("precision")
    if not torch.cuda.is_available():
        assert _strip(outputs["default"]) == _strip(outputs["cpu"])


def test_ray_asks_for_the_gpu_fraction_given_and_processes_start_one_cuda_worker(monkeypatch):
    import argparse

    from causal_das.runtime import executors

    assert gpus_per_task(FakeRay(1), "cuda", 0.25) == 0.25 and gpus_per_task(FakeRay(0), "cpu", 0.25) == 0
    parser = argparse.ArgumentParser()
    executors.add_executor_flags(parser)
    try:
        assert parser.parse_args(["--ray_gpu_fraction", "0.5"]).ray_gpu_fraction == 0.5 and executors.RAY_GPU_FRACTION["value"] == 0.5
    finally:
        executors.RAY_GPU_FRACTION["value"] = 1.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--ray_gpu_fraction", "1.5"])
    assert executors.default_workers("cpu", None) == (os.cpu_count() or 1) and executors.default_workers("cpu", 3) == 3
    monkeypatch.setattr(devices, "resolve", lambda name: torch.device("cuda"))
    assert executors.default_workers("cuda", None) == 1


def test_the_gpu_memory_budget_counts_pytorchs_cache_and_other_processes(monkeypatch):
    """Free device memory (other processes' use already taken out) plus what this process's caching
    allocator holds unused."""
    from causal_das.das import memory

    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 6 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * gib)
    assert memory.budget_bytes(torch.device("cuda")) == int(14 * gib * memory.CUDA_BUDGET_FRACTION)


def test_cuda_setup_asks_for_deterministic_algorithms_and_a_fixed_cublas_workspace(monkeypatch):
    calls = []
    monkeypatch.setattr(devices, "resolve", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, warn_only=False: calls.append((mode, warn_only)))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        devices.setup("cuda", "auto")
        assert devices.current()["precision"] == "tf32" and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert calls == [(True, True)] and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
