"""Figures of the MLP experiments (hierarchical equality, pattern matching, the ablation), drawn from
their JSON alone."""

from __future__ import annotations

from pathlib import Path

from causal_das.plots.common import pyplot, save
from causal_das.runtime.io import read_json


def plot_layer_sweep(results_json: str | Path, out_png: str | Path) -> Path:
    """IIA per layer (overall and per intervened set) beside the control and the baselines."""
    plt = pyplot()
    results = read_json(results_json)
    layers = sorted(results["layers"], key=int)
    x = [int(layer) for layer in layers]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(x, [results["layers"][layer]["iia"] for layer in layers], "o-", lw=2.5, color="C0", label="IIA (all examples), 95% interval")
    if all("iia_interval" in results["layers"][layer] for layer in layers):  # results of older runs have none
        low, high = zip(*(results["layers"][layer]["iia_interval"] for layer in layers), strict=True)
        ax.fill_between(x, low, high, color="C0", alpha=0.25, lw=0)
    subsets = list(results["layers"][layers[0]]["by_subset"])
    for i, subset in enumerate(subsets):
        ax.plot(x, [results["layers"][layer]["by_subset"][subset] for layer in layers], "o:", color=f"C{i + 4}", alpha=0.8, label=f"IIA, intervened {subset}")
    if "control_random_init" in results["layers"][layers[0]]:
        ax.plot(x, [results["layers"][layer]["control_random_init"]["iia"] for layer in layers], "s--", color="C3", label="control: random-init network")
    first = results["layers"][layers[0]]["baselines"]
    ax.axhline(first["majority"], color="grey", ls="-.", lw=1, label=f"majority label ({first['majority']:.2f})")
    ax.axhline(first["copy_base_label"], color="black", ls=":", lw=1, label=f"copy base label ({first['copy_base_label']:.2f})")
    ax.set_xticks(x)
    ax.set_xlabel("hidden layer intervened at (block output)")
    ax.set_ylabel("interchange intervention accuracy")
    ax.set_ylim(0, 1.02)
    layout = ", ".join(f"{v} dims {a}-{b}" for v, (a, b) in results["subspaces"].items())
    ax.set_title(f"DAS on the {results['causal_model']} MLP ({layout})\nMLP held-out accuracy {results['mlp']['heldout_accuracy']:.3f}", fontsize=10)
    ax.legend(fontsize=7.5, loc="lower left")
    ax.grid(alpha=0.3)
    out = Path(out_png)
    save(fig, out)
    plt.close(fig)
    return out


def plot_ablation(results_json: str | Path, out_png: str | Path) -> Path:
    """Heatmap: rows = causal model DAS was trained on, columns = causal model tested on."""
    import numpy as np

    plt = pyplot()
    results = read_json(results_json)
    names = results["models"]
    panels = [("trained network", np.array(results["iia"]))]
    if results.get("control_random_init_iia"):
        panels.append(("control: random-init network", np.array(results["control_random_init_iia"])))
    # Each test set's no-intervention baseline, so a reader can tell IIA from "nothing changed".
    tests = list(results["config_tasks"]) if "config_tasks" in results else None
    column_labels = names
    if tests:
        base_rates = [results["details"][f"{tests[0]}->{t}"]["baselines"]["copy_base_label"] for t in tests]
        column_labels = [f"{name}\n(copy base {rate:.2f})" for name, rate in zip(names, base_rates, strict=True)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.2), squeeze=False)
    for index, (ax, (title, table)) in enumerate(zip(axes[0], panels, strict=True)):
        image = ax.imshow(table, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{table[i, j]:.2f}", ha="center", va="center", color="white" if table[i, j] < 0.6 else "black")
        ax.set_xticks(range(len(names)), column_labels, fontsize=8)
        ax.set_yticks(range(len(names)), names if index == 0 else [""] * len(names))
        ax.set_xlabel("tested on counterfactuals of")
        if index == 0:
            ax.set_ylabel("DAS trained on counterfactuals of")
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), label="IIA", shrink=0.85)
    fig.suptitle(f"Wrong-causal-model ablation: MLP trained on ABAB, DAS at layer {results['layer']}", fontsize=10)
    out = Path(out_png)
    save(fig, out)
    plt.close(fig)
    return out
