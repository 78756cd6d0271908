"""How many cells fit in one training pass: measured, not guessed.

A pass's memory is what autograd keeps for the backward pass, which grows linearly with the number
of rows (cells x batch size). `suffix_bytes_per_row` measures it for any `Site` by running one
small suffix forward under `saved_tensors_hooks` and adding up the tensors autograd saves;
`cells_per_pass` divides the device's budget by that.
"""

from __future__ import annotations

import os

import torch

CPU_BUDGET_FRACTION = 0.25  # of the machine's physical memory: room for the cached activations and the rest of the run
CUDA_BUDGET_FRACTION = 0.5  # of the device's free memory
MAX_CELLS_PER_PASS = 256  # beyond this a pass gains nothing and its progress shows too rarely


def suffix_bytes_per_row(run_suffix, activations: torch.Tensor, probe_rows: int = 8) -> int:
    """Bytes autograd saves per intervened row in `run_suffix(hidden)` (a site's suffix on a frozen
    network), plus the row itself."""
    saved = 0

    def pack(tensor):
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    hidden = activations[:probe_rows].clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run_suffix(hidden)
    return max(1, saved // len(hidden)) + hidden[0].numel() * hidden.element_size()


def budget_bytes(device: torch.device) -> int:
    """Memory one pass may use on `device`: a quarter of the physical memory on the CPU; on a GPU
    half of what is available to this process: the device's free memory (which other processes'
    use has already left out) plus what PyTorch's caching allocator holds here without using it
    (counted as used by the device, yet free to this process)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int((free + cached) * CUDA_BUDGET_FRACTION)
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        physical = 8 << 30
    return int(physical * CPU_BUDGET_FRACTION)


def cells_per_pass(run_suffix, activations: torch.Tensor, batch_size: int, budget: int | None = None) -> int:
    """The most cells of `batch_size` rows whose training pass through `run_suffix` fits in `budget`
    bytes (default: `budget_bytes` of the activations' device), at least 1 and at most
    `MAX_CELLS_PER_PASS`."""
    budget = budget_bytes(activations.device) if budget is None else budget
    per_cell = suffix_bytes_per_row(run_suffix, activations) * batch_size
    return max(1, min(MAX_CELLS_PER_PASS, budget // per_cell))
