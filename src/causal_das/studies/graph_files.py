"""IIA graph files: a compressed array (`.npz`, the bit-packed `correct` matrix) beside a JSON record
with its statistics and the array's sha256, so that a truncated or replaced array is detected when it
is read; `graphs.json` lists a results directory's graphs. The graphs step writes them
(`experiments.iia_graphs`), the analyses after it read them (`experiments.disentangling`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from causal_das.analysis.graphs import Graph
from causal_das.runtime.io import atomic_write_json, atomic_writer, read_json
from causal_das.runtime.provenance import file_sha256
from causal_das.tasks import arithmetic

N = arithmetic.N_TRIPLES


def save_graph(directory: Path, name: str, correct: np.ndarray, record: dict) -> dict:
    """Writes `<name>.npz` then `<name>.json` (the JSON last, so its presence means both are whole)."""
    base = directory / name
    array_path = base.with_suffix(".npz")
    with atomic_writer(array_path, binary=True) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, correct_packed=np.packbits(correct, axis=1), shape=np.array(correct.shape))
    record = {**record, "array_file": array_path.name, "array_sha256": file_sha256(array_path)}
    atomic_write_json(base.with_suffix(".json"), record)
    return record


def load_graph(record_path: str | Path) -> Graph:
    """The graph whose JSON record is at `record_path`; ValueError naming the file if the record or
    its array is missing, truncated or does not match."""
    record_path = Path(record_path)
    rerun = "rerun `python disentangle_causal_models.py graphs` to recompute it"
    if not record_path.is_file():
        raise ValueError(f"graph record {record_path} is missing; {rerun}")
    record = read_json(record_path)
    try:
        array_path = record_path.parent / record["array_file"]
        expected_sha, name, layer, k = record["array_sha256"], record["causal_model"], int(record["layer"]), int(record["k"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{record_path} is not a graph record (no array_file/array_sha256/causal_model/layer/k); {rerun}") from None
    if not array_path.is_file():
        raise ValueError(f"graph array {array_path} is missing; {rerun}")
    if file_sha256(array_path) != expected_sha:
        raise ValueError(f"graph array {array_path} is truncated or was changed (its sha256 differs from {record_path.name}); {rerun}")
    with np.load(array_path) as arrays:
        correct = np.unpackbits(arrays["correct_packed"], axis=1, count=N).astype(bool)
    if correct.shape != (N, N):
        raise ValueError(f"graph array {array_path} has shape {correct.shape}, expected ({N}, {N}); {rerun}")
    return Graph(name, layer, k, correct)


def load_graphs(results_path: str | Path) -> tuple[dict, dict[tuple[str, int], Graph]]:
    """(graphs.json, {(causal model, layer): Graph}) from a results directory; ValueError if there is
    none or any array is missing or truncated."""
    results_path = Path(results_path)
    index_path = results_path / "graphs.json"
    if not index_path.is_file():
        raise ValueError(f"{results_path} holds no IIA graphs (no graphs.json); run `python disentangle_causal_models.py graphs "
                         f"--results_path {results_path}` first")
    index = read_json(index_path)
    rows = index.get("graphs") or []
    if not rows:
        raise ValueError(f"{index_path} lists no graphs; rerun `python disentangle_causal_models.py graphs`")
    graphs = {}
    for row in rows:
        graph = load_graph(results_path / row["record"])
        group = row.get("group", graph.layer)  # the analyses' grouping (see `graph_sites`)
        graphs[(graph.causal_model, group)] = Graph(graph.causal_model, group, graph.k, graph.correct)
    return index, graphs
