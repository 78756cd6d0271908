"""The DAS intervention: a rotation with orthonormal columns, split into one subspace per variable.

For a site of dimension n, W is n x k with orthonormal columns (k = sum of the subspace sizes).
Its columns are partitioned into consecutive blocks W_1, ..., W_V, one per causal variable, and

    h <- h_base + sum_v (h_src_v - h_base) W_v W_v^T

Each variable's subspace is filled from its own source; because the blocks are mutually orthogonal,
this equals pyvene's linked interventions applied one after the other. A source equal to the base
leaves its subspace unchanged, which is how an example that intervenes on only some variables is
run (see `causal_model.CounterfactualData`).

W is parametrised as the Q factor (with R's diagonal made positive, so the map is smooth and
unique) of an unconstrained n x k matrix: one thin QR per step, O(n k^2), and its backward is
cheap. pyvene's orthogonal parametrisation instead builds a Householder product (or a matrix
exponential for square W) several times per step; benchmarks/bench_rotation.py measures both.
"""

from __future__ import annotations

import torch
from torch import nn


def orthonormal_columns(matrix: torch.Tensor) -> torch.Tensor:
    """(..., n, k) -> (..., n, k) with orthonormal columns spanning the same space (QR, positive R
    diagonal); a stack of matrices in one batched call."""
    q, r = torch.linalg.qr(matrix, mode="reduced")
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return q * signs.unsqueeze(-2)


def weights_of(interventions: list[DistributedInterchange]) -> list[torch.Tensor]:
    """W of each intervention, as `weight()` gives it, with the rotations of one shape
    orthonormalised together in one batched QR (one call per shape instead of one per cell: on a GPU
    a pass of many cells is then a few kernels, not hundreds; on the CPU the results are the same
    bits, tests/test_batched.py)."""
    weights: list[torch.Tensor | None] = [None] * len(interventions)
    groups: dict[tuple, list[int]] = {}
    for i, intervention in enumerate(interventions):
        if intervention.full_swap or intervention.rotation.k == 0:
            weights[i] = intervention.weight()
        else:
            unconstrained = intervention.rotation.unconstrained
            groups.setdefault((tuple(unconstrained.shape), unconstrained.device, unconstrained.dtype), []).append(i)
    for members in groups.values():
        stacked = torch.stack([interventions[i].rotation.unconstrained for i in members])
        for i, weight in zip(members, orthonormal_columns(stacked).unbind(0), strict=True):
            weights[i] = weight
    return weights


class Rotation(nn.Module):
    """W (n, k), orthonormal columns, from an unconstrained parameter through `orthonormal_columns`.

    k == n with a single subspace is a full interchange: W = I exactly, nothing to train.
    """

    def __init__(self, n: int, k: int, generator: torch.Generator | None = None):
        super().__init__()
        if not 0 <= k <= n:
            raise ValueError(f"a rotation of a {n}-dim site can have 0..{n} columns, not {k}")
        self.n, self.k = n, k
        init = torch.empty(n, k)
        if k:
            # Same start as pyvene (orthogonal init), drawn from our own generator.
            init = torch.linalg.qr(torch.randn(n, k, generator=generator), mode="reduced")[0]
        self.unconstrained = nn.Parameter(init)

    def forward(self) -> torch.Tensor:
        if self.k == 0:
            return self.unconstrained
        return orthonormal_columns(self.unconstrained)

    @torch.no_grad()
    def load_matrix(self, weight: torch.Tensor) -> None:
        """Sets W to `weight` (n, k), which must have orthonormal columns."""
        if tuple(weight.shape) != (self.n, self.k):
            raise ValueError(f"expected a ({self.n}, {self.k}) rotation, got {tuple(weight.shape)}")
        error = (weight.T @ weight - torch.eye(self.k)).abs().max().item() if self.k else 0.0
        if error > 1e-4:
            raise ValueError(f"the loaded rotation is not orthonormal (max |W^T W - I| = {error:.2e})")
        # QR of a matrix with orthonormal columns returns it (up to the sign fix, which is +1 here
        # when W came from `orthonormal_columns`), so storing W itself reproduces it.
        self.unconstrained.copy_(weight)


class DistributedInterchange(nn.Module):
    """forward(base (B, n), sources (B, V, n)) -> (B, n): the multi-source DAS interchange.

    Args:
        n: site dimension.
        subspace_sizes: columns of W per variable, in variable order.
        generator: for the initial W.
    """

    def __init__(self, n: int, subspace_sizes: tuple[int, ...], generator: torch.Generator | None = None):
        super().__init__()
        if not subspace_sizes or min(subspace_sizes) < 0:
            raise ValueError(f"subspace sizes must be non-negative, got {subspace_sizes}")
        k = sum(subspace_sizes)
        if k > n:
            raise ValueError(f"subspaces of sizes {list(subspace_sizes)} need {k} dimensions, but the site has only {n}")
        self.n, self.subspace_sizes = n, tuple(subspace_sizes)
        # An empty subspace (k = 0) is allowed: it is the identity on the base, a useful invariant.
        self.full_swap = len(subspace_sizes) == 1 and k == n
        self.rotation = Rotation(n, 0 if self.full_swap else k, generator)
        # owner[v, j] = 1 when column j of W belongs to variable v.
        owner = torch.zeros(len(subspace_sizes), k)
        start = 0
        for v, size in enumerate(subspace_sizes):
            owner[v, start : start + size] = 1.0
            start += size
        self.register_buffer("owner", owner, persistent=False)

    @property
    def trainable(self) -> bool:
        return not self.full_swap

    def weight(self) -> torch.Tensor:
        """W (n, k); the identity for a full swap."""
        if self.full_swap:
            return torch.eye(self.n, dtype=self.owner.dtype, device=self.owner.device)
        return self.rotation()

    def forward(self, base: torch.Tensor, sources: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if self.full_swap:
            return sources[:, 0]
        w = self.weight() if weight is None else weight  # (n, k)
        coords = (sources - base.unsqueeze(1)) @ w  # (B, V, k): each source's offset in rotated coordinates
        mixed = (coords * self.owner).sum(dim=1)  # (B, k): variable v contributes only its own columns
        return base + mixed @ w.T
