"""The graphs step of `disentangle_causal_models.py`: one IIA graph (see `analysis.graphs`) over the
1000 triples (`studies.arithmetic_analysis.INPUTS` gives their counterfactual labels) per trained
sweep cell, resumable and reused while its inputs (the sweep cell's settings, the network,
W) are unchanged, locally or as Ray tasks.

Each graph is a compressed array (`.npz`, the bit-packed `correct` matrix) beside a JSON record with
its statistics and the array's sha256, so a truncated or replaced array is detected when it is read.
"""


from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from causal_das.analysis.graphs import correct_matrices, statistics
from causal_das.das import engine
from causal_das.runtime import devices
from causal_das.runtime.io import (
    atomic_write_json,
    check_results_path,
    read_json,
    run_metadata,
)
from causal_das.runtime.provenance import Tally, file_sha256, load_current, model_fingerprint
from causal_das.runtime.sweep import grouped, run_groups, split_finished
from causal_das.studies import arithmetic_decoder, graph_sites
from causal_das.studies.arithmetic_analysis import INPUTS
from causal_das.studies.arithmetic_network import Network
from causal_das.studies.graph_files import load_graph, save_graph
from causal_das.studies.graph_sites import GraphKey
from causal_das.tasks import arithmetic


@dataclass(frozen=True)
class GraphsConfig:
    sweep_path: str = "results/gpt2/das_arithmetic"
    results_path: str = "results/gpt2/disentangling"
    causal_models: tuple[str, ...] | None = None  # None: every model of the sweep
    layers: tuple[int, ...] | None = None  # a thesis sweep's layers (None: every layer of the sweep)
    k: int | None = None  # None: the sweep's smallest k below the full swap
    model_path: str | None = None  # None: the network recorded in the sweep
    executor: str = "local"  # or "processes" / "ray": one task per graph (see causal_das.runtime.executors)
    ray_address: str | None = None
    ray_cpus: int | None = None
    workers: int | None = None
    device: str = "auto"  # see causal_das.runtime.devices
    precision: str = "auto"
    sites: tuple[str, ...] | None = None  # a position sweep's sites, LAYER:POSITIONS or "best" (None: best)


def compute_graphs(network, summary: dict, sweep: Path, out: Path, k: int, keys: list[GraphKey], spec_for: dict, why: dict) -> dict:
    """Builds the graphs of the sweep cells `keys`, all at one site, together (`correct_matrices`),
    and saves them; returns {key: record}."""
    started = time.perf_counter()
    layer = keys[0].layer
    trained = [engine.TrainedIntervention.load(sweep / "interventions" / key.cell_name(k)) for key in keys]
    site = network.site(layer, graph_sites.positions(summary, keys[0]))
    causal_models = [arithmetic.get_model(key.causal_model) for key in keys]
    label = f"{keys[0].site_label}: " + ", ".join(key.causal_model for key in keys)
    matrices = correct_matrices(network, site, trained, causal_models, labels=INPUTS.labels, progress=label)
    seconds = (time.perf_counter() - started) / len(keys)  # each graph's share of its site's time
    records = {}
    for key, correct in zip(keys, matrices, strict=True):
        record = {
            "experiment": "iia_graph",
            "causal_model": key.causal_model,
            "layer": layer,
            **({"position_set": key.position_set} if key.position_set is not None else {}),
            "k": k,
            "site": str(site.name),
            "sweep": str(sweep),
            **({"selection": why[key]} if key in why else {}),
            **statistics(correct, INPUTS.values_of(key.causal_model)),
            "settings": spec_for[key][0],
            "inputs": spec_for[key][1],
            "status": "done",
            "seconds": seconds,
            **run_metadata(),
        }
        records[key] = save_graph(out, key.graph_name(k), correct, record)
    return records


def graphs_task(config: GraphsConfig, cwd: str, k: int, spec_for: dict, why: dict, keys: tuple) -> dict:
    """The graphs `keys` (of one site) as a Ray task or worker process (paths are meant against the
    driver's working directory `cwd`); {key: record}."""
    os.chdir(cwd)
    sweep, out = Path(config.sweep_path), Path(config.results_path) / "graphs"
    summary = read_json(sweep / "summary.json")

    def graph_path(key):
        return out / f"{key.graph_name(k)}.json"

    def compute(group):
        device = devices.setup(config.device, config.precision)
        model, tokenizer = arithmetic_decoder.load_classifier(config.model_path or graph_sites.model_path(summary), device)
        network = Network.load(model, arithmetic_decoder.encode_prompts(tokenizer), [group[0].layer])
        with engine.frozen(model):
            return compute_graphs(network, summary, sweep, out, k, group, spec_for, why)

    records, _ = run_groups([list(keys)], graph_path, lambda key: _finished_graph(graph_path(key), spec_for[key]), compute, lambda g: g)
    return records


def _finished_graph(path: Path, spec: tuple[dict, dict], tally=None) -> dict | None:
    """The graph's record if it is finished with these settings and inputs and its array is whole."""
    record = load_current(path, *spec, companions=(path.with_suffix(".npz"),), tally=tally)
    if record is not None:
        try:
            load_graph(path)
        except ValueError:
            if tally is not None:
                tally.retract_reuse("some arrays were truncated or changed")
            return None
    return record


def graph_spec(sweep: Path, key: GraphKey, k: int) -> tuple[dict, dict]:
    """(settings, inputs) of the graph of one sweep cell. Settings: the sweep's flags (a graph of a
    sweep made with other flags is not mixed in); inputs: the cell's own inputs (the network) and the
    sha256 of its trained W, so a recomputed cell makes its graph stale."""
    cell = read_json(sweep / "cells" / f"{key.cell_name(k)}.json")
    weights = sweep / "interventions" / key.cell_name(k) / "weights.safetensors"
    settings = {"sweep_cell_settings": cell.get("settings"), "causal_model": key.causal_model, "layer": key.layer, "k": k}
    if key.position_set is not None:
        settings["position_set"] = key.position_set
    return settings, {"sweep_cell": cell.get("inputs"), "weights_sha256": file_sha256(weights)}


def run_graphs(config: GraphsConfig) -> dict:
    """Builds (or reuses, when finished with the same settings) every selected graph; writes
    graphs/<model>/<cell>.{npz,json} and graphs.json under `results_path`."""
    sweep = Path(config.sweep_path)
    device = devices.setup(config.device, config.precision) if config.executor == "local" else None
    if not (sweep / "summary.json").is_file():
        raise ValueError(f"{sweep} holds no run_das.py results (no summary.json); run run_das.py --results_path {sweep} first")
    summary = read_json(sweep / "summary.json")
    selected, k, why = graph_sites.select(summary, sweep, config.causal_models, config.layers, config.k, config.sites)
    out = check_results_path(config.results_path) / "graphs"
    cells = list(dict.fromkeys(key.cell for key in selected))  # a site selected twice is built once
    spec_for = {cell: graph_spec(sweep, cell, k) for cell in cells}
    why = {key.cell: reason for key, reason in why.items()}

    def graph_path(key):
        return out / f"{key.graph_name(k)}.json"

    def finished(key, tally=None):
        return _finished_graph(graph_path(key), spec_for[key], tally)

    records, todo = split_finished(cells, finished, Tally("graphs"))
    started = time.perf_counter()
    if todo:
        model_path = config.model_path or graph_sites.model_path(summary)
        model, tokenizer = arithmetic_decoder.load_classifier(model_path)
        if model_fingerprint(model) != summary.get("model_fingerprint"):
            if config.model_path is not None:
                raise ValueError(f"--model_path {model_path} is not the network the sweep in {sweep} was trained on")
            raise ValueError(f"the network at {model_path} changed since the sweep in {sweep} was trained; rerun "
                             f"run_das.py --model_path {model_path} --results_path {sweep} first (it recomputes the stale cells)")
    groups = grouped(todo, lambda key: (key.layer, key.position_set))
    if todo and config.executor in ("ray", "processes"):
        from causal_das.runtime.executors import map_tasks

        # One task per graph, the earliest layers (the longest suffixes) first: a site's graphs
        # together gain little (benchmarks/bench_sweep.py), tasks of equal size balance the workers.
        tasks = [(key,) for key in sorted(todo, key=lambda key: key.layer)]
        task = functools.partial(graphs_task, config, os.getcwd(), k, spec_for, why)
        for fresh in map_tasks(config.executor, task, tasks, config.ray_address, config.ray_cpus, config.workers,
                               device=config.device, desc="IIA graphs").values():
            records.update(fresh)
    elif todo:
        model.to(device)
        print(f"computing on {devices.describe()}", flush=True)
        network = Network.load(model, arithmetic_decoder.encode_prompts(tokenizer), sorted({key.layer for key in todo}))

        def compute(group):
            return compute_graphs(network, summary, sweep, out, k, group, spec_for, why)

        with engine.frozen(model):
            fresh, _ = run_groups(groups, graph_path, finished, compute, lambda groups: tqdm(groups, desc="IIA graphs", unit="site"))
        records.update(fresh)
    index = {
        "experiment": "iia_graphs",
        "sweep": str(sweep),
        "k": k,
        "causal_models": list(dict.fromkeys(key.causal_model for key in selected)),
        "groups": list(dict.fromkeys(key.group for key in selected)),
        "layers": list(dict.fromkeys(key.layer for key in selected)),
        "graphs": [_index_row(records[key.cell], key, k) for key in selected],
        **({} if selected else {"stopped": graph_sites.NOTHING_REAL}),
        "seconds": time.perf_counter() - started,
        **run_metadata(),
    }
    atomic_write_json(Path(config.results_path) / "graphs.json", index)
    return index


def _index_row(record: dict, key: GraphKey, k: int) -> dict:
    names = ("causal_model", "layer", "k", "mean_iia", "mean_iia_label_changing_pairs", "weight_fractions", "n_edges_weight_1",
             "fraction_weight_1_same_intermediate", "degree_weight_1", "seconds")
    row = {name: record[name] for name in names}
    row.update(group=key.group, position_set=key.position_set, site=key.site_label)
    if "selection" in record:
        row["selection"] = record["selection"]
    row["record"] = f"graphs/{key.graph_name(k)}.json"
    return row


def graphs_table(index: dict) -> str:
    lines = [f"IIA graphs (k={index['k']}): mean IIA over 999,000 ordered pairs; fraction of the 499,500 edges with weight 0 / 0.5 / 1"]
    lines.append("(IIA if label changes: only pairs whose counterfactual label differs from the base's; w=1 same P: share of weight-1 "
                 "edges joining triples with equal intermediate value, which an intervention that does nothing also gets right)")
    lines.append(f"{'causal model':>12} {'site':>8} {'group':>10} {'mean IIA':>9} {'IIA if label changes':>21} {'w=0':>7} {'w=0.5':>7} {'w=1':>7} "
                 f"{'w=1 same P':>11} {'mean deg(w=1)':>14} {'seconds':>8}")
    for g in index["graphs"]:
        f = g["weight_fractions"]
        same = g["fraction_weight_1_same_intermediate"]
        site, group = g.get("site") or f"L{g['layer']}", g.get("group", g["layer"])
        lines.append(f"{g['causal_model']:>12} {site:>8} {group!s:>10} {g['mean_iia']:>9.3f} {g['mean_iia_label_changing_pairs']:>21.3f} "
                     f"{f['0']:>7.3f} {f['0.5']:>7.3f} {f['1']:>7.3f} {('-' if same is None else format(same, '.3f')):>11} "
                     f"{g['degree_weight_1']['mean']:>14.1f} {g['seconds']:>8.1f}")
    return "\n".join(lines)
