"""DAS on the X+Y+Z GPT-2 (`run_das.py`): the sweep over (causal model, layer, k) cells.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from causal_das.das import engine
from causal_das.metrics import majority_rate
from causal_das.models import gpt2
from causal_das.runtime import devices
from causal_das.runtime.io import atomic_write_json, check_results_path, read_json, run_metadata
from causal_das.runtime.provenance import Tally, load_current, model_fingerprint
from causal_das.runtime.sweep import grouped, run_groups, split_finished
from causal_das.tasks import arithmetic

log = logging.getLogger(__name__)

THESIS_K = (64, 128, 256, 768, 4608)  # for GPT-2 small: n = 6 x 768 = 4608
THESIS_PRESET = {"n_training": 256_000, "batch_size": 1280, "epochs": 4, "lr": 0.01}


@dataclass(frozen=True)
class SweepConfig:
    model_path: str = "results/gpt2/model"
    causal_model_type: str = "arithmetic"
    layers: tuple[int, ...] | None = None  # None: every block
    low_rank_dims: tuple[int, ...] | None = None  # None: `default_k` (or the thesis's k with preset "thesis")
    preset: str | None = None  # "thesis": the thesis's sizes (THESIS_PRESET) and k values, scaled to n
    n_training: int = 8_000
    n_testing: int = 2_000
    batch_size: int = 64
    epochs: int = 3
    lr: float = 0.01
    positions: tuple[int, ...] = tuple(range(gpt2.SEQ_LEN))
    engine: str = "fast"
    control: str = "random_init"
    seed: int = 0
    results_path: str = "results/gpt2/das_arithmetic"
    # Where and how it runs (see `devices`, `engine.train_cells`); not part of a cell's settings (they
    # do not change its numbers), so a sweep can be resumed elsewhere.
    device: str = "auto"
    precision: str = "auto"
    max_cells_per_pass: int | None = None  # None: as many as the device's memory budget fits

    def das_config(self, k: int) -> engine.DASConfig:
        return engine.DASConfig((k,), self.epochs, self.batch_size, self.lr, self.seed)


def scaled_k(thesis_k, n: int) -> tuple[int, ...]:
    """The thesis's k values (for n = 4608) scaled to a site of dimension n."""
    return tuple(sorted({max(1, round(k * n / THESIS_K[-1])) for k in thesis_k}))


def thesis_k(n: int) -> tuple[int, ...]:
    return scaled_k(THESIS_K, n)


def default_k(n: int) -> tuple[int, ...]:
    """Default sweep: thesis k = 256 and the full swap, scaled (for the default model: 16 and 288)."""
    return scaled_k((256, 4608), n)


def rng_streams(seed: int) -> dict[str, np.random.Generator]:
    names = ("pairs", "evaluation")
    return {name: np.random.default_rng(s) for name, s in zip(names, np.random.SeedSequence([seed, 3]).spawn(len(names)), strict=True)}


def sweep_pairs(config: SweepConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training, test) pair ids: disjoint, the same for every cell of a sweep with this seed."""
    rng = rng_streams(config.seed)["pairs"]
    train = arithmetic.draw_pairs(rng, config.n_training)
    return train, arithmetic.draw_pairs(rng, config.n_testing, exclude=train)


def interchange_data(input_ids: torch.Tensor, pair_ids: np.ndarray, model) -> engine.InterchangeData:
    base, source = arithmetic.decode_pairs(pair_ids)
    labels = arithmetic.counterfactual_labels(model, base, source)
    return engine.InterchangeData(input_ids, torch.as_tensor(base), torch.as_tensor(source)[:, None], torch.as_tensor(labels))


def cell_name(model_name: str, layer: int, k: int) -> str:
    return f"{arithmetic.slug(model_name)}/L{layer:02d}_k{k}"


@dataclass
class Network:
    """A loaded classifier with its prompts and the block outputs of every layer, computed once."""

    model: object
    input_ids: torch.Tensor
    states: dict[int, torch.Tensor]  # layer -> (1000, 6 * width)
    plain_predictions: np.ndarray  # (1000,) the unintervened network's predicted class per prompt

    @classmethod
    def load(cls, model, input_ids: torch.Tensor, layers) -> Network:
        with engine.frozen(model):
            states = {layer: s.flatten(1) for layer, s in gpt2.layer_outputs(model, input_ids, layers).items()}
            plain = gpt2.predictions(model, input_ids).numpy()
        return cls(model, input_ids, states, plain)

    def site(self, layer: int, positions: tuple[int, ...]):
        return gpt2.site(self.model, layer, positions)

    def site_states(self, site) -> torch.Tensor:
        """The site state of every prompt: the cached block output at the site, or the site's own
        prefix when its state holds more (the untouched tokens' keys, see `models.gpt2_untouched`)."""
        if not getattr(site, "untouched", 0):
            return self.states[site.layer]
        with engine.frozen(self.model):
            return engine.cache_activations(site, self.input_ids)


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
    site = gpt2.site(model, layers[0], config.positions)  # validates the positions
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


def evaluate_cells(network: Network, site, trained: list, test_ids: np.ndarray, family, config_engine: str, states=None) -> list[dict]:
    """IIA of each trained intervention at `site` against each causal model of `family` on the
    `test_ids` pairs (the fast engine evaluates them together; `states`: the site states, if the
    caller has them)."""
    base, source = arithmetic.decode_pairs(test_ids)
    data = engine.InterchangeData(network.input_ids, torch.as_tensor(base), torch.as_tensor(source)[:, None], torch.zeros(len(base), dtype=torch.long))
    if config_engine == "fast":
        predictions = engine.predict_cells(site, trained, data, activations=network.site_states(site) if states is None else states)
    else:
        predictions = [engine.predict(site, one, data, config_engine) for one in trained]
    labels = {m.name: arithmetic.counterfactual_labels(m, base, source) for m in family}
    return [{name: float(np.mean(p.numpy() == target)) for name, target in labels.items()} for p in predictions]


def baselines(network: Network, causal_model, test_ids: np.ndarray) -> dict[str, float]:
    base, source = arithmetic.decode_pairs(test_ids)
    labels = arithmetic.counterfactual_labels(causal_model, base, source)
    return {
        "majority": majority_rate(labels),
        "copy_base_label": float(np.mean(labels == arithmetic.LABELS[base])),
        "copy_source_label": float(np.mean(labels == arithmetic.LABELS[source])),
        "network_no_intervention": float(np.mean(labels == network.plain_predictions[base])),
        "network_on_source": float(np.mean(labels == network.plain_predictions[source])),
    }


def train_group(network: Network, keys: list, train_ids: np.ndarray, config: SweepConfig, desc: str = "") -> list:
    """The trained interventions of the cells `keys` (all at one layer) on `network`: together in one
    pass per step with the fast engine (`engine.train_cells`), one after another with pyvene."""
    layer = keys[0][1]
    site = gpt2.site(network.model, layer, config.positions)
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
    site = gpt2.site(network.model, layer, config.positions)
    trained = train_group(network, keys, train_ids, config)
    scores = evaluate_cells(network, site, trained, test_ids, family, config.engine)
    control_scores = [None] * len(keys)
    if control is not None:
        control_site = gpt2.site(control.model, layer, config.positions)
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


def group_by_layer(keys: list) -> list[list]:
    """Cells or graphs keyed (causal model, layer, ...) grouped by layer: those trained or evaluated together."""
    return grouped(keys, lambda key: key[1])


def group_task(config: SweepConfig, cwd: str, keys: tuple) -> dict:
    """One layer's group of cells as a Ray task or worker process: loads the network and computes
    the cells no other run holds or finished, writing the same files as the local executor; returns
    {key: record}. `cwd` is the driver's working directory, against which the config's relative
    paths are meant."""
    os.chdir(cwd)
    device = devices.setup(config.device, config.precision)
    model, tokenizer = gpt2.load_classifier(config.model_path, device)
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
        input_ids = gpt2.encode_prompts(tokenizer)
        network = Network.load(model, input_ids, [layer])
        control = Network.load(gpt2.random_init_copy(model, config.seed), input_ids, [layer]) if config.control == "random_init" else None
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
    model, tokenizer = gpt2.load_classifier(config.model_path)
    layers, ks, n = validate(config, model)
    out_dir = check_results_path(config.results_path)
    started = time.perf_counter()
    input_ids = gpt2.encode_prompts(tokenizer)
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
            control = Network.load(gpt2.random_init_copy(model, config.seed), input_ids, needed)

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
        "n": n,
        "layers": list(layers),
        "low_rank_dims": list(ks),
        "causal_models": [m.name for m in family],
        "cells": [_summary_row(done[(m.name, layer, k)]) for m in family for layer in layers for k in ks],
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def sweep_settings(config: SweepConfig) -> dict:
    """Everything that determines a cell's numbers (not where it is written)."""
    settings = asdict(config)
    for where in ("results_path", "device", "precision", "max_cells_per_pass"):
        settings.pop(where)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}


def _summary_row(cell: dict) -> dict:
    row = {key: cell[key] for key in ("causal_model", "layer", "k", "full_swap", "iia", "iia_own_model", "baselines")}
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


def load_sweep_config(results_path: str | Path) -> SweepConfig:
    summary = read_json(Path(results_path) / "summary.json")
    try:
        raw = dict(summary["config"])
        for key in ("layers", "low_rank_dims", "positions"):
            if raw.get(key) is not None:
                raw[key] = tuple(raw[key])
        return SweepConfig(**raw, results_path=str(results_path))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{Path(results_path) / 'summary.json'} is not a run_das.py summary ({error})") from None
