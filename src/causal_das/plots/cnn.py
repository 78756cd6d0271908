"""Figures of the ellipse CNN (second seed): DAS per cell beside its control and baselines, IIA per
layer, example images; drawn from JSON (or, for the examples, from generated images) alone."""

from __future__ import annotations

from pathlib import Path

from causal_das.plots.common import finish, pyplot
from causal_das.runtime.io import read_json


def _cell_label(cell: dict) -> str:
    variables = "+".join(cell["variables"])
    return f"{cell['mode']}: {variables}  @ {cell['layer']} {cell['site_view']}, k={cell['intervention_size']}"


def plot_ellipse_das(summary_json: str | Path, out: str | Path) -> Path:
    """One group of horizontal bars per cell: DAS IIA, the random-init control and the baselines."""
    import numpy as np

    plt = pyplot()
    cells = read_json(summary_json)["cells"]
    bars = [
        ("DAS IIA", lambda c: c["iia"], "C0"),
        ("control: random-init CNN", lambda c: (c.get("control_random_init") or {}).get("iia", np.nan), "C3"),
        ("copy the source's label", lambda c: c["baselines"]["copy_source_label"], "C1"),
        ("network, no intervention", lambda c: c["baselines"]["network_no_intervention"], "C2"),
        ("majority label", lambda c: c["baselines"]["majority"], "grey"),
    ]
    y = np.arange(len(cells))[::-1]
    height = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(8.4, 1.0 + 0.62 * len(cells)))
    for i, (name, value, colour) in enumerate(bars):
        widths = [value(c) for c in cells]
        offsets = y + ((len(bars) - 1) / 2 - i) * height
        # DAS's bar carries its 95% interval (Wilson; summaries of older runs have none).
        intervals = [c.get("iia_interval") for c in cells] if i == 0 else []
        error = (np.array([[w - iv[0], iv[1] - w] for w, iv in zip(widths, intervals, strict=True)]).T
                 if intervals and all(intervals) else None)
        ax.barh(offsets, widths, height, label=name + (" (95% interval)" if error is not None else ""), color=colour, xerr=error,
                error_kw={"lw": 0.8, "capsize": 1.5})
        if i == 0:
            for yi, w, iv in zip(offsets, widths, intervals or [None] * len(widths), strict=True):
                ax.text((iv[1] if iv else w) + 0.005, yi, f"{w:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""), va="center", fontsize=6.5)
    ax.set_yticks(y, [_cell_label(c) for c in cells], fontsize=7.5)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("accuracy on fresh counterfactual pairs of the cell's mode")
    ax.legend(fontsize=7.5, ncol=3, loc="lower center", bbox_to_anchor=(0.4, 1.0), frameon=False)
    fig.suptitle("DAS on the ellipse CNN: IIA beside the control and the baselines (same test pairs)", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return finish(plt, fig, out)


def plot_ellipse_layers(summary_json: str | Path, out: str | Path) -> Path:
    """Single-variable, single-source IIA per layer: where each latent lives (control dashed)."""
    plt = pyplot()
    table = read_json(summary_json)["layer_table"]
    layers = ["conv1", "conv2", "conv3", "fc1"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (variable, by_layer) in enumerate(table.items()):
        present = [layer for layer in layers if layer in by_layer]
        x = [layers.index(layer) for layer in present]
        ax.plot(x, [by_layer[layer]["iia"] for layer in present], "o-", lw=2.2, color=f"C{i}", label=f"{variable}: DAS IIA")
        ax.plot(x, [by_layer[layer]["control"] for layer in present], "s--", lw=1, color=f"C{i}", alpha=0.6, label=f"{variable}: random-init control")
        ax.plot(x, [by_layer[layer]["network_no_intervention"] for layer in present], ":", lw=1, color=f"C{i}", alpha=0.6,
                label=f"{variable}: network, no intervention")
    sizes = {layer: {v[layer]["intervention_size"] for v in table.values() if layer in v} for layer in layers}
    ax.set_xticks(range(len(layers)), [f"{layer}\nk={','.join(map(str, sorted(sizes[layer])))}" for layer in layers])
    ax.set_xlabel("layer whose output is intervened on (rows view for conv layers)")
    ax.set_ylabel("IIA (fresh single-source pairs)")
    ax.set_ylim(0.3, 1.02)
    ax.set_title("Where each latent lives: DAS for one variable at a time", fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    ax.grid(alpha=0.3)
    return finish(plt, fig, out)


def plot_image_grid(images, titles: list[str], out: str | Path, columns: int = 8) -> Path:
    """A grid of greyscale images (n, 1, H, W) in [0, 1] with a title each (the task's inputs)."""
    plt = pyplot()
    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.65 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=6)
    fig.suptitle("Ellipse images with (circularity, colour, area) scaled to [0, 1] and the label", fontsize=9)
    return finish(plt, fig, out)
