"""The steps of `disentangle_causal_models.py` after the graphs: cliques, division, classification
and prediction. Each reads the graphs (and the previous step's JSON), writes its JSON atomically
and then its figure. Each result records its flags and its inputs (the graph arrays' sha256, the
division it classifies), so a rerun with the same flags on the same graphs reuses it, and a rerun
after the graphs changed recomputes it (see `provenance`)."""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from causal_das.analysis import classification, cliques, division, stability
from causal_das.analysis.cliques import EXACT_NODES  # noqa: F401  (the script's default)
from causal_das.plots import disentangling as figures
from causal_das.runtime.io import atomic_write_json, read_json, run_metadata
from causal_das.runtime.provenance import Tally, digest, load_current
from causal_das.studies import arithmetic_iit
from causal_das.studies.arithmetic_analysis import INPUTS
from causal_das.studies.graph_files import load_graphs
from causal_das.tasks import arithmetic

STEP_FILES = {"cliques": ("cliques", "cliques.json", "cliques.png"), "divide": ("division", "division.json", "division.png"),
              "classify": ("classification", "classification.json", "classification_tree.png")}  # step: (experiment, record, figure)


def stopped(results_path: str | Path) -> str | None:
    """Why the disentangling in `results_path` stopped at its graphs step (graphs.json's `stopped`:
    no causal model has a real alignment), or None."""
    index_path = Path(results_path) / "graphs.json"
    return read_json(index_path).get("stopped") if index_path.is_file() else None


def write_stopped(results_path: str | Path, step: str, reason: str) -> Path:
    """The step's record saying that it did not run and why (its figure of an earlier run removed, so
    that nothing stale stands beside it)."""
    experiment, name, figure = STEP_FILES[step]
    (Path(results_path) / figure).unlink(missing_ok=True)
    path = Path(results_path) / name
    atomic_write_json(path, {"experiment": experiment, "stopped": reason, "status": "done", **run_metadata()})
    return path


def graph_hashes(results_path: Path) -> dict[str, str | None]:
    """{graph record: its array's sha256} for every graph listed in graphs.json (the inputs of every
    step below); {} when there is no graphs.json (the step then fails with its own message)."""
    index_path = results_path / "graphs.json"
    if not index_path.is_file():
        return {}
    hashes = {}
    for row in read_json(index_path).get("graphs") or []:
        record_path = results_path / row["record"]
        hashes[row["record"]] = read_json(record_path).get("array_sha256") if record_path.is_file() else None
    return hashes


# How a stored tree is made; a record of another format is recomputed. 2: splits that change no
# prediction are merged into leaves (classification.tree_to_json).
TREE_FORMAT = 2


def _reusable(path: Path, settings: dict, inputs: dict, figure: Path, plot) -> dict | None:
    """The record at `path` if it was made with these flags from these inputs (its figure redrawn if
    missing), else None; prints one line either way when a record existed."""
    tally = Tally(path.name)
    record = load_current(path, settings, inputs, tally=tally, mixing="recompute")
    tally.print()
    if record is not None and not figure.is_file():
        plot(path, figure)
    return record


def _write(path: Path, record: dict, settings: dict, inputs: dict, figure: Path, plot) -> dict:
    record = {**record, "settings": settings, "inputs": inputs, "status": "done"}
    atomic_write_json(path, record)
    plot(path, figure)
    return record


def run_cliques(results_path: str | Path, min_size: int, exact_nodes: int, resamples: int = 0) -> dict:
    results_path = Path(results_path)
    settings = {"min_size": min_size, "exact_nodes": exact_nodes, **({"resamples": resamples} if resamples else {})}
    inputs = {"graphs": graph_hashes(results_path)}
    path, figure = results_path / "cliques.json", results_path / "cliques.png"
    record = _reusable(path, settings, inputs, figure, figures.plot_cliques)
    if record is not None:
        return record
    index, graphs = load_graphs(results_path)
    started = time.perf_counter()
    result = cliques.analyse(graphs, INPUTS, min_size, exact_nodes, progress=lambda items: tqdm(list(items), desc="cliques", unit="graph"))
    if resamples:  # how much each graph's cliques move when a fifth of the triples is left out
        for row in tqdm(result["graphs"], desc="cliques of subsets", unit="graph"):
            row["stability"] = stability.resampled_cliques(graphs[(row["causal_model"], row["layer"])].agreement, row["cliques"],
                                                           min_size, exact_nodes, resamples)
    record = {"experiment": "cliques", "k": index["k"], **result, "seconds": time.perf_counter() - started, **run_metadata()}
    return _write(path, record, settings, inputs, figure, figures.plot_cliques)


def _layers_with_all(graphs: dict, order: list[str], layers) -> list[int]:
    available = sorted({layer for _, layer in graphs})
    chosen = available if layers is None else list(layers)
    for layer in chosen:
        missing = [m for m in order if (m, layer) not in graphs]
        if missing:
            raise ValueError(f"no IIA graph for {missing[0]} at layer {layer}; graphs exist for layers {available} "
                             "(build more with `disentangle_causal_models.py graphs --layers ...`)")
    return chosen


def run_division(results_path: str | Path, faithfulness: float, order: list[str] | None, layers=None, rule: str = "member",
                 resamples: int = 0) -> dict:
    division.check_faithfulness(faithfulness)
    if rule not in division.RULES:
        raise ValueError(f"unknown division rule {rule!r}; choose one of {division.RULES}")
    results_path = Path(results_path)
    settings = {"faithfulness": faithfulness, "order": list(order) if order else None, "layers": list(layers) if layers is not None else None,
                "rule": rule, **({"resamples": resamples} if resamples else {})}
    inputs = {"graphs": graph_hashes(results_path)}
    path, figure = results_path / "division.json", results_path / "division.png"
    record = _reusable(path, settings, inputs, figure, figures.plot_division)
    if record is not None:
        return record
    index, graphs = load_graphs(results_path)
    names = index["causal_models"]
    order = list(order) if order else list(names)
    unknown = [m for m in order if m not in names]
    if unknown or len(set(order)) != len(order):
        raise ValueError(f"--order must name distinct causal models among the graphs' {names}, got {order}")
    sites = {(row["causal_model"], row.get("group", row["layer"])): row.get("site") or f"L{row['layer']}" for row in index["graphs"]}
    rows = []
    for layer in _layers_with_all(graphs, order, layers):
        weights = {m: graphs[(m, layer)].weight for m in order}
        # "layer": the graphs' group (the layer, or a site label: see studies.graph_sites); "sites": each model's site.
        rows.append({"layer": layer, "sites": {m: sites[(m, layer)] for m in order}, **division.divide_both(weights, INPUTS, order, faithfulness, rule)})
        if resamples:  # how much the chosen rule's sets move when a fifth of the triples is left out
            rows[-1]["stability"] = stability.resampled(weights, INPUTS, order, faithfulness, rule, rows[-1], resamples)
    induced = induced_answer(index)
    if induced is not None:  # a network trained with known mechanisms (IIT): how well each rule finds them
        expected = arithmetic_iit.induced_labels(induced)
        for row in rows:
            row["agreement_with_induced"] = {row["rule"]: division.agreement(row["assignment"], expected),
                                             row["other_rule"]["rule"]: division.agreement(row["other_rule"]["assignment"], expected)}
            row["induced_region_iia"] = division.region_iia({m: graphs[(m, row["layer"])].weight for m in order}, expected, faithfulness,
                                                            row["assignment"])
    record = {"experiment": "division", "k": index["k"], "faithfulness": faithfulness, "order": order, "rule": rule, "layers": rows,
              **({"induced": induced} if induced is not None else {}), **run_metadata()}
    return _write(path, record, settings, inputs, figure, figures.plot_division)


def induced_answer(index: dict) -> list[dict] | None:
    """The inductions (`train_gpt2.py --induce`) of the network the graphs' sweep was trained on, or
    None when it has none or its records are not at hand."""
    sweep = Path(index.get("sweep", ""))
    try:
        model_path = Path(read_json(sweep / "summary.json")["config"]["model_path"])
        return read_json(model_path / "training.json").get("inductions") or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _division_at(results_path: Path, layer: int | None) -> dict:
    path = results_path / "division.json"
    if not path.is_file():
        raise ValueError(f"{results_path} has no division.json; run `python disentangle_causal_models.py divide --faithfulness F "
                         f"--results_path {results_path}` first")
    record = read_json(path)
    rows = record.get("layers") or []
    if not rows:
        raise ValueError(f"{path} holds no layers; rerun divide")
    if layer is None:
        # The layer where the division explains the most triples in sets that span more than one
        # intermediate value (ties: the lower layer). A set whose triples all share one value is
        # explained as well by an intervention that does nothing, so it is no evidence.
        def informative(r):
            return sum(r["sizes"][m] for m in record["order"] if r["distinct_intermediate_values"][m] > 1)

        return record, max(rows, key=informative)  # ties: the first row (the lower layer), as max keeps the first
    chosen = [r for r in rows if r["layer"] == layer]
    if not chosen:
        raise ValueError(f"{path} has no division at layer {layer}; it has layers {[r['layer'] for r in rows]}")
    return record, chosen[0]


def run_classification(results_path: str | Path, layer: int | None, test_fraction: float, max_depth: int, folds: int, seed: int,
                       splits: int = 0) -> dict:
    results_path = Path(results_path)
    division_record, row = _division_at(results_path, layer)
    settings = {"layer": layer, "test_fraction": test_fraction, "max_depth": max_depth, "folds": folds, "seed": seed,
                **({"splits": splits} if splits else {})}
    inputs = {"graphs": graph_hashes(results_path), "division": digest({"order": division_record["order"], "row": row}),
              "tree_format": TREE_FORMAT}
    path, figure = results_path / "classification.json", results_path / "classification_tree.png"
    record = _reusable(path, settings, inputs, figure, figures.plot_tree)
    if record is not None:
        return record
    _, graphs = load_graphs(results_path)
    correct = {m: graphs[(m, row["layer"])].correct for m in division_record["order"]}
    started = time.perf_counter()
    result = classification.classify(row["assignment"], correct, INPUTS, test_fraction, range(1, max_depth + 1), folds, seed, splits)
    record = {
        "experiment": "classification",
        "layer": row["layer"],
        "k": division_record["k"],
        "faithfulness": division_record["faithfulness"],
        "division_order": division_record["order"],
        "test_fraction": test_fraction,
        "folds": folds,
        "seed": seed,
        **result,
        "seconds": time.perf_counter() - started,
        **run_metadata(),
    }
    return _write(path, record, settings, inputs, figure, figures.plot_tree)


def classification_summary(record: dict) -> str:
    depth_scores = ", ".join(f"{d}: {s:.3f}" for d, s in record["cv_accuracy_by_depth"].items())
    low, high = record["heldout_accuracy_interval95"]
    lines = [
        f"layer {record['layer']}: classes {record['classes']}",
        f"cross-validated accuracy by depth ({record['folds']} folds, training triples only): {depth_scores}",
        f"chosen depth {record['chosen_depth']}: training accuracy {record['train_accuracy']:.3f} on {record['n_train']} triples; "
        f"HELD-OUT accuracy {record['heldout_accuracy']:.3f} (95% interval {low:.3f}-{high:.3f}) on {record['n_heldout']} "
        f"unseen triples (always '{record['majority_label']}': {record['heldout_majority_rate']:.3f})",
    ]
    if record["tree"].get("merged_splits"):
        lines.append(f"{record['tree']['merged_splits']} split(s) whose two sides predict the same class merged into leaves "
                     f"(they change no prediction)")
    if "other_splits" in record:
        other = record["other_splits"]
        acc = other["heldout_accuracy"]
        lines.append(f"over {other['splits']} other held-out splits: accuracy {acc['mean']:.3f} ± {acc['std']:.3f} (range {acc['min']:.3f}-"
                     f"{acc['max']:.3f}) against the majority's {other['heldout_majority_rate_mean']:.3f}, above it in "
                     f"{other['splits_above_majority']}; first rule '{record['first_split'] or '(one leaf)'}' in {other['same_first_split']:.0%} of them")
    lines.append("held-out triples by predicted model: mean IIA measured with the triples of each model's division set")
    for cls, row in record["heldout_measured_iia_by_prediction"].items():
        values = ", ".join(f"{m} {v:.2f}" for m, v in row["iia_with_division_set"].items() if v is not None)
        values = values if row["n"] else "no held-out triple is predicted so"
        lines.append(f"  predicted {cls:>12} (n={row['n']:>3}): {values}")
    return "\n".join(lines)


def predict(results_path: str | Path, triples: list[tuple[int, int, int]]) -> list[dict]:
    """For each triple: the tree's predicted causal model, the division's label, whether the tree was
    fitted on it, and the IIA measured for it against each model (all pairs; within each set)."""
    results_path = Path(results_path)
    path = results_path / "classification.json"
    if not path.is_file():
        raise ValueError(f"{results_path} has no classification.json; run `python disentangle_causal_models.py classify "
                         f"--results_path {results_path}` first")
    record = read_json(path)
    division_record, row = _division_at(results_path, record["layer"])
    _, graphs = load_graphs(results_path)
    indices = [int(arithmetic.triple_index(*t)) for t in triples]
    predicted = classification.predict_with(record["tree"], INPUTS.features[indices], INPUTS.feature_names)
    heldout = set(record["heldout_triples"])
    out = []
    for t, i, p in zip(triples, indices, predicted, strict=True):
        entry = {"triple": list(t), "predicted": p, "division": row["assignment"][i], "used_to_fit": i not in heldout, "layer": record["layer"]}
        entry["iia_with_all_triples"], entry["iia_with_division_set"] = {}, {}
        for m in division_record["order"]:
            graph = graphs[(m, record["layer"])]
            entry["iia_with_all_triples"][m] = classification.measured_iia(graph.correct, i)
            entry["iia_with_division_set"][m] = classification.iia_with_set(graph.weight, i, row["sets"][m])
        out.append(entry)
    return out


def prediction_table(rows: list[dict]) -> str:
    models = list(rows[0]["iia_with_all_triples"])
    width = max(10, *(len(m) + 2 for m in models))
    lines = [f"layer {rows[0]['layer']}: IIA measured for the triple against each causal model over all 1998 ordered pairs it is in "
             "[and with the triples of that model's division set]"]
    lines.append(f"{'triple':>8} {'predicted':>12} {'division':>12} {'fitted on':>9} " + "".join(f"{m:>{width + 8}}" for m in models))
    for r in rows:
        cells = []
        for m in models:
            in_set = r["iia_with_division_set"][m]
            cells.append(f"{r['iia_with_all_triples'][m]:.2f} [{'-' if in_set is None else format(in_set, '.2f')}]")
        triple = "+".join(map(str, r["triple"]))
        lines.append(f"{triple:>8} {r['predicted']:>12} {r['division']:>12} {'yes' if r['used_to_fit'] else 'no':>9} "
                     + "".join(f"{c:>{width + 8}}" for c in cells))
    return "\n".join(lines)


def run_seed_comparison(results_paths: list[str | Path], output: str | Path) -> dict:
    """Compares the cliques, divisions and classifiers of runs made with other seeds (one results
    directory each, every one with its division.json) and writes `output`; always recomputed (it
    reads a few JSON files)."""
    from causal_das.analysis import seed_variation

    paths = [Path(p) for p in results_paths]
    missing = [str(p) for p in paths if not (p / "division.json").is_file()]
    if missing:
        raise ValueError(f"no division.json in {', '.join(missing)}; run `disentangle_causal_models.py divide` there first")

    def optional(path: Path, name: str) -> dict | None:
        return read_json(path / name) if (path / name).is_file() else None

    stopped_runs = {str(p): read_json(p / "division.json").get("stopped") for p in paths}
    paths = [p for p in paths if not stopped_runs[str(p)]]
    stopped_runs = {path: why for path, why in stopped_runs.items() if why}
    if len(paths) < 2:  # runs that found nothing real to disentangle have no sets to compare
        record = {"experiment": "seed_variation", "stopped": f"{len(stopped_runs)} of the runs stopped before dividing (nothing real to "
                  "disentangle at), so fewer than two divisions are left to compare", "stopped_runs": stopped_runs, **run_metadata()}
        atomic_write_json(Path(output), record)
        return record
    result = seed_variation.compare_runs([read_json(p / "division.json") for p in paths], [optional(p, "cliques.json") for p in paths],
                                         [optional(p, "classification.json") for p in paths], [str(p) for p in paths])
    record = {"experiment": "seed_variation", **result, **({"stopped_runs": stopped_runs} if stopped_runs else {}), **run_metadata()}
    atomic_write_json(Path(output), record)
    return record
