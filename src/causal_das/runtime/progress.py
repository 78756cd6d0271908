"""Progress bars: one per step of work, inner ones only when a script runs on its own.

A script's outer loop (cells of a sweep, graphs, epochs of a network's training) always shows a bar.
Inner loops (the batches of one DAS cell, the chunks of one graph) show one too when the script runs
alone, where a single thesis-sized cell can take minutes; the main job (`run_pipeline.py`) sets
`CAUSAL_DAS_INNER_BARS=0` so that its console shows one bar per step, not hundreds.
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

INNER_BARS = "CAUSAL_DAS_INNER_BARS"


def inner_bars_enabled() -> bool:
    return os.environ.get(INNER_BARS, "1") != "0"


def bar(iterable=None, **kwargs):
    """The bar of a script's outer loop (tqdm's arguments)."""
    return tqdm(iterable, **kwargs)


def inner(iterable=None, **kwargs):
    """The bar of an inner loop: transient (`leave=False`), and off under the main job."""
    kwargs.setdefault("leave", False)
    if not inner_bars_enabled():
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
