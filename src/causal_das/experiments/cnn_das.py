"""Single- and multi-source DAS on the ellipse CNN of the second seed (`cnn/ellipse_das.py`).

`run_das` runs a grid of cells, one per (variable subset, layer), for one mode, site view and
intervention size; each cell trains DAS on the trained CNN and on a randomly initialised copy (the
control), measures IIA on fresh counterfactual pairs of the same mode, and writes one JSON (plus its
W). A rerun skips finished cells. `summarise` gathers every cell of a results directory into
`summary.json` and its figures, so several runs (the main job's single, multi and per-layer runs)
add up to one table.

Data: one pool of training images and one of test images per seed (the seed drew n_train fresh
images and n_train pairs over them); pairs for a subset come from a stream keyed by the seed, the
mode and the subset, so a cell's data does not depend on which other cells ran.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from causal_das.das import engine
from causal_das.das.evaluation import rate_interval
from causal_das.models import cnn
from causal_das.models.cnn import (
    LAYERS,
    CNNSite,
    predict_classes,
    site_geometry,
)
from causal_das.runtime import devices
from causal_das.runtime.io import (
    atomic_write_json,
    check_results_path,
    read_json,
    run_metadata,
)
from causal_das.runtime.provenance import Tally, load_current, model_fingerprint
from causal_das.runtime.sweep import grouped, run_groups, split_finished
from causal_das.studies.ellipse_cnn import images_and_labels, random_init_cnn, rng_streams
from causal_das.tasks import ellipse

log = logging.getLogger(__name__)

SEED_EPOCHS = {"single": 3, "multi": 2}  # the seed notebook's DAS epochs per mode


@dataclass(frozen=True)
class EllipseDASConfig:
    """Every knob of an ellipse DAS run; the ones that change a cell's numbers are in its settings."""

    variables: tuple[tuple[str, ...], ...] = (("circularity", "colour"),)
    mode: str = "single"
    intervention_size: int = 64
    layers: tuple[str, ...] = ("conv1",)
    site_view: str = "rows"
    engine: str = "fast"
    epochs: int | None = None  # None: the seed's 3 (single) or 2 (multi)
    batch_size: int = 256
    lr: float = 5e-4
    n_train: int = 10_000
    n_test: int = 10_000
    control: str = "random_init"
    seed: int = 0
    model_path: str = "results/cnn/model"
    results_path: str = "results/cnn/das"
    device: str = "auto"  # where it runs (see causal_das.runtime.devices); not in a cell's settings
    precision: str = "auto"

    @property
    def das_epochs(self) -> int:
        return self.epochs if self.epochs is not None else SEED_EPOCHS[self.mode]

    def validate(self) -> None:
        if self.mode not in ellipse.MODES:
            raise ValueError(f"unknown --mode {self.mode!r}; choose one of {', '.join(ellipse.MODES)}")
        if self.engine not in engine.ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {engine.ENGINES}")
        if self.control not in ("random_init", "none"):
            raise ValueError(f"unknown control {self.control!r}; choose random_init or none")
        if self.intervention_size < 1:
            raise ValueError(f"--intervention_size must be >= 1, got {self.intervention_size}")
        for subset in self.variables:
            if self.mode == "multi" and len(subset) < 2:
                raise ValueError(
                    f"--mode multi needs at least two variables per subset (one source each), got {','.join(subset)}; "
                    "use --mode single, or name a subset such as circularity,colour"
                )
        for layer in self.layers:
            rows, n = site_geometry(layer, self.site_view)
            widest = max(len(s) for s in self.variables) if self.mode == "multi" else 1
            if self.intervention_size * widest > n:
                what = f"{widest} subspaces of {self.intervention_size}" if widest > 1 else f"--intervention_size {self.intervention_size}"
                raise ValueError(
                    f"{what} dimensions do not fit the {layer} site ({self.site_view} view: {n} dimensions"
                    + (f" per row, {rows} rows" if rows > 1 else "") + "); lower --intervention_size"
                )

    def settings(self) -> dict:
        """What a finished cell must have been computed with to be reused."""
        return {
            "mode": self.mode, "intervention_size": self.intervention_size, "site_view": self.site_view, "engine": self.engine,
            "epochs": self.das_epochs, "batch_size": self.batch_size, "lr": self.lr, "n_train": self.n_train,
            "n_test": self.n_test, "control": self.control, "seed": self.seed,
        }


def cell_name(mode: str, subset: tuple[str, ...], layer: str, view: str, size: int) -> str:
    return f"{mode}_{'+'.join(subset)}_{layer}_{view}_k{size}"


def _pair_rng(seed: int, mode: str, subset: tuple[str, ...]) -> np.random.Generator:
    key = zlib.crc32(f"{mode}:{','.join(subset)}".encode())
    return np.random.default_rng([seed, 6, key])


def to_interchange(images: torch.Tensor, pairs: ellipse.EllipsePairs) -> engine.InterchangeData:
    return engine.InterchangeData(images, torch.as_tensor(pairs.base), torch.as_tensor(pairs.sources), torch.as_tensor(pairs.labels))


def baselines(pairs: ellipse.EllipsePairs, plain_predictions: np.ndarray) -> dict[str, float]:
    """What IIA would be without an alignment (see `metrics.baselines`)."""
    counts = np.bincount(pairs.labels, minlength=2)
    return {
        "majority": float(counts.max() / len(pairs)),
        "copy_base_label": float(np.mean(pairs.labels == pairs.base_labels)),
        "copy_source_label": float(np.mean(pairs.labels == pairs.source_labels)),
        "network_no_intervention": float(np.mean(plain_predictions[pairs.base] == pairs.labels)),
    }


@dataclass
class Pools:
    """The DAS image pools of a seed, rendered once per run."""

    train_latents: dict
    train_images: torch.Tensor
    test_latents: dict
    test_images: torch.Tensor

    @classmethod
    def draw(cls, config: EllipseDASConfig) -> Pools:
        streams = rng_streams(config.seed)
        train_latents, train_images, _ = images_and_labels(streams["das_train_pool"], config.n_train)
        test_latents, test_images, _ = images_and_labels(streams["das_test_pool"], config.n_test)
        return cls(train_latents, torch.from_numpy(train_images), test_latents, torch.from_numpy(test_images))

    def pairs(self, config: EllipseDASConfig, subset: tuple[str, ...], mode: str | None = None):
        mode = mode or config.mode
        rng = _pair_rng(config.seed, mode, subset)
        train = ellipse.sample_pairs(self.train_latents, subset, mode, config.n_train, rng)
        return train, ellipse.sample_pairs(self.test_latents, subset, mode, config.n_test, rng)


def _align(model, layer, config, datas: list, descs: list) -> tuple:
    """(site, trained W, IIA on the test pairs) of the cells `datas` = [(train, test)] at `layer`,
    trained together in one pass per step with the fast engine."""
    site = CNNSite(model, layer, config.site_view)
    cells = [engine.Cell(train, engine.DASConfig((config.intervention_size,) * train.n_variables, config.das_epochs, config.batch_size,
                                                 config.lr, config.seed), desc) for (train, _), desc in zip(datas, descs, strict=True)]
    tests = [test for _, test in datas]
    if config.engine == "fast":
        trained = engine.train_cells(site, cells)
        predictions = engine.predict_cells(site, trained, tests)
    else:
        trained = [engine.train(site, cell.data, cell.config, config.engine, desc=cell.desc) for cell in cells]
        predictions = [engine.predict(site, one, test, config.engine) for one, test in zip(trained, tests, strict=True)]
    return site, trained, [float(np.mean(p.numpy() == test.labels.numpy())) for p, test in zip(predictions, tests, strict=True)]


def run_group(model, control_model, pools: Pools, config: EllipseDASConfig, keys: list, plain_test: np.ndarray) -> list[tuple[dict, object]]:
    """The (subset, layer) cells `keys`, all at one layer, trained together: DAS, its IIA on fresh
    pairs of the same mode, baselines, control; [(result, trained W)] in the order of `keys`."""
    started = time.perf_counter()
    layer = keys[0][1]
    pairs = [pools.pairs(config, subset) for subset, _ in keys]
    datas = [(to_interchange(pools.train_images, train), to_interchange(pools.test_images, test)) for train, test in pairs]
    labels = [f"{config.mode} {'+'.join(subset)} @ {layer}" for subset, _ in keys]
    site, trained, iia = _align(model, layer, config, datas, [f"DAS {label}" for label in labels])
    control_iia = _align(control_model, layer, config, datas, [f"control {label}" for label in labels])[2] if control_model is not None else None
    out = []
    for j, ((subset, _), (_, test_pairs)) in enumerate(zip(keys, pairs, strict=True)):
        result = {
            "mode": config.mode,
            "variables": list(subset),
            "layer": layer,
            "site": str(site.name),
            "site_view": config.site_view,
            "rows": site.rows,
            "n": site.n,
            "intervention_size": config.intervention_size,
            "subspaces": {v: [i * config.intervention_size, (i + 1) * config.intervention_size - 1]
                          for i, v in enumerate(subset if config.mode == "multi" else ["+".join(subset)])},
            "iia": iia[j],
            "baselines": baselines(test_pairs, plain_test),
            "train_history": trained[j].history,
        }
        if config.mode == "multi":
            # The seed measured its multi-source W on single-source pairs (both variables from one
            # source); the same W fed one source in every subspace, for comparison with its 0.818.
            _, single_test = pools.pairs(config, subset, mode="single")
            repeated = np.repeat(single_test.sources, len(subset), axis=1)
            single_data = engine.InterchangeData(pools.test_images, torch.as_tensor(single_test.base), torch.as_tensor(repeated),
                                                 torch.as_tensor(single_test.labels))
            predictions = engine.predict(site, trained[j], single_data, config.engine).numpy()
            result["iia_on_single_source_pairs"] = float(np.mean(predictions == single_test.labels))
        if control_iia is not None:
            result["control_random_init"] = {"iia": control_iia[j]}
        result["seconds"] = (time.perf_counter() - started) / len(keys)  # each cell's share of its group's time
        out.append((result, trained[j]))
    return out


def run_das(config: EllipseDASConfig) -> list[dict]:
    """Runs every (subset, layer) cell not finished yet; returns all cells of this run."""
    config.validate()
    device = devices.setup(config.device, config.precision)
    model = cnn.load(config.model_path, device)
    out = check_results_path(config.results_path)
    settings, inputs = config.settings(), {"model_fingerprint": model_fingerprint(model)}
    control_model = random_init_cnn(config.seed).to(device) if config.control == "random_init" else None
    names = {(subset, layer): cell_name(config.mode, subset, layer, config.site_view, config.intervention_size)
             for subset in config.variables for layer in config.layers}

    def cell_path(key):
        return out / "cells" / f"{names[key]}.json"

    def finished(key, tally=None):
        return load_current(cell_path(key), settings, inputs, required=("iia", "baselines"),
                            companions=(out / "interventions" / names[key] / "weights.safetensors",), tally=tally)

    shared: dict = {}  # the image pools and the CNN's plain predictions, made when a cell first needs them

    def compute(keys):
        if not shared:
            shared["pools"] = Pools.draw(config)
            shared["plain"] = predict_classes(model, shared["pools"].test_images)
        payloads = {}
        for key, (result, trained) in zip(keys, run_group(model, control_model, shared["pools"], config, keys, shared["plain"]), strict=True):
            trained.save(out / "interventions" / names[key])
            payload = {"cell": names[key], "status": "done", "settings": settings, "inputs": inputs, "model_path": config.model_path,
                       **run_metadata(), **result}
            atomic_write_json(cell_path(key), payload)
            control = f" (control {result['control_random_init']['iia']:.3f})" if control_model else ""
            print(f"{names[key]}: IIA {result['iia']:.3f}{control}", flush=True)
            payloads[key] = payload
        return payloads

    records, todo = split_finished(list(names), finished, Tally("cells"))
    # The cells of a layer (every variable subset) are trained together.
    fresh, _ = run_groups(grouped(todo, lambda key: key[1]), cell_path, finished, compute, lambda groups: groups)
    records.update(fresh)
    return [records[key] for key in names]


def summarise(results_path: str | Path) -> dict:
    """Gathers every finished cell under `results_path` into `summary.json` (sorted by mode, subset,
    layer, view, size)."""
    out = Path(results_path)
    cells = []
    for path in sorted((out / "cells").glob("*.json")):
        try:
            payload = read_json(path)
        except ValueError:
            continue
        if payload.get("status") == "done":
            cells.append({k: payload[k] for k in (
                "cell", "mode", "variables", "layer", "site", "site_view", "rows", "n", "intervention_size", "iia", "baselines",
                "control_random_init", "iia_on_single_source_pairs", "seconds", "settings") if k in payload})
    for c in cells:  # each IIA beside its 95% interval (Wilson, on the cell's test pairs)
        c["iia_interval"] = rate_interval(c["iia"], c["settings"]["n_test"])
    order = {layer: i for i, layer in enumerate(LAYERS)}
    # Several variables first (the seed's settings), then the per-layer single variables.
    cells.sort(key=lambda c: (-len(c["variables"]), [ellipse.VARIABLES.index(v) for v in c["variables"]], c["mode"] == "multi",
                              order[c["layer"]], c["site_view"] != "rows", c["intervention_size"]))
    summary = {"experiment": "ellipse_das", **run_metadata(), "cells": cells, "layer_table": layer_table(cells)}
    atomic_write_json(out / "summary.json", summary)
    return summary


def layer_table(cells: list[dict]) -> dict:
    """{variable: {layer: {iia, control, intervention_size}}} from single-variable, single-source,
    rows-view cells: where each latent lives."""
    table: dict = {}
    for c in cells:
        if c["mode"] == "single" and len(c["variables"]) == 1 and c["site_view"] == "rows":
            table.setdefault(c["variables"][0], {})[c["layer"]] = {
                "iia": c["iia"],
                "control": (c.get("control_random_init") or {}).get("iia"),
                "copy_source_label": c["baselines"]["copy_source_label"],
                "network_no_intervention": c["baselines"]["network_no_intervention"],
                "intervention_size": c["intervention_size"],
            }
    return table


def table_text(cells: list[dict]) -> str:
    """The cells of a run as a terminal table."""
    lines = [f"{'cell':<44} {'IIA':>6} {'control':>8} {'copy-src':>8} {'no-int':>7} {'majority':>8}"]
    for c in cells:
        control = (c.get("control_random_init") or {}).get("iia", float("nan"))
        b = c["baselines"]
        lines.append(f"{c['cell']:<44} {c['iia']:6.3f} {control:8.3f} {b['copy_source_label']:8.3f} "
                     f"{b['network_no_intervention']:7.3f} {b['majority']:8.3f}")
    return "\n".join(lines)
