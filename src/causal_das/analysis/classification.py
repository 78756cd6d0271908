"""Which causal model explains the network on an input? A decision tree over interpretable features.

Labels come from a division (`division.py`) at one layer: each input's causal model, or
"unexplained". A scikit-learn decision tree is fitted on a training share of the inputs over the
features the task gives them (`InputTable.features`; for X+Y+Z, X, Y, Z, their parities and sums:
`studies.arithmetic_analysis`), its depth chosen by cross-validation on those inputs only, and its
accuracy is reported on held-out inputs it never saw (beside the majority-label rate on them). The
tree is stored as JSON (every node's feature, threshold, children and class counts), so `predict`
and the tree figure need neither scikit-learn nor a pickle.

For every input the IIA actually measured against each causal model is available from the graphs:
the fraction of the 2 (n - 1) ordered pairs that involve the input (as base or as source) whose
interchange gives that model's counterfactual label.
"""

from __future__ import annotations

import warnings

import numpy as np

from causal_das.analysis.inputs import InputTable


def measured_iia(correct: np.ndarray, index: int) -> float:
    """Fraction of the ordered pairs with `index` as base or source whose interchange is correct."""
    n = len(correct)
    return float((correct[index].sum() + correct[:, index].sum()) / (2 * (n - 1)))


def iia_with_set(weight: np.ndarray, index: int, members: list[int]) -> float | None:
    """Mean edge weight between an input and the other members of a division set (the quantity the
    division thresholds), or None for an empty set."""
    others = [m for m in members if m != index]
    return float(weight[index, others].mean()) if others else None


def split_inputs(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices, stratified by label where every label has at least two inputs."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(f"--test_fraction must be in (0, 1), got {test_fraction}")
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 else None
    train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(test)


def fit_tree(x: np.ndarray, y: np.ndarray, max_depths: tuple[int, ...], folds: int, seed: int):
    """(fitted tree, {depth: mean cross-validated accuracy}, chosen depth); CV on (x, y) only.

    The depth is the smallest whose CV accuracy is within one standard error of the best depth's
    (the one-standard-error rule): deeper trees that are not clearly better are harder to read."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.tree import DecisionTreeClassifier

    _, counts = np.unique(y, return_counts=True)
    folds = max(2, min(folds, int(counts.min())))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = {}
    for depth in max_depths:
        with warnings.catch_warnings():
            # A class with a single input (e.g. a division set of one) cannot be in every fold;
            # sklearn warns once per depth and scores it in the one fold that holds it, which is right.
            warnings.filterwarnings("ignore", message="The least populated class in y has only", category=UserWarning)
            fold_scores = cross_val_score(DecisionTreeClassifier(max_depth=depth, random_state=seed), x, y, cv=splitter, scoring="accuracy")
        scores[int(depth)] = (float(fold_scores.mean()), float(fold_scores.std(ddof=1) / np.sqrt(len(fold_scores))))
    best = max(scores, key=lambda d: (scores[d][0], -d))
    chosen = min(d for d, (mean, _) in scores.items() if mean >= scores[best][0] - scores[best][1])
    tree = DecisionTreeClassifier(max_depth=chosen, random_state=seed).fit(x, y)
    return tree, {d: mean for d, (mean, _) in scores.items()}, chosen


def tree_to_json(tree, feature_names, class_names) -> dict:
    """Every node reachable from the root (0): feature and threshold (internal) or nothing (leaf),
    children, class counts, prediction. A split whose whole subtree predicts one class decides
    nothing (sklearn splits wherever the impurity drops, even when both sides keep the same
    majority): it is stored as a leaf, so that the rules and the first split say only what changes
    a prediction; `merged_splits` counts them. Predictions are unchanged: a class that is the
    majority on both sides of a split is the majority of their union."""
    t = tree.tree_

    def predicts(i: int) -> set[int]:
        if t.children_left[i] == -1:
            return {int(np.argmax(t.value[i][0]))}
        return predicts(t.children_left[i]) | predicts(t.children_right[i])

    nodes, merged = [], [0]

    def add(i: int) -> int:
        index = len(nodes)
        counts = t.value[i][0] * t.weighted_n_node_samples[i]  # sklearn stores fractions
        node = {"feature": None, "threshold": None, "left": None, "right": None, "n_samples": int(t.n_node_samples[i]),
                "class_counts": {c: int(round(v)) for c, v in zip(class_names, counts, strict=True)},
                "prediction": class_names[int(np.argmax(t.value[i][0]))]}
        nodes.append(node)
        if t.children_left[i] != -1:
            if len(predicts(i)) == 1:
                merged[0] += 1
            else:
                node.update(feature=feature_names[t.feature[i]], threshold=float(t.threshold[i]))
                node["left"] = add(t.children_left[i])
                node["right"] = add(t.children_right[i])
        return index

    add(0)
    return {"features": list(feature_names), "classes": list(class_names), "nodes": nodes, "merged_splits": merged[0]}


def predict_with(tree_json: dict, x: np.ndarray, feature_names) -> list[str]:
    """The class the stored tree gives each row of `x`, (m, len(feature_names)) features named by
    `feature_names` (goes left when feature <= threshold)."""
    column = {name: i for i, name in enumerate(feature_names)}
    missing = [name for name in tree_json["features"] if name not in column]
    if missing:
        raise ValueError(f"the stored tree was fitted on features {missing} that the given ones ({list(feature_names)}) lack")
    nodes = tree_json["nodes"]
    out = []
    for row in x:
        node = nodes[0]
        while node["feature"] is not None:
            node = nodes[node["left"] if row[column[node["feature"]]] <= node["threshold"] else node["right"]]
        out.append(node["prediction"])
    return out


def rules_text(tree_json: dict) -> str:
    """The stored tree as indented rules, one line per branch (the layout of sklearn's export_text)."""
    nodes, lines = tree_json["nodes"], []

    def write(i: int, depth: int) -> None:
        node, indent = nodes[i], "|   " * depth
        if node["feature"] is None:
            lines.append(f"{indent}|--- class: {node['prediction']}")
            return
        for side, sign in (("left", "<="), ("right", "> ")):
            lines.append(f"{indent}|--- {node['feature']} {sign} {node['threshold']:.2f}")
            write(node[side], depth + 1)

    write(0, 0)
    return "\n".join(lines) + "\n"


def wilson_interval(rate: float, n: int, z: float = 1.96) -> list[float]:
    """[low, high] of the Wilson score interval of a proportion `rate` observed on `n` trials."""
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def first_split(tree_json: dict) -> str | None:
    """The root's rule, e.g. 'X <= 5.50', or None when no split changes a prediction."""
    root = tree_json["nodes"][0]
    return None if root["feature"] is None else f"{root['feature']} <= {root['threshold']:.2f}"


def repeated_splits(labels: np.ndarray, inputs: InputTable, test_fraction: float, max_depths, folds: int, seed: int, splits: int,
                    first: str | None) -> dict:
    """How much the held-out accuracy and the tree's first rule move with the held-out split: the
    whole fit (depth by cross-validation, tree, held-out accuracy) redone on `splits` other random
    splits (seeds seed+1 ... seed+splits). `first` is the first rule of the reported tree."""
    x = inputs.require_features()
    accuracy, majority, rules = [], [], []
    for s in range(seed + 1, seed + 1 + splits):
        train, test = split_inputs(labels, test_fraction, s)
        tree, _, _ = fit_tree(x[train], labels[train], tuple(max_depths), folds, s)
        common = max(set(labels[train].tolist()), key=lambda c: (np.sum(labels[train] == c), c))
        accuracy.append(float(np.mean(tree.predict(x[test]) == labels[test])))
        majority.append(float(np.mean(labels[test] == common)))
        rules.append(first_split(tree_to_json(tree, inputs.feature_names, [str(c) for c in tree.classes_])))
    margins = np.array(accuracy) - np.array(majority)
    return {
        "splits": splits, "seeds": list(range(seed + 1, seed + 1 + splits)),
        "heldout_accuracy": {"mean": float(np.mean(accuracy)), "std": float(np.std(accuracy)), "min": float(np.min(accuracy)),
                             "max": float(np.max(accuracy)), "values": accuracy},
        "heldout_majority_rate_mean": float(np.mean(majority)),
        "above_majority_mean": float(np.mean(margins)),
        "splits_above_majority": int(np.sum(margins > 0)),
        "first_split_counts": {rule or "(one leaf)": rules.count(rule) for rule in dict.fromkeys(rules)},
        "same_first_split": float(np.mean([rule == first for rule in rules])),
    }


def classify(assignment: list[str], correct_by_model: dict[str, np.ndarray], inputs: InputTable, test_fraction: float, max_depths,
             folds: int, seed: int, splits: int = 0) -> dict:
    """Fits and evaluates the tree on the features of `inputs` (`assignment`: the division's label of
    each input; `correct_by_model`: each model's (n, n) graph); returns the record the JSON and the
    figure are made of. With `splits`, also how much the result moves over that many other held-out
    splits."""
    labels = np.asarray(assignment, dtype=object)
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise ValueError(f"every input has the same division label ({classes[0]!r}): there is nothing to classify; "
                         "divide with another --faithfulness")
    train, test = split_inputs(labels, test_fraction, seed)
    x = inputs.require_features()
    tree, cv_scores, depth = fit_tree(x[train], labels[train], tuple(max_depths), folds, seed)
    predicted = tree.predict(x)
    stored = tree_to_json(tree, inputs.feature_names, [str(c) for c in tree.classes_])
    accuracy = float(np.mean(predicted[test] == labels[test]))
    majority = max(set(labels[train].tolist()), key=lambda c: (np.sum(labels[train] == c), c))
    models = list(correct_by_model)
    iia = {m: np.array([measured_iia(correct_by_model[m], i) for i in range(inputs.n)]) for m in models}
    sets = {m: [i for i, label in enumerate(assignment) if label == m] for m in models}
    set_iia = {}
    for m in models:
        weight = (correct_by_model[m].astype(np.float32) + correct_by_model[m].T) / 2
        set_iia[m] = np.array([np.nan if not sets[m] else iia_with_set(weight, i, sets[m]) for i in range(inputs.n)])
    held_out_iia = {}
    for cls in classes:
        chosen = test[predicted[test] == cls]
        held_out_iia[cls] = {
            "n": int(len(chosen)),
            "iia_with_all_triples": {m: (float(iia[m][chosen].mean()) if len(chosen) else None) for m in models},
            "iia_with_division_set": {m: (float(np.nanmean(set_iia[m][chosen])) if len(chosen) and sets[m] else None) for m in models},
        }
    return {
        "classes": classes,
        "features": list(inputs.feature_names),
        "n_train": int(len(train)),
        "n_heldout": int(len(test)),
        "heldout_triples": test.tolist(),
        "cv_accuracy_by_depth": cv_scores,
        "chosen_depth": depth,
        "train_accuracy": float(np.mean(predicted[train] == labels[train])),
        "heldout_accuracy": accuracy,
        # Where the accuracy of n_heldout inputs may lie: the Wilson score interval (95%), which
        # unlike accuracy ± standard error is not a point at an accuracy of 1.
        "heldout_accuracy_interval95": wilson_interval(accuracy, len(test)),
        "heldout_majority_rate": float(np.mean(labels[test] == majority)),
        "majority_label": majority,
        "heldout_confusion": {
            true: {pred: int(np.sum((labels[test] == true) & (predicted[test] == pred))) for pred in classes} for true in classes
        },
        # The check against measurements: held-out inputs grouped by the tree's prediction, with
        # their mean measured IIA against each causal model, over all pairs and within each
        # model's division set.
        "heldout_measured_iia_by_prediction": held_out_iia,
        "rules": rules_text(stored),
        "first_split": first_split(stored),
        "tree": stored,
        **({"other_splits": repeated_splits(labels, inputs, test_fraction, max_depths, folds, seed, splits, first_split(stored))}
           if splits else {}),
    }
