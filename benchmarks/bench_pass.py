"""The parts of a multi-cell training step that issue 28 changed for GPUs, timed on this device
side by side with what they replaced: W of every cell of a pass from one batched QR against one QR
per cell, and one Adam over all cells against one Adam per cell (forward, backward and step of W
alone, the part of a step that grows with the number of cells; the suffix is the same either way).

On the CPU both are about even (the batched forms exist to cut kernel launches on a GPU, where a
pass of 64 cells is then a handful of kernels instead of hundreds); the point of running it here is
that they cost nothing on the CPU. `benchmarks/gpu_check.py` runs the whole step on a GPU.

    python benchmarks/bench_pass.py [--cells 16 64] [--repeats 5] [--device cpu]
"""

import argparse
import time

import torch

from causal_das.das.intervention import DistributedInterchange, weights_of


def step(cells, optimizers, probes, batched: bool):
    weights = weights_of(cells) if batched else [c.weight() for c in cells]
    loss = sum((w * p).sum() for w, p in zip(weights, probes, strict=True))
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def seconds_per_step(n_cells: int, n: int, k: int, batched: bool, repeats: int, device: torch.device) -> float:
    generator = torch.Generator().manual_seed(0)
    cells = [DistributedInterchange(n, (k,), generator).to(device) for _ in range(n_cells)]
    probes = [torch.randn(n, k, generator=generator).to(device) for _ in cells]
    if batched:
        optimizers = [torch.optim.Adam([{"params": list(c.parameters())} for c in cells], lr=1e-3)]
    else:
        optimizers = [torch.optim.Adam(c.parameters(), lr=1e-3) for c in cells]
    step(cells, optimizers, probes, batched)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(5):
            step(cells, optimizers, probes, batched)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - start) / 5)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[16, 64], help="cells per pass")
    parser.add_argument("--shapes", nargs="+", default=["96x16", "4608x64"], help="site dimension x k, e.g. 4608x64 (the thesis)")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many timings of 5 steps")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"{'n x k':>9} {'cells':>6} {'per cell (ms)':>14} {'batched (ms)':>13} {'ratio':>6}")
    for shape in args.shapes:
        n, k = map(int, shape.split("x"))
        for n_cells in args.cells:
            alone = seconds_per_step(n_cells, n, k, False, args.repeats, device)
            batched = seconds_per_step(n_cells, n, k, True, args.repeats, device)
            print(f"{shape:>9} {n_cells:>6} {alone * 1e3:>14.2f} {batched * 1e3:>13.2f} {alone / batched:>6.2f}")


if __name__ == "__main__":
    main()
