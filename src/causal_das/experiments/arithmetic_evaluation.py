"""Re-evaluating a finished sweep (`evaluate_das.py`): every saved W measured against every causal
model of the chosen families, on fresh pairs or on all 999,000 ordered pairs of distinct prompts,
per cell, resumable, reused while the network and W are unchanged."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from causal_das.das import engine
from causal_das.models.answer_head import head_kind
from causal_das.runtime import devices
from causal_das.runtime.io import atomic_write_json, read_json, run_metadata
from causal_das.runtime.provenance import Tally, file_sha256, load_current, model_fingerprint
from causal_das.runtime.sweep import run_groups
from causal_das.studies import arithmetic_decoder
from causal_das.studies.arithmetic_cells import (
    SweepConfig,
    cell_name,
    group_by_layer,
    load_sweep_config,
    sweep_pairs,
    sweep_settings,
)
from causal_das.studies.arithmetic_network import Network
from causal_das.tasks import arithmetic

log = logging.getLogger(__name__)


def evaluate_saved(
    results_path: str | Path,
    test_families: tuple[str, ...],
    n_testing: int,
    all_pairs: bool,
    seed: int,
    engine_name: str = "fast",
    model_path: str | None = None,
    cell_filter=None,
    batch_size: int = 8192,
    executor: str = "local",
    ray_address: str | None = None,
    ray_cpus: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    workers: int | None = None,
) -> dict:
    """Reloads every saved intervention of a sweep and measures IIA against every causal model of
    `test_families`, on `n_testing` fresh pairs (disjoint from the sweep's training pairs) or on all
    999,000 ordered pairs. Returns the evaluation record (the caller writes it). The cells of a layer
    are evaluated together (the fast engine puts several W in one suffix pass); with `executor`
    "processes" or "ray", each layer's cells are one task.

    Each cell's scores are kept in `evaluations/<settings hash>/` inside the sweep as they finish, so
    an interrupted evaluation resumes: a rerun with the same settings skips evaluated cells (and
    recomputes one whose W changed since)."""
    results_path = Path(results_path)
    on = devices.setup(device, precision) if executor == "local" else None
    config = replace(load_sweep_config(results_path), device=device, precision=precision)
    if model_path is not None:
        config = replace(config, model_path=model_path)
    models = [m for family in test_families for m in arithmetic.get_family(family)]
    model, tokenizer = arithmetic_decoder.load_classifier(config.model_path)
    summary = read_json(results_path / "summary.json")
    fingerprint = model_fingerprint(model)
    if fingerprint != summary.get("model_fingerprint"):
        if model_path is not None:
            raise ValueError(f"--model_path {config.model_path} is not the network the sweep in {results_path} was trained on")
        raise ValueError(f"the network at {config.model_path} changed since the sweep in {results_path} was trained; rerun "
                         f"run_das.py --model_path {config.model_path} --results_path {results_path} first (it recomputes the stale cells)")
    input_ids = arithmetic_decoder.encode_prompts(tokenizer)
    test_ids = evaluation_pairs(config, all_pairs, n_testing, seed)
    rows = [c for c in summary["cells"] if cell_filter is None or cell_filter(c)]
    if not rows:
        raise ValueError(f"no cells of {results_path} match the selection")
    keys = [(c["causal_model"], c["layer"], c["k"]) for c in rows]
    settings = {"sweep_config": sweep_settings(config), "test_models": [m.name for m in models],
                "pairs": {"n": len(test_ids), "all_pairs": all_pairs, "seed": seed}, "engine": engine_name}
    cells_dir = evaluation_cells_dir(results_path, settings)
    tally = Tally("cell evaluations")
    for key in keys:
        _finished_evaluation(cells_dir, results_path, settings, fingerprint, key, tally)
    tally.print()
    # Every saved W is read once first (and let go: a thesis sweep's full-swap W are 85 MB each), so a
    # missing or corrupt one stops the run before anything is written.
    for key in keys:
        engine.TrainedIntervention.load(results_path / "interventions" / cell_name(*key))
    started = time.perf_counter()
    groups = group_by_layer(keys)
    if executor in ("ray", "processes"):
        from causal_das.runtime.executors import map_tasks

        task = functools.partial(evaluate_group_task, config, os.getcwd(), str(results_path), test_families, all_pairs, n_testing, seed,
                                 engine_name, batch_size, settings, fingerprint)
        scores = {}
        for group_scores in map_tasks(executor, task, [tuple(g) for g in groups], ray_address, ray_cpus, workers, device=device,
                                      desc="evaluate layers").values():
            scores.update(group_scores)
    else:
        model.to(on)
        network = Network.load(model, input_ids, sorted({c["layer"] for c in rows}))

        def compute(group):
            iia = _evaluate_group(network, model, results_path, config.positions, group, test_ids, models, engine_name, batch_size)
            return {key: _save_evaluation(cells_dir, results_path, settings, fingerprint, key, iia[key]) for key in group}

        with engine.frozen(model):
            records, computed = run_groups(groups, lambda key: _evaluation_path(cells_dir, key),
                                           lambda key: _finished_evaluation(cells_dir, results_path, settings, fingerprint, key), compute,
                                           lambda groups: tqdm(groups, desc="evaluate layers", unit="layer"))
        scores = {key: record["iia"] for key, record in records.items()}
    evaluations = [{"trained_on": name, "layer": layer, "k": k, "iia": scores[(name, layer, k)]} for name, layer, k in keys]
    return {
        "experiment": "evaluate_das",
        **run_metadata(),
        "sweep": str(results_path),
        "sweep_config": sweep_settings(config),
        "head": head_kind(model),
        "test_models": [m.name for m in models],
        "pairs": {"n": len(test_ids), "all_pairs": all_pairs, "includes_training_pairs": all_pairs, "seed": seed},
        "cells": evaluations,
        "evaluation_cells": str(cells_dir),
        "seconds": time.perf_counter() - started,
    }


def evaluation_cells_dir(results_path: Path, settings: dict) -> Path:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return results_path / "evaluations" / digest


def _evaluation_path(cells_dir: Path, key) -> Path:
    return cells_dir / f"{cell_name(*key)}.json"


def _cell_inputs(results_path: Path, fingerprint: str, key) -> dict:
    """What an evaluated cell was derived from: the network and the W it evaluated."""
    return {"model_fingerprint": fingerprint, "weights_sha256": file_sha256(results_path / "interventions" / cell_name(*key) / "weights.safetensors")}


def _finished_evaluation(cells_dir: Path, results_path: Path, settings: dict, fingerprint: str, key, tally=None) -> dict | None:
    return load_current(_evaluation_path(cells_dir, key), {**settings, "cell": list(key)}, _cell_inputs(results_path, fingerprint, key),
                        required=("iia",), tally=tally, mixing="recompute")


def _save_evaluation(cells_dir: Path, results_path: Path, settings: dict, fingerprint: str, key, iia: dict) -> dict:
    record = {"cell": list(key), "iia": iia, "settings": {**settings, "cell": list(key)}, "inputs": _cell_inputs(results_path, fingerprint, key),
              "status": "done", **run_metadata()}
    atomic_write_json(_evaluation_path(cells_dir, key), record)
    return record


def evaluation_pairs(config: SweepConfig, all_pairs: bool, n_testing: int, seed: int) -> np.ndarray:
    """The pairs `evaluate_saved` measures on: all ordered pairs, or fresh ones disjoint from the
    sweep's training pairs (a function of the seed, so a Ray task draws the same ones)."""
    if all_pairs:
        return np.arange(arithmetic.N_PAIRS)
    train_ids, _ = sweep_pairs(config)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    return arithmetic.draw_pairs(rng, n_testing, exclude=train_ids)


def evaluate_group_task(config, cwd, results_path, test_families, all_pairs, n_testing, seed, engine_name, batch_size, settings, fingerprint,
                        keys) -> dict:
    """One layer's cells of `evaluate_saved` as a Ray task or worker process: {key: {causal model:
    IIA}}, kept like a local run's. Paths are meant against the driver's working directory `cwd`."""
    os.chdir(cwd)
    results_path = Path(results_path)
    cells_dir = evaluation_cells_dir(results_path, settings)

    def compute(group):
        model, tokenizer = arithmetic_decoder.load_classifier(config.model_path, devices.setup(config.device, config.precision))
        network = Network.load(model, arithmetic_decoder.encode_prompts(tokenizer), [group[0][1]])
        models = [m for family in test_families for m in arithmetic.get_family(family)]
        pair_ids = evaluation_pairs(config, all_pairs, n_testing, seed)
        with engine.frozen(model):
            iia = _evaluate_group(network, model, results_path, config.positions, group, pair_ids, models, engine_name, batch_size)
        return {key: _save_evaluation(cells_dir, results_path, settings, fingerprint, key, iia[key]) for key in group}

    records, _ = run_groups([list(keys)], lambda key: _evaluation_path(cells_dir, key),
                            lambda key: _finished_evaluation(cells_dir, results_path, settings, fingerprint, key), compute, lambda g: g)
    return {key: record["iia"] for key, record in records.items()}


def _evaluate_group(network, model, results_path: Path, positions, keys, pair_ids, models, engine_name, batch_size,
                    chunk: int = 200_000) -> dict:
    """{key: {causal model: IIA}} of the cells `keys` (all at one layer), streaming the pairs so that
    999,000 of them need little memory; the fast engine evaluates every cell's W in the same passes."""
    site = arithmetic_decoder.site(model, keys[0][1], positions)
    trained = [engine.TrainedIntervention.load(results_path / "interventions" / cell_name(*key)) for key in keys]
    hits = {key: dict.fromkeys((m.name for m in models), 0) for key in keys}
    for start in range(0, len(pair_ids), chunk):
        ids = pair_ids[start : start + chunk]
        base, source = arithmetic.decode_pairs(ids)
        data = engine.InterchangeData(network.input_ids, torch.as_tensor(base), torch.as_tensor(source)[:, None], torch.zeros(len(ids), dtype=torch.long))
        if engine_name == "fast":
            predictions = engine.predict_cells(site, trained, data, batch_size, activations=network.site_states(site))
        else:
            predictions = [engine.predict(site, one, data, engine_name, batch_size=batch_size) for one in trained]
        for m in models:
            labels = arithmetic.counterfactual_labels(m, base, source)
            for key, predicted in zip(keys, predictions, strict=True):
                hits[key][m.name] += int(np.sum(predicted.numpy() == labels))
    return {key: {name: count / len(pair_ids) for name, count in counts.items()} for key, counts in hits.items()}


def evaluation_table(record: dict) -> str:
    """One row per evaluated cell: IIA against each test model (the trained-on model marked *)."""
    models = record["test_models"]
    width = max(9, *(len(m) + 1 for m in models))
    lines = [f"{record['sweep']}: IIA on {record['pairs']['n']:,} pairs" + (" (all ordered pairs)" if record["pairs"]["all_pairs"] else "")]
    lines.append(f"{'trained on':>10} {'layer':>5} {'k':>5} " + "".join(f"{m:>{width}}" for m in models))
    for cell in record["cells"]:
        entries = "".join(f"{(('*' if m == cell['trained_on'] else '') + format(cell['iia'][m], '.3f')):>{width}}" for m in models)
        lines.append(f"{cell['trained_on']:>10} {cell['layer']:>5} {cell['k']:>5} {entries}")
    return "\n".join(lines)
