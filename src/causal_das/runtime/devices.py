"""Where networks run and at what precision: the `--device` and `--precision` flags of every script
that runs a network.

`--device auto` (the default) uses CUDA when torch sees a GPU, else the CPU. Networks are built and
seeded on the CPU and then moved, so a seed gives the same initial weights and the same initial W on
any device; the engines follow the device of the network they are given (cached activations, W,
the batches all live there) and hand results back on the CPU.

Precision, `--precision auto` (the default): on CUDA, TF32 matrix products in the network's own
forward and backward passes (fp32 storage and accumulation, a 10-bit mantissa in the products),
which DAS tolerates; on the CPU, plain fp32. `bf16` is opt-in on either: the frozen network's
forward passes (the prefix that fills the activation cache, the suffix after the site) run under
bf16 autocast. Whatever the precision, W, its QR, the interchange, their backward pass and the loss
run in IEEE fp32 (`full_fp32`, `full_fp32_backward`); the pyvene engine, which applies W inside the
network's forward pass, runs wholly in IEEE fp32 under `tf32` and ignores bf16.

Determinism on CUDA: `setup` asks torch for deterministic algorithms (warning, not failing, where
an op has none) and sets cuBLAS's workspace (`CUBLAS_WORKSPACE_CONFIG`, unless already set) as
torch's reproducibility notes require; whether same-seed runs then give identical files on one GPU
has not been measured yet (`benchmarks/gpu_check.py` measures it; docs/engines.md).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from pathlib import Path

import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")

# What this process computes on, set by `setup`; recorded in every result file (io.run_metadata).
_current = {"device": "cpu", "precision": "fp32"}
# How the network last loaded differs from its checkpoint's dtype (`note_network_dtype`); empty for an
# fp32 checkpoint, so the records of fp32 runs are what they always were.
_network_dtype: dict = {}


def resolve(name: str) -> torch.device:
    """`auto` -> cuda if torch sees a GPU, else cpu; ValueError for cuda without a GPU."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ValueError(f"--device cuda: torch {torch.__version__} ({build}) sees no CUDA GPU; use --device cpu (or auto)")
    return torch.device(name)


def setup(device: str = "auto", precision: str = "auto") -> torch.device:
    """Resolves `device`, sets this process's matmul precision for it, and returns the device."""
    resolved = resolve(device)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "tf32" if resolved.type == "cuda" else "fp32"
    if precision == "tf32" and resolved.type != "cuda":
        raise ValueError("--precision tf32 is a CUDA mode; on the CPU use fp32 (the default) or bf16")
    if resolved.type == "cuda":
        # Before cuBLAS starts (setup runs before any CUDA work): a fixed workspace makes its
        # reductions repeatable; deterministic algorithms replace atomics-based kernels (index_add_,
        # scatter) where torch has a deterministic version.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        tf32 = precision in ("tf32", "bf16")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    _current.update(device=str(resolved), precision=precision)
    _network_dtype.clear()  # a new run's settings: the network it loads next says how it was loaded
    return resolved


def note_network_dtype(record: dict | None) -> None:
    """Records how the network this process runs was loaded from its checkpoint ({"stored_dtype",
    "loaded_dtype", "reason"}; None: an fp32 checkpoint loaded as it is); every result file written
    afterwards carries it as `compute.network_dtype` (`models.checkpoint_dtype`)."""
    _network_dtype.clear()
    _network_dtype.update(record or {})


def current() -> dict[str, str]:
    """{"device", "precision", "cpu", "cpu_capability", "threads"[, "gpu"]} as last set by `setup`
    (cpu, fp32 before any). The machine is recorded because another CPU (or GPU) rounds differently:
    the same flags and seed give identical files on one machine, and may differ in the last digits on
    another. So is torch's number of CPU threads: sums split over another number of threads round
    differently too (a GPT-2 trained with one thread and with two ends at other weights)."""
    info = {**_current, **cpu_info(), "threads": torch.get_num_threads()}
    if _network_dtype:
        info["network_dtype"] = dict(_network_dtype)
    if info["device"].startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(info["device"]))
    return info


@functools.cache
def cpu_info() -> dict[str, str]:
    """The CPU's model name and the instruction set torch's CPU kernels use (e.g. AVX2, AVX512)."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return {"cpu": name, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def describe() -> str:
    info = current()
    where = f"{info['device']} ({info['gpu']})" if "gpu" in info else info["device"]
    return f"{where}, {info['precision']}"


def network_autocast(device: torch.device):
    """The context the frozen network's forward passes run in: bf16 autocast when asked for."""
    if _current["precision"] != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def full_fp32(device: torch.device):
    """IEEE fp32 matrix products for the duration, whatever `--precision` set for the network: W, its
    orthonormalisation, the interchange and the loss run in here (TF32 keeps a 10-bit mantissa,
    which would reach W's orthonormality and the swapped coordinates). Only CUDA has TF32 (any
    device but the CPU sets the flags, so the tests' simulated device checks this path); setting
    the flags is host-side and costs the device nothing."""
    if device.type == "cpu":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def full_fp32_backward(hidden: torch.Tensor) -> torch.Tensor:
    """Makes the backward pass run in IEEE fp32 from `hidden` (the intervened state) back to W: the
    suffix's backward keeps the network's precision, then the gradient of the interchange and of
    the orthonormalisation is computed with TF32 off, which is restored when the backward pass ends."""
    if hidden.device.type == "cpu" or not hidden.requires_grad:
        return hidden

    def enter(grad):
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

        def restore():
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

        torch.autograd.Variable._execution_engine.queue_callback(restore)
        return grad

    hidden.register_hook(enter)
    return hidden


def of(module: torch.nn.Module) -> torch.device:
    """The device a network's parameters live on."""
    return next(module.parameters()).device


def add_device_flags(parser) -> None:
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where networks run: auto (CUDA when torch sees a GPU, else CPU), cpu or cuda")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: TF32 matrix products on CUDA, fp32 on CPU; fp32; tf32 (CUDA only); bf16: the frozen network's "
                             "forward passes under bf16 autocast, W and the interchange in fp32 (fast engine)")
