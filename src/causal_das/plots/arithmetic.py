"""Figures of the X+Y+Z decoder experiments (GPT-2 by default) (training curves, the DAS sweeps, the sanity check, the overview),
drawn from their JSON alone."""

from __future__ import annotations

from pathlib import Path

from causal_das.plots.common import finish, pyplot, save
from causal_das.runtime.io import read_json


def plot_training_curves(training_json: str | Path, out_png: str | Path) -> Path:
    """The GPT-2's training loss and its accuracy on training and held-out triples, per epoch."""
    plt = pyplot()
    record = read_json(training_json)
    history = record["history"]
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(epochs, [h["loss"] for h in history], color="C0")
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (cross-entropy, log scale)")
    left.grid(alpha=0.3)
    right.plot(epochs, [h["train_accuracy"] for h in history], color="C0", label=f"training triples ({record['n_train_triples']})")
    right.plot(epochs, [h["heldout_accuracy"] for h in history], color="C1", label=f"held-out triples ({record['n_heldout_triples']})")
    right.axhline(0.99, color="grey", ls=":", lw=1, label="0.99: needed for DAS")
    right.set_ylim(0, 1.02)
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy (predicted sum correct)")
    right.legend(fontsize=8, loc="lower right")
    right.grid(alpha=0.3)
    model = record["model"]
    source = "from scratch" if record["mode"] == "scratch" else f"fine-tuned from {record['config']['base_model']}"
    fig.suptitle(
        f"GPT-2 classifier on X+Y+Z ({model['n_layer']} blocks, width {model['n_embd']}, {source}): "
        f"held-out accuracy {record['heldout_accuracy']:.3f}", fontsize=10,
    )
    out = Path(out_png)
    save(fig, out)
    plt.close(fig)
    return out


def plot_sweep(summary_json: str | Path, out_png: str | Path) -> Path:
    """A run_das.py sweep: IIA per layer, one panel per causal model, one line per k with its 95%
    interval shaded; the same DAS on the random-init network dashed; the majority-label rate dotted."""
    plt = pyplot()
    summary = read_json(summary_json)
    names, ks, layers = summary["causal_models"], summary["low_rank_dims"], summary["layers"]
    cells = {(c["causal_model"], c["layer"], c["k"]): c for c in summary["cells"]}
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for i, k in enumerate(ks):
            label = f"k = {k}" + (" (full swap)" if k == summary["n"] else "")
            ax.plot(layers, [cells[(name, layer, k)]["iia_own_model"] for layer in layers], "o-", color=f"C{i}", ms=3.5, label=label)
            if all("iia_interval" in cells[(name, layer, k)] for layer in layers):  # the 95% interval (summaries of older runs: none)
                low, high = zip(*(cells[(name, layer, k)]["iia_interval"] for layer in layers), strict=True)
                ax.fill_between(layers, low, high, color=f"C{i}", alpha=0.2, lw=0)
            control = [cells[(name, layer, k)].get("control_iia_own_model") for layer in layers]
            if all(v is not None for v in control):
                ax.plot(layers, control, "--", color=f"C{i}", alpha=0.6, lw=1, label=f"k = {k}, random-init control")
        majority = sum(cells[(name, layer, ks[0])]["baselines"]["majority"] for layer in layers) / len(layers)
        ax.axhline(majority, color="grey", ls=":", lw=1, label=f"majority label ({majority:.2f})")
        ax.set_title(f"trained and tested on {name}", fontsize=9.5)
        ax.set_xlabel("block whose output is intervened on")
        ax.set_xticks(layers)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("IIA (fresh test pairs)")
    axes[0][-1].legend(fontsize=7, loc="center right")
    fig.suptitle(f"DAS on the X+Y+Z GPT-2, {summary['config']['causal_model_type']} causal models, all six tokens (n = {summary['n']})", fontsize=10)
    out = Path(out_png)
    save(fig, out)
    plt.close(fig)
    return out


def _sweep_cells(summary: dict) -> dict:
    return {(c["causal_model"], c["layer"], c["k"]): c for c in summary["cells"]}


def _k_label(k: int, n: int) -> str:
    return f"k = {k}" + (" (full swap)" if k == n else "")


def plot_sanity_check(summary_json: str | Path, out: str | Path, evaluation_json: str | Path | None = None) -> Path:
    """Each arithmetic model's trained W tested on every arithmetic model: IIA per layer, one panel
    per (trained model, k). The model W was trained on should stand out; the same DAS on the
    random-init network (dashed) shows what training alone can reach."""
    plt = pyplot()
    summary = read_json(summary_json)
    names, ks, layers, n = summary["causal_models"], summary["low_rank_dims"], summary["layers"], summary["n"]
    cells = _sweep_cells(summary)
    tested = {(c["causal_model"], c["layer"], c["k"]): c["iia"] for c in summary["cells"]}
    source = f"{summary['config']['n_testing']} fresh test pairs of the sweep"
    if evaluation_json is not None and Path(evaluation_json).is_file():
        evaluation = read_json(evaluation_json)
        tested.update({(c["trained_on"], c["layer"], c["k"]): c["iia"] for c in evaluation["cells"]})
        source = f"{evaluation['pairs']['n']:,} fresh pairs (evaluate_das.py)"
    fig, axes = plt.subplots(len(names), len(ks), figsize=(3.9 * len(ks), 2.9 * len(names)), sharex=True, sharey=True, squeeze=False)
    for row, trained in enumerate(names):
        for column, k in enumerate(ks):
            ax = axes[row][column]
            for i, test in enumerate(names):
                own = test == trained
                ax.plot(layers, [tested[(trained, layer, k)][test] for layer in layers], "o-" if own else ".-", color=f"C{i}",
                        lw=2.4 if own else 1.1, ms=4 if own else 3, label=f"tested on {test}" + (" (trained on)" if own else ""))
            control = [cells[(trained, layer, k)].get("control_iia_own_model") for layer in layers]
            if all(v is not None for v in control):
                ax.plot(layers, control, "--", color="black", lw=1, label="control: random-init network")
            ax.set_title(f"trained on {trained}, {_k_label(k, n)}", fontsize=9)
            ax.set_ylim(0, 1.02)
            ax.set_xticks(layers)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if row == len(names) - 1:
                ax.set_xlabel("block whose output is intervened on")
            if column == 0:
                ax.set_ylabel("IIA")
            if row == 0 and column == len(ks) - 1:
                ax.legend(fontsize=7)
    fig.suptitle(f"Sanity check: DAS trained on one arithmetic causal model, tested on each ({source})", fontsize=10)
    return finish(plt, fig, out)


def _heatmap(ax, table, layers, ks, n, title, control=None):
    image = ax.imshow(table, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
    for i in range(len(layers)):
        for j in range(len(ks)):
            text = f"{table[i][j]:.2f}" + (f"\n({control[i][j]:.2f})" if control is not None else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color="white" if table[i][j] < 0.6 else "black")
    ax.set_xticks(range(len(ks)), [f"{k}" + (" (all)" if k == n else "") for k in ks], fontsize=7.5)
    ax.set_yticks(range(len(layers)), layers, fontsize=7.5)
    ax.set_xlabel("k", fontsize=8)
    ax.set_title(title, fontsize=9)
    return image


def _table(summary: dict, name: str, key: str = "iia_own_model"):
    cells = _sweep_cells(summary)
    return [[cells[(name, layer, k)].get(key) for k in summary["low_rank_dims"]] for layer in summary["layers"]]


def plot_empirical(summary_json: str | Path, out: str | Path) -> Path:
    """Simple causal models: IIA per layer x k for each input copied from the source. High IIA for
    (X)+Y+Z at a layer means the intervened subspace there carries X and only X."""
    plt = pyplot()
    summary = read_json(summary_json)
    names, ks, layers, n = summary["causal_models"], summary["low_rank_dims"], summary["layers"], summary["n"]
    fig, axes = plt.subplots(1, len(names), figsize=(2.2 + 1.0 * len(ks) * len(names), 0.3 * len(layers) + 2.2), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        variable = name[name.index("(") + 1 : name.index(")")]
        image = _heatmap(ax, _table(summary, name), layers, ks, n, f"{name}\nwhere does {variable} live?")
    axes[0][0].set_ylabel("block whose output is intervened on")
    fig.supxlabel(f"k = dimensions of the aligned subspace ({n} = all: a full swap of the six tokens)", fontsize=8.5)
    fig.colorbar(image, ax=axes[0].tolist(), label="IIA (fresh test pairs)", shrink=0.9)
    fig.suptitle("Where does each input live? DAS aligning one input (or the whole sum) with a k-dimensional subspace of all six tokens",
                 fontsize=10)
    return finish(plt, fig, out)


def plot_overview(summary_jsons: list[str | Path], out: str | Path) -> Path:
    """Every causal model of every sweep: IIA per layer x k, the random-init control in brackets."""
    plt = pyplot()
    summaries = [read_json(path) for path in summary_jsons]
    width = max(len(s["causal_models"]) for s in summaries)
    ks_max = max(len(s["low_rank_dims"]) for s in summaries)
    n_layers = max(len(s["layers"]) for s in summaries)
    fig, axes = plt.subplots(len(summaries), width, figsize=(1.6 + 1.2 * ks_max * width, (0.34 * n_layers + 1.6) * len(summaries)),
                             squeeze=False)
    image = None
    for row, summary in enumerate(summaries):
        names, ks, layers, n = summary["causal_models"], summary["low_rank_dims"], summary["layers"], summary["n"]
        for column in range(width):
            ax = axes[row][column]
            if column >= len(names):
                ax.axis("off")
                continue
            control = _table(summary, names[column], "control_iia_own_model")
            has_control = all(v is not None for line in control for v in line)
            family = summary["config"]["causal_model_type"]
            image = _heatmap(ax, _table(summary, names[column]), layers, ks, n, f"{names[column]} ({family})", control if has_control else None)
            if column == 0:
                ax.set_ylabel("block whose output is intervened on", fontsize=8)
    fig.supxlabel("k = dimensions of the aligned subspace ('all': a full swap of the six tokens)", fontsize=8.5)
    fig.colorbar(image, ax=axes.ravel().tolist(), label="IIA (fresh test pairs)", shrink=0.8)
    fig.suptitle("DAS on the X+Y+Z GPT-2, every causal model: IIA per layer x k (same DAS on a random-init network in brackets)", fontsize=10)
    return finish(plt, fig, out)
