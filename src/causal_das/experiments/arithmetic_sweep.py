"""DAS on the X+Y+Z decoder classifier (`run_das.py`; GPT-2 by default, any decoder family): the
sweep over (causal model, layer, k) cells.

A cell trains W at `block_output` of one layer, over the chosen token positions concatenated
(n = positions x width), on the counterfactuals of one causal model; saves W; and measures IIA on
fresh pairs (disjoint from the training pairs) against every model of the family, with the
network in eval mode, beside the baselines and the same DAS on a randomly initialised copy of
the network. k = n is a full interchange and needs no training.

Every (base, source) pair is two indices into the 1000 prompts, so each layer's block output is
computed once for all prompts (one forward pass for every layer) and a DAS step runs only the
blocks after the site.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from causal_das.das import engine
from causal_das.das.evaluation import rate_interval
from causal_das.models.answer_head import head_kind
from causal_das.runtime import devices
from causal_das.runtime.io import atomic_write_json, check_results_path, run_metadata
from causal_das.runtime.provenance import Tally, load_current, model_fingerprint
from causal_das.runtime.sweep import run_groups, split_finished
from causal_das.studies import arithmetic_decoder
from causal_das.studies.arithmetic_cells import (
    SweepConfig,
    cell_name,
    default_k,
    group_by_layer,
    sweep_pairs,
    sweep_settings,
    thesis_k,
)
from causal_das.studies.arithmetic_network import Network, baselines, evaluate_cells, interchange_data
from causal_das.tasks import arithmetic

log = logging.getLogger(__name__)


def validate(config: SweepConfig, model) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(layers, k values, n) after checking the config against the model; ValueError otherwise."""
    arithmetic.get_family(config.causal_model_type)
    if config.engine not in engine.ENGINES:
        raise ValueError(f"unknown engine {config.engine!r}; choose one of {engine.ENGINES}")
    if config.control not in ("random_init", "none"):
        raise ValueError(f"unknown control {config.control!r}; choose random_init or none")
    n_layers = model.config.num_hidden_layers
    layers = tuple(range(n_layers)) if config.layers is None else tuple(config.layers)
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"--layers {bad} do not exist: the model at {config.model_path} has blocks 0..{n_layers - 1}")
    site = arithmetic_decoder.site(model, layers[0], config.positions)  # validates the positions
    if config.low_rank_dims is not None:
        ks = tuple(config.low_rank_dims)
    else:
        ks = thesis_k(site.n) if config.preset == "thesis" else default_k(site.n)
    bad = [k for k in ks if not 1 <= k <= site.n]
    if bad:
        raise ValueError(
            f"--low_rank_dims {bad} must be in 1..{site.n}: the site is {len(config.positions)} positions x width "
            f"{model.config.hidden_size} = {site.n} dimensions"
        )
    if config.n_training + config.n_testing > arithmetic.N_PAIRS:
        raise ValueError(f"--n_training + --n_testing must not exceed the {arithmetic.N_PAIRS} distinct ordered pairs")
    return layers, ks, site.n


def train_group(network: Network, keys: list, train_ids: np.ndarray, config: SweepConfig, desc: str = "") -> list:
    """The trained interventions of the cells `keys` (all at one layer) on `network`: together in one
    pass per step with the fast engine (`engine.train_cells`), one after another with pyvene."""
    layer = keys[0][1]
    site = arithmetic_decoder.site(network.model, layer, config.positions)
    cells = [engine.Cell(interchange_data(network.input_ids, train_ids, arithmetic.get_model(name)), config.das_config(k), f"{desc}{name} L{layer} k{k}")
             for name, _, k in keys]
    if config.engine == "fast":
        return engine.train_cells(site, cells, network.site_states(site), config.max_cells_per_pass)
    return [engine.train(site, cell.data, cell.config, config.engine, desc=cell.desc) for cell in cells]


def run_group(network, control, keys: list, train_ids, test_ids, config: SweepConfig, out_dir: Path, settings_for: dict, inputs: dict) -> dict:
    """Trains, evaluates and writes the cells `keys` = [(causal model, layer, k)], all at one layer,
    on the network and (if any) on the random-init control, each network's cells together; returns
    {key: record}. A cell's files are written only when its whole group is done."""
    family = arithmetic.get_family(config.causal_model_type)
    started = time.perf_counter()
    layer = keys[0][1]
    if any(key[1] != layer for key in keys):
        raise ValueError(f"run_group: the cells {keys} are not all at one layer")
    site = arithmetic_decoder.site(network.model, layer, config.positions)
    trained = train_group(network, keys, train_ids, config)
    scores = evaluate_cells(network, site, trained, test_ids, family, config.engine)
    control_scores = [None] * len(keys)
    if control is not None:
        control_site = arithmetic_decoder.site(control.model, layer, config.positions)
        control_trained = train_group(control, keys, train_ids, config, desc="control ")
        control_scores = evaluate_cells(control, control_site, control_trained, test_ids, family, config.engine)
    seconds = (time.perf_counter() - started) / len(keys)  # each cell's share of its group's time
    records = {}
    for key, one, iia, control_iia in zip(keys, trained, scores, control_scores, strict=True):
        name, _, k = key
        one.save(out_dir / "interventions" / cell_name(name, layer, k))
        record = {
            "causal_model": name,
            "layer": layer,
            "k": k,
            "site": str(site.name),
            "n": site.n,
            "full_swap": k == site.n,
            "iia": iia,
            "iia_own_model": iia[name],
            "baselines": baselines(network, arithmetic.get_model(name), test_ids),
            "n_training_pairs": len(train_ids),
            "n_test_pairs": len(test_ids),
            "train_history": one.history,
        }
        if control_iia is not None:
            record["control_random_init"] = {"iia": control_iia, "iia_own_model": control_iia[name]}
        record.update(settings=settings_for[key], inputs=inputs, status="done", seconds=seconds, **run_metadata())
        atomic_write_json(out_dir / "cells" / f"{cell_name(name, layer, k)}.json", record)
        records[key] = record
    return records


def group_task(config: SweepConfig, cwd: str, keys: tuple) -> dict:
    """One layer's group of cells as a Ray task or worker process: loads the network and computes
    the cells no other run holds or finished, writing the same files as the local executor; returns
    {key: record}. `cwd` is the driver's working directory, against which the config's relative
    paths are meant."""
    os.chdir(cwd)
    device = devices.setup(config.device, config.precision)
    model, tokenizer = arithmetic_decoder.load_classifier(config.model_path, device)
    layer = keys[0][1]
    out_dir = Path(config.results_path)
    settings_for = {key: cell_settings(config, key) for key in keys}
    inputs = {"model_fingerprint": model_fingerprint(model)}

    def cell_path(key):
        return out_dir / "cells" / f"{cell_name(*key)}.json"

    def finished(key, tally=None):
        weights = out_dir / "interventions" / cell_name(*key) / "weights.safetensors"
        return load_current(cell_path(key), settings_for[key], inputs, companions=(weights,), tally=tally)

    def compute(group):
        input_ids = arithmetic_decoder.encode_prompts(tokenizer)
        network = Network.load(model, input_ids, [layer])
        control = Network.load(arithmetic_decoder.random_init_copy(model, config.seed), input_ids, [layer]) if config.control == "random_init" else None
        train_ids, test_ids = sweep_pairs(config)
        with engine.frozen(model):
            return run_group(network, control, group, train_ids, test_ids, config, out_dir, settings_for, inputs)

    records, _ = run_groups([list(keys)], cell_path, finished, compute, lambda groups: groups)
    return records


def cell_settings(config: SweepConfig, key: tuple) -> dict:
    name, layer, k = key
    return {**sweep_settings(config), "causal_model": name, "layer": layer, "k": k}


def run_sweep(config: SweepConfig, executor: str = "local", ray_address: str | None = None, ray_cpus: int | None = None,
              workers: int | None = None) -> dict:
    """Runs every unfinished cell of the sweep; writes cells/, interventions/ and summary.json.
    The cells of a layer are trained together (`run_group`). `executor`: "local" (this process),
    "processes" (`workers` one-thread worker processes) or "ray" (one Ray task per layer); see
    `runtime.executors`."""
    # Locally, a bad --device fails before anything is written; workers resolve it where they run.
    device = devices.setup(config.device, config.precision) if executor == "local" else None
    model, tokenizer = arithmetic_decoder.load_classifier(config.model_path)
    layers, ks, n = validate(config, model)
    out_dir = check_results_path(config.results_path)
    started = time.perf_counter()
    input_ids = arithmetic_decoder.encode_prompts(tokenizer)
    family = arithmetic.get_family(config.causal_model_type)
    fingerprint = model_fingerprint(model)
    train_ids, test_ids = sweep_pairs(config)
    keys = [(m.name, layer, k) for layer in layers for m in family for k in ks]
    settings_for = {key: cell_settings(config, key) for key in keys}
    inputs = {"model_fingerprint": fingerprint}

    def cell_path(key):
        return out_dir / "cells" / f"{cell_name(*key)}.json"

    def finished(key, tally=None):
        weights = out_dir / "interventions" / cell_name(*key) / "weights.safetensors"
        return load_current(cell_path(key), settings_for[key], inputs, companions=(weights,), tally=tally)

    done, todo = split_finished(keys, finished, Tally("cells"))
    groups = group_by_layer(todo)
    desc = f"DAS layers ({config.causal_model_type})"
    if todo and executor in ("ray", "processes"):
        from causal_das.runtime.executors import map_tasks

        task = functools.partial(group_task, config, os.getcwd())
        for records in map_tasks(executor, task, [tuple(g) for g in groups], address=ray_address, cpus=ray_cpus, workers=workers,
                                 device=config.device, desc=desc).values():
            done.update(records)
    elif todo:
        model.to(device)
        print(f"computing on {devices.describe()}", flush=True)
        needed = sorted({layer for _, layer, _ in todo})
        network = Network.load(model, input_ids, needed)
        control = None
        if config.control == "random_init":
            control = Network.load(arithmetic_decoder.random_init_copy(model, config.seed), input_ids, needed)

        def compute(group):
            return run_group(network, control, group, train_ids, test_ids, config, out_dir, settings_for, inputs)

        with engine.frozen(model):
            records, computed = run_groups(groups, cell_path, finished, compute, lambda groups: tqdm(groups, desc=desc, unit="layer"))
        done.update(records)
        others = len(todo) - computed
        print(f"computed {computed} cell(s) here" + (f"; {others} finished by another run on this results path" if others else ""), flush=True)
    summary = {
        "experiment": "run_das",
        "config": sweep_settings(config),
        **run_metadata(),
        "model_fingerprint": fingerprint,
        "head": head_kind(model),
        "n": n,
        "layers": list(layers),
        "low_rank_dims": list(ks),
        "causal_models": [m.name for m in family],
        "cells": [_summary_row(done[(m.name, layer, k)]) for m in family for layer in layers for k in ks],
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _summary_row(cell: dict) -> dict:
    row = {key: cell[key] for key in ("causal_model", "layer", "k", "full_swap", "iia", "iia_own_model", "baselines")}
    row["iia_interval"] = rate_interval(cell["iia_own_model"], cell["n_test_pairs"])  # Wilson, 95%
    if "control_random_init" in cell:
        row["control_iia_own_model"] = cell["control_random_init"]["iia_own_model"]
    return row


def summary_table(summary: dict) -> str:
    """Per causal model: IIA (against itself) per layer x k, control in brackets."""
    lines = []
    ks = summary["low_rank_dims"]
    for name in summary["causal_models"]:
        rows = {(c["layer"], c["k"]): c for c in summary["cells"] if c["causal_model"] == name}
        lines.append(f"\n{name}: IIA per layer x k (random-init control in brackets)")
        lines.append("layer " + "".join(f"{'k=' + str(k):>16}" for k in ks))
        for layer in summary["layers"]:
            entries = []
            for k in ks:
                cell = rows[(layer, k)]
                control = cell.get("control_iia_own_model")
                entries.append(f"{cell['iia_own_model']:.3f}" + (f" ({control:.3f})" if control is not None else ""))
            lines.append(f"{layer:>5} " + "".join(f"{e:>16}" for e in entries))
    return "\n".join(lines)


