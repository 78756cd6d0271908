"""Where independent cells run: in this process (`local`, the default) or as Ray tasks (`ray`).

Ray (DESIGN.md decision 4) is optional and imported only here, only when asked for. Each Ray task
computes one cell and writes the same files as the local executor, to the same results path (on a
cluster: a shared file system); the per-cell claims of `sweep.claim` still apply, so a Ray run and a
local run on one results path share the work. A task asks for one GPU when the run is on CUDA:
`--device cuda`, or `--device auto` on a cluster that has GPUs; each task then resolves `--device`
on the machine it runs on.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Hashable

from tqdm.auto import tqdm

EXECUTORS = ("local", "ray")
log = logging.getLogger(__name__)


def import_ray():
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray, which is not installed: pip install -r requirements-ray.txt") from None
    return ray


def add_executor_flags(parser) -> None:
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="run cells in this process (local) or as Ray tasks (ray; needs pip install -r requirements-ray.txt)")
    parser.add_argument("--ray_address", default=None,
                        help="address of a running Ray cluster (e.g. ray://head:10001 or auto); default: start a local Ray instance")
    from causal_das.runtime.cli import positive_int

    parser.add_argument("--ray_cpus", type=positive_int, default=None, help="CPUs of the local Ray instance (default: all); ignored with --ray_address")


def _call(task: Callable, key: Hashable):
    return task(key)


def gpus_per_task(ray, device: str) -> int:
    """1 when the cells run on CUDA (see the module docstring), else 0."""
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if device == "cuda" and cluster_gpus < 1:
        raise ValueError("--device cuda with --executor ray: the Ray cluster has no GPU; use --device cpu (or auto)")
    return 1 if device == "cuda" or (device == "auto" and cluster_gpus >= 1) else 0


def ray_map(task: Callable, keys: list[Hashable], address: str | None = None, cpus: int | None = None, device: str = "cpu",
            desc: str = "cells") -> dict:
    """Runs `task(key)` for every key as a Ray task (one CPU each, and one GPU when `device` puts the
    cells on CUDA); returns {key: result} as tasks finish. `task` must be picklable (a module-level
    function or a partial of one)."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        options = {"address": address} if address else {"num_cpus": cpus}
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **options)
    try:
        remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task(ray, device))(_call)
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
