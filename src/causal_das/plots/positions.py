"""Figures of the position sweep (`run_das.py --position_sets`), drawn from its summary.json alone:
where each variable lives (layer x position set), against the best same-k baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from causal_das.plots.common import finish, pyplot
from causal_das.runtime.io import read_json


def _grid(summary: dict, name: str, value) -> np.ndarray:
    cells = {(c["layer"], c["position_set"]): c for c in summary["cells"] if c["causal_model"] == name}
    return np.array([[value(cells[(layer, s)]) for s in summary["position_sets"]] for layer in summary["layers"]], dtype=float)


def _panels(plt, summary: dict):
    """One panel per causal model, at most three to a row."""
    names = summary["causal_models"]
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    height = 1.0 + 0.36 * len(summary["layers"])
    width = 1.2 + 0.62 * len(summary["position_sets"])
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows + 0.6), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    return fig, list(zip(axes.flat, names, strict=False))


def _decorate(ax, summary: dict, name: str) -> None:
    """Axes labels, hatching where the variable cannot exist, '!' where the illusion check flags W."""
    sets, layers = summary["position_sets"], summary["layers"]
    impossible = _grid(summary, name, lambda c: not c["variable_can_exist"])
    flagged = _grid(summary, name, lambda c: c["illusion_flagged"])
    # Outlined: real by the paired tests adjusted over the sweep (summaries of older rules: none).
    real = _grid(summary, name, lambda c: "p_chance_adjusted" in c and c["alignment_real"])
    for i in range(len(layers)):
        for j in range(len(sets)):
            if real[i, j]:
                ax.add_patch(pyplot().Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, ec="orangered", lw=1.6))
            if impossible[i, j]:
                ax.add_patch(pyplot().Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", ec="0.55", lw=0))
            if flagged[i, j]:
                ax.text(j - 0.45, i - 0.5, "!", color="red", fontsize=10, fontweight="bold", ha="left", va="top")
    ax.set_xticks(range(len(sets)), sets)
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_xlabel("token positions (0..5 = X + Y + Z =)")
    ax.set_title(name, fontsize=10)


def _heatmaps(plt, summary: dict, grids: dict, colours: dict, label, colour_label: str, title: str, path: Path) -> Path:
    """One layer x position-set heatmap per causal model (`grids[name]`), each cell labelled with
    `label(name, i, j, value)` (the text and its style), decorated, one colour bar; saved to `path`."""
    fig, panels = _panels(plt, summary)
    for ax, name in panels:
        image = ax.imshow(grids[name], aspect="auto", **colours)
        for (i, j), value in np.ndenumerate(grids[name]):
            ax.text(j, i, ha="center", va="center", **label(name, i, j, value))
        _decorate(ax, summary, name)
        ax.set_ylabel("layer (block output)")
    fig.colorbar(image, ax=[ax for ax, _ in panels], fraction=0.02, pad=0.01, label=colour_label)
    fig.suptitle(title, fontsize=9)
    return finish(plt, fig, path)


def _claims(summary: dict) -> str:
    claims = summary.get("claims")
    if claims is None:
        return "not judged by paired tests: rerun run_das.py on this sweep"
    return f"{claims['method'].capitalize()} over the sweep's {claims['n_claims']} cells at {claims['level']}: {claims['alignment_real']} real"


def plot_positions(summary_json: str | Path, out_dir: str | Path, fmt: str = "png") -> list[Path]:
    """positions_iia.<fmt> (DAS IIA per layer x position set, each cell with the best same-k baseline
    below it) and positions_margin.<fmt> (DAS minus that baseline); hatched: the model's variable cannot
    exist there under causal attention; '!': the illusion check flags the W; outlined: the alignment is
    real after adjustment over the sweep."""
    plt = pyplot()
    summary = read_json(summary_json)
    out_dir = Path(out_dir)
    k = summary["k"]

    names = summary["causal_models"]
    das = {name: _grid(summary, name, lambda c: c["iia_own_model"]) for name in names}
    best = {name: _grid(summary, name, lambda c: c["best_baseline"]["iia"]) for name in names}
    margins = {name: _grid(summary, name, lambda c: c["das_minus_best_baseline"]) for name in names}
    # The colour scale spans the measured IIA (at least 0..0.2), so that small differences show.
    top = min(1.0, max(0.2, np.ceil(max(float(grid.max()) for grid in das.values()) * 10) / 10))
    limit = max(0.05, max(float(np.abs(m).max()) for m in margins.values()))

    # The Wilson interval's half-width beside each IIA (summaries of older rules have none).
    half = {name: _grid(summary, name, lambda c: (c["iia_interval"][1] - c["iia_interval"][0]) / 2 if "iia_interval" in c else np.nan)
            for name in names}

    def das_label(name, i, j, value):
        spread = "" if np.isnan(half[name][i, j]) else f"±{half[name][i, j]:.2f}".replace("0.", ".")
        return dict(s=f"{value:.2f}{spread}\n{best[name][i, j]:.2f}", fontsize=5.5, color="white" if value < 0.6 * top else "black")

    def margin_label(name, i, j, value):
        return dict(s=f"{value:+.2f}", fontsize=6.5)

    return [
        _heatmaps(plt, summary, das, dict(vmin=0, vmax=top, cmap="viridis"), das_label, "IIA",
                  f"Where each variable lives: DAS IIA ± half its 95% interval (k = {k}, top) and the best same-k baseline (bottom: "
                  "random subspace, PCA, neuron mask or the random-init network); hatched: the variable cannot exist there;\n"
                  f"outlined: real (DAS beats every chance baseline, paired tests, {_claims(summary)})", out_dir / f"positions_iia.{fmt}"),
        _heatmaps(plt, summary, margins, dict(vmin=-limit, vmax=limit, cmap="RdBu"), margin_label, "DAS IIA - best same-k baseline",
                  f"DAS minus the best same-k baseline (k = {k}); hatched: the variable cannot exist there; "
                  "'!': the IIA collapses when W is confined to the activations' span;\n"
                  f"outlined: real ({_claims(summary)})", out_dir / f"positions_margin.{fmt}"),
    ]
