"""Figures of the disentangling analysis, drawn from its JSON files alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from causal_das.plots.common import finish, pyplot
from causal_das.runtime.io import read_json

UNEXPLAINED_COLOUR = "#d9d9d9"


def _colours(names):
    return {name: f"C{i}" for i, name in enumerate(names)}


def plot_graphs(graphs_json: str | Path, out: str | Path) -> Path:
    """Per causal model: mean IIA over all ordered pairs per layer, and the share of edges of weight 1."""
    plt = pyplot()
    index = read_json(graphs_json)
    names, colours = index["causal_models"], _colours(index["causal_models"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in names:
        rows = sorted((g for g in index["graphs"] if g["causal_model"] == name), key=lambda g: g["layer"])
        layers = [g["layer"] for g in rows]
        left.plot(layers, [g["mean_iia"] for g in rows], "o-", color=colours[name], label=f"{name}: all pairs")
        left.plot(layers, [g["mean_iia_label_changing_pairs"] for g in rows], "s--", color=colours[name], alpha=0.7,
                  label=f"{name}: pairs whose label changes")
        right.plot(layers, [g["weight_fractions"]["1"] for g in rows], "o-", color=colours[name], label=f"{name}: weight 1")
        right.plot(layers, [g["weight_fractions"]["0.5"] for g in rows], "s:", color=colours[name], alpha=0.7, label=f"{name}: weight 0.5")
    left.set_ylabel("mean IIA over the ordered pairs")
    right.set_ylabel("fraction of the 499,500 edges")
    for ax in (left, right):
        ax.set_xlabel("block whose output is intervened on")
        ax.set_xticks(sorted({g["layer"] for g in index["graphs"]}))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=7, ncol=1)
    fig.suptitle(f"IIA graphs over the 1000 triples (k = {index['k']}): edge {{i,j}} weight = mean IIA of i<-j and j<-i", fontsize=10)
    return finish(plt, fig, out)


def plot_cliques(cliques_json: str | Path, out: str | Path) -> Path:
    """Top row: clique sizes in the order they were removed, per layer and causal model. Bottom row:
    how many causal models' cliques each triple belongs to."""
    plt = pyplot()
    result = read_json(cliques_json)
    layers = [o["layer"] for o in result["overlap"]]
    names = list(dict.fromkeys(g["causal_model"] for g in result["graphs"]))
    colours = _colours(names)
    fig, axes = plt.subplots(2, len(layers), figsize=(3.6 * len(layers), 6.4), squeeze=False)
    for column, layer in enumerate(layers):
        top = axes[0][column]
        for g in (g for g in result["graphs"] if g["layer"] == layer):
            marker = "" if g["all_exact"] else " (some greedy)"
            top.plot(range(1, len(g["sizes"]) + 1), g["sizes"], "o-", ms=2.5, color=colours[g["causal_model"]],
                     label=f"{g['causal_model']}: {g['n_cliques']} cliques ({g['n_cliques_single_intermediate_value']} of one P) "
                          f"cover {g['coverage']:.0%}{marker}")
        top.set_title(f"layer {layer}", fontsize=10)
        top.set_xlabel("clique (in the order removed)")
        top.set_ylim(0, None)
        top.grid(alpha=0.3)
        top.legend(fontsize=6.5)
        overlap = next(o for o in result["overlap"] if o["layer"] == layer)
        histogram = overlap["triples_in_cliques_of_n_models"]
        bottom = axes[1][column]
        keys = sorted(histogram, key=int)
        bottom.bar([int(k) for k in keys], [histogram[k] for k in keys], color="C7")
        for k in keys:
            bottom.text(int(k), histogram[k], str(histogram[k]), ha="center", va="bottom", fontsize=8)
        shared = "\n".join(f"{p['models'][0]} & {p['models'][1]}: {p['jaccard']:.2f}" for p in overlap["pairs"])
        bottom.text(0.02, 0.97, f"Jaccard of covered triples:\n{shared}", transform=bottom.transAxes, va="top", fontsize=6.5,
                    bbox={"fc": "white", "ec": "grey", "alpha": 0.9})
        bottom.set_xlabel("causal models whose cliques hold the triple", fontsize=8)
        bottom.set_ylim(0, max(histogram.values()) * 1.6)
        bottom.set_xticks([int(k) for k in keys])
        bottom.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("clique size (triples)")
    axes[1][0].set_ylabel("triples")
    fig.suptitle(f"Maximum cliques of weight-1 edges (both orientations correct), removed one by one while >= {result['min_size']} triples\n"
                 "'of one P': every triple of the clique has the same intermediate value, so doing nothing would also be correct",
                 fontsize=9.5)
    return finish(plt, fig, out)


def plot_division(division_json: str | Path, out: str | Path) -> Path:
    """The 10x10x10 cube of triples, one slice per X (rows: Y, columns: Z), coloured by the causal
    model each triple was assigned to; for each layer one row per division rule (the one used
    downstream first)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = pyplot()
    result = read_json(division_json)
    order = result["order"]
    labels = [*order, "unexplained"]
    cmap = ListedColormap([*(f"C{i}" for i in range(len(order))), UNEXPLAINED_COLOUR])
    rows = [(layer["layer"], division) for layer in result["layers"] for division in (layer, layer["other_rule"])]
    fig, axes = plt.subplots(len(rows), 10, figsize=(15, 1.75 * len(rows) + 0.9), squeeze=False)
    for r, (layer, division) in enumerate(rows):
        codes = np.array([labels.index(a) for a in division["assignment"]]).reshape(10, 10, 10)  # [X-1, Y-1, Z-1]
        for x in range(10):
            ax = axes[r][x]
            ax.imshow(codes[x], cmap=cmap, vmin=-0.5, vmax=len(labels) - 0.5, origin="lower")
            ax.set_xticks([0, 9], ["1", "10"], fontsize=6)
            ax.set_yticks([0, 9], ["1", "10"], fontsize=6)
            if r == 0:
                ax.set_title(f"X = {x + 1}", fontsize=8)
            if x == 0:
                sizes = ", ".join(str(division["sizes"][n]) for n in labels)
                ax.set_ylabel(f"layer {layer}, rule {division['rule']}\n({sizes})\nY", fontsize=7)
            if r == len(rows) - 1:
                ax.set_xlabel("Z", fontsize=8)
    handles = [Patch(color=cmap(i), label=label) for i, label in enumerate(labels)]
    fig.legend(handles=handles, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"Division of the triples among causal models (order {' > '.join(order)}, threshold {result['faithfulness']}); "
                 f"rule member: every member's mean IIA with the rest >= it, rule mean: the set's mean pairwise IIA >= it\n"
                 f"set sizes in brackets ({', '.join(labels)}); classification follows rule {result['rule']}", fontsize=9)
    fig.subplots_adjust(bottom=0.1, top=0.9, wspace=0.15, hspace=0.35, left=0.08)
    return finish(plt, fig, out)


def plot_tree(classification_json: str | Path, out: str | Path) -> Path:
    """The fitted decision tree: each split 'feature <= threshold' (left: yes), each leaf its class
    and training-triple counts, coloured by the class predicted there."""
    plt = pyplot()
    record = read_json(classification_json)
    tree = record["tree"]
    nodes = tree["nodes"]
    colours = {c: (UNEXPLAINED_COLOUR if c == "unexplained" else f"C{i}") for i, c in enumerate(c for c in tree["classes"])}
    positions: dict[int, tuple[float, int]] = {}
    next_leaf = [0]

    def outcomes(i: int) -> set[str]:
        node = nodes[i]
        return {node["prediction"]} if node["feature"] is None else outcomes(node["left"]) | outcomes(node["right"])

    # A split whose leaves all predict the same class changes no prediction: drawn as one leaf.
    collapsed = {i for i in range(len(nodes)) if nodes[i]["feature"] is not None and len(outcomes(i)) == 1}

    def is_leaf(i: int) -> bool:
        return nodes[i]["feature"] is None or i in collapsed

    def place(i: int, depth: int) -> float:
        node = nodes[i]
        if is_leaf(i):
            x = float(next_leaf[0])
            next_leaf[0] += 1
        else:
            x = (place(node["left"], depth + 1) + place(node["right"], depth + 1)) / 2
        positions[i] = (x, depth)
        return x

    place(0, 0)
    n_leaves, depth = next_leaf[0], max(d for _, d in positions.values())
    fig, ax = plt.subplots(figsize=(max(8, 1.25 * n_leaves), 1.35 * (depth + 1) + 1.2))
    for i, node in enumerate(nodes):
        if i not in positions:
            continue  # inside a collapsed split
        x, d = positions[i]
        if not is_leaf(i):
            for child in (node["left"], node["right"]):
                cx, cd = positions[child]
                ax.plot([x, cx], [-d, -cd], color="grey", lw=0.8, zorder=1)
            text = f"{node['feature']}\n<= {node['threshold']:g}?\n(n={node['n_samples']})"
            ax.text(x, -d, text, ha="center", va="center", fontsize=6.5, zorder=2,
                    bbox={"boxstyle": "round", "fc": "white", "ec": colours[node["prediction"]]})
        else:
            text = f"{node['prediction']}\n" + "/".join(str(v) for v in node["class_counts"].values())
            ax.text(x, -d, text, ha="center", va="center", fontsize=6, zorder=2,
                    bbox={"boxstyle": "round", "fc": colours[node["prediction"]], "ec": "black", "alpha": 0.85})
    ax.set_xlim(-0.7, n_leaves - 0.3)
    ax.set_ylim(-depth - 0.6, 0.6)
    ax.axis("off")
    ax.set_title(
        f"Decision tree (depth {record['chosen_depth']}, chosen by {record['folds']}-fold CV, one-SE rule"
        f"{'; splits that change no prediction drawn as leaves' if tree.get('merged_splits') or collapsed else ''}) "
        f"predicting the causal model of a triple at layer {record['layer']}\nheld-out accuracy {record['heldout_accuracy']:.3f} on {record['n_heldout']} unseen triples "
        f"(majority label '{record['majority_label']}': {record['heldout_majority_rate']:.3f}); left branch = yes; "
        f"leaf: prediction and training triples per class ({' / '.join(tree['classes'])})",
        fontsize=9,
    )
    return finish(plt, fig, out)


def plot_seed_variation(seeds_json: str | Path, out: str | Path) -> Path:
    """Per causal model of the first division group: the Jaccard index of every pair of runs' sets
    (1 on the diagonal), titled with each run's site and set size."""
    import itertools

    plt = pyplot()
    result = read_json(seeds_json)
    group = result["groups"][0]
    runs = [Path(run).parent.name or run for run in result["runs"]]
    models = list(group["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(4.4 * len(models), 3.8), squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], models, strict=True):
        m = group["models"][name]
        matrix = np.eye(len(runs))
        for (i, j), value in zip(itertools.combinations(range(len(runs)), 2), m["jaccard_pairs"], strict=True):
            matrix[i, j] = matrix[j, i] = value
        ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        for i, j in itertools.product(range(len(runs)), repeat=2):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8, color="white" if matrix[i, j] < 0.6 else "black")
        ax.set_xticks(range(len(runs)), runs, fontsize=7, rotation=30)
        ax.set_yticks(range(len(runs)), [f"{r}: {s} ({n})" for r, s, n in zip(runs, m["sites"], m["sizes"], strict=True)], fontsize=7)
        ax.set_title(f"{name}: {'stable' if m['stable'] else 'changes with the seed'}", fontsize=9)
    fig.suptitle(f"{group['group']}: Jaccard index of the division sets between runs (rows: run, site, set size); "
                 f"{group['triples_with_one_label_in_every_run']:.3f} of the triples get one label in every run", fontsize=9)
    return finish(plt, fig, out)
