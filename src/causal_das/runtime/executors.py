"""Where independent cells run: in this process (`local`, the default), in worker processes of one
thread each on this machine (`processes`), or as Ray tasks (`ray`).

`processes` is for a CPU machine: small networks use two threads poorly, so W one-thread workers
(default: one per core) each take a task (e.g. one layer's group of cells) at a time. Workers are
started with `spawn` (a fork of a process that already ran torch's thread pool can hang), and the
per-cell claims hold between them as between any two runs.

Ray (DESIGN.md decision 4) is optional and imported only here, only when asked for. Each Ray task
computes one cell and writes the same files as the local executor, to the same results path (on a
cluster: a shared file system); the per-cell claims of `sweep.claim` still apply, so a Ray run and a
local run on one results path share the work. A task asks for a GPU when the run is on CUDA:
`--device cuda`, or `--device auto` on a cluster that has GPUs; each task then resolves `--device`
on the machine it runs on. It asks for `--ray_gpu_fraction` of one (default 1): a task's cells
(one layer's) are trained together in passes sized to the memory the task finds free
(`das.memory`), so small networks fit several tasks on one GPU (e.g. 0.25: four at once).

On CUDA, `processes` starts one worker unless `--workers` says otherwise: the cells of a task
already fill the GPU in one process, and a CUDA context per CPU core would only share it worse.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
from collections.abc import Callable, Hashable

from tqdm.auto import tqdm

EXECUTORS = ("local", "processes", "ray")
log = logging.getLogger(__name__)


def import_ray():
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray, which is not installed: pip install -r requirements-ray.txt") from None
    return ray


def add_executor_flags(parser) -> None:
    from causal_das.runtime.cli import positive_int

    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="run cells in this process (local), in one-thread worker processes on this machine (processes; see "
                             "--workers), or as Ray tasks (ray; needs pip install -r requirements-ray.txt)")
    parser.add_argument("--workers", type=positive_int, default=None, help="worker processes of --executor processes (default: one per CPU core)")
    parser.add_argument("--ray_address", default=None,
                        help="address of a running Ray cluster (e.g. ray://head:10001 or auto); default: start a local Ray instance")
    parser.add_argument("--ray_cpus", type=positive_int, default=None, help="CPUs of the local Ray instance (default: all); ignored with --ray_address")
    # A setting of this process's executor, not of any result: the flag sets it when parsed.
    parser.add_argument("--ray_gpu_fraction", type=gpu_fraction, default=1.0, action=_SetGPUFraction,
                        help="share of one GPU each Ray task asks for when the cells run on CUDA (default 1; 0.25 runs four tasks per GPU)")


def _call(task: Callable, key: Hashable):
    return task(key)


RAY_GPU_FRACTION = {"value": 1.0}  # --ray_gpu_fraction of this process


class _SetGPUFraction(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        RAY_GPU_FRACTION["value"] = value
        setattr(namespace, self.dest, value)


def gpu_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], not {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (a share of one GPU), not {text}")
    return value


def gpus_per_task(ray, device: str, fraction: float = 1.0) -> float:
    """`fraction` of a GPU when the cells run on CUDA (see the module docstring), else 0."""
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if device == "cuda" and cluster_gpus < 1:
        raise ValueError("--device cuda with --executor ray: the Ray cluster has no GPU; use --device cpu (or auto)")
    return fraction if device == "cuda" or (device == "auto" and cluster_gpus >= 1) else 0


def default_workers(device: str, workers: int | None) -> int:
    """Workers of `processes`: as given, else one per core on the CPU and one on CUDA."""
    if workers:
        return workers
    from causal_das.runtime.devices import resolve

    return 1 if resolve(device).type != "cpu" else os.cpu_count() or 1


def ray_map(task: Callable, keys: list[Hashable], address: str | None = None, cpus: int | None = None, device: str = "cpu",
            desc: str = "cells", gpu_fraction: float | None = None) -> dict:
    """Runs `task(key)` for every key as a Ray task (one CPU each, and one GPU when `device` puts the
    cells on CUDA); returns {key: result} as tasks finish. `task` must be picklable (a module-level
    function or a partial of one)."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        options = {"address": address} if address else {"num_cpus": cpus}
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **options)
    try:
        fraction = RAY_GPU_FRACTION["value"] if gpu_fraction is None else gpu_fraction
        remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task(ray, device, fraction))(_call)
        pending = {remote.remote(task, key): key for key in keys}
        results = {}
        with tqdm(total=len(pending), desc=f"{desc} (Ray)", unit="cell") as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    key = pending.pop(ref)
                    try:
                        results[key] = ray.get(ref)
                    except ray.exceptions.RayTaskError as error:
                        # The task's own error (e.g. a one-line ValueError) without Ray's wrapping.
                        cause = error.as_instanceof_cause()
                        raise ValueError(f"cell {key} failed on Ray: {str(cause).strip().splitlines()[-1]}") from None
                    bar.update()
        return results
    finally:
        if started_here:
            ray.shutdown()


def map_tasks(executor: str, task: Callable, keys: list[Hashable], address: str | None = None, cpus: int | None = None,
              workers: int | None = None, device: str = "cpu", desc: str = "cells", gpu_fraction: float | None = None) -> dict:
    """Runs `task(key)` for every key with `executor` ("processes" or "ray"); returns {key: result}."""
    if executor == "ray":
        return ray_map(task, keys, address, cpus, device=device, desc=desc, gpu_fraction=gpu_fraction)
    if executor == "processes":
        return process_map(task, keys, default_workers(device, workers), desc=desc)
    raise ValueError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")


def _one_thread() -> None:
    import torch

    from causal_das.runtime.allocator import keep_freed_memory
    from causal_das.runtime.progress import INNER_BARS

    keep_freed_memory()
    torch.set_num_threads(1)
    os.environ[INNER_BARS] = "0"  # the driver shows one bar for all workers


def process_map(task: Callable, keys: list[Hashable], workers: int | None = None, desc: str = "cells") -> dict:
    """Runs `task(key)` for every key in `workers` one-thread processes (default: one per core);
    returns {key: result} as tasks finish. A task's error stops the run with its own message."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = min(workers or os.cpu_count() or 1, len(keys)) or 1
    results = {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread) as pool:
        futures = {pool.submit(task, key): key for key in keys}
        try:
            with tqdm(total=len(futures), desc=f"{desc} ({workers} processes)", unit="task") as bar:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return results
