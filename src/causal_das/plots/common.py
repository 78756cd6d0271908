"""What every figure module shares: matplotlib without a display, and atomic saving (a failed plot
never leaves a half-written image, and loses no result)."""

from __future__ import annotations

from pathlib import Path

from causal_das.runtime.io import atomic_writer


def pyplot():
    import sys

    import matplotlib

    if "matplotlib_inline" not in sys.modules:  # in a notebook, keep its inline figures
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    with atomic_writer(path, binary=True) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format=path.suffix.lstrip("."))


def finish(plt, fig, out) -> Path:
    out = Path(out)
    save(fig, out)
    plt.close(fig)
    return out
