"""How to parametrise W (n x k, orthonormal columns): time per training step of each choice.

One step = build W from its parameter, project a batch of activation differences into the
subspace and back (the DAS interchange), backward. Measured side by side in one run, so the ratios
hold on a noisy machine. Sizes: the MLP site (n = k = 16, batch 1024) and the thesis GPT-2 site
(n = 6 x 768 = 4608, k = 64, batch 128).

    python benchmarks/bench_rotation.py [--repeats 5]
"""

import argparse
import time

import torch

from causal_das.das.intervention import orthonormal_columns


def qr_param(n, k):
    p = torch.nn.Parameter(torch.linalg.qr(torch.randn(n, k))[0])
    return [p], lambda: orthonormal_columns(p)


def polar_param(n, k):
    p = torch.nn.Parameter(torch.linalg.qr(torch.randn(n, k))[0])

    def weight():
        # W = A (A^T A)^(-1/2), through the eigendecomposition of the k x k Gram matrix.
        evals, evecs = torch.linalg.eigh(p.T @ p)
        return p @ (evecs * evals.rsqrt()) @ evecs.T

    return [p], weight


def torch_orthogonal_param(n, k):
    """pyvene's choice: torch.nn.utils.parametrizations.orthogonal (Householder for n != k,
    matrix exponential for n == k)."""
    layer = torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(k, n, bias=False))
    return list(layer.parameters()), lambda: layer.weight


def geotorch_param(n, k):
    import geotorch

    layer = torch.nn.Linear(k, n, bias=False)
    geotorch.orthogonal(layer, "weight")
    return list(layer.parameters()), lambda: layer.weight


CHOICES = {"qr (ours)": qr_param, "polar": polar_param, "torch orthogonal (pyvene)": torch_orthogonal_param, "geotorch stiefel": geotorch_param}


def time_step(make, n, k, batch, repeats):
    torch.manual_seed(0)
    params, weight = make(n, k)
    optimizer = torch.optim.Adam(params, lr=1e-3)
    diff, base = torch.randn(batch, n), torch.randn(batch, n)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        w = weight()
        out = base + (diff @ w) @ w.T
        loss = out.square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per choice (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    for n, k, batch in ((16, 16, 1024), (4608, 64, 128)):
        print(f"\nn = {n}, k = {k}, batch {batch}: median seconds per step (ratio to qr)")
        results = {}
        for name, make in CHOICES.items():
            try:
                results[name] = time_step(make, n, k, batch, args.repeats)
            except ImportError:
                print(f"  {name:28s} skipped: pip install geotorch==0.4.0 to measure it")
            except torch.linalg.LinAlgError:
                # At an orthonormal start A^T A = I has one repeated eigenvalue; eigh's backward
                # divides by eigenvalue gaps, the first step yields NaN and the next eigh fails.
                print(f"  {name:28s} fails: NaN gradients from an orthonormal start (repeated eigenvalues)")
        for name, seconds in results.items():
            print(f"  {name:28s} {seconds:9.5f} s   x{seconds / results['qr (ours)']:.1f}")


if __name__ == "__main__":
    main()
