"""The MLP layer sweeps of the thesis (`reproduce_das_experiment.py`, `mlp/pattern_matching_das.py`):
DAS per layer on a trained MLP. What the wrong-model ablation (`mlp_ablation`) shares with these
sweeps is in `studies.four_objects_mlp`.

Each run: train the MLP on its task (held-out accuracy reported), draw counterfactual train and test
sets once, then for each hidden layer train a multi-source DAS intervention (one subspace per
intermediate variable), evaluate IIA on the test set, and run the same DAS on a randomly initialised
copy of the network as a control. Randomness comes from independent streams of one seed, so the
same flags give the same files, and `evaluate_saved` can redraw the exact test set.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from causal_das.causal_model import sample_counterfactuals
from causal_das.das import engine
from causal_das.das.evaluation import rate_interval
from causal_das.models import mlp
from causal_das.models.mlp import MLPSite
from causal_das.runtime import devices
from causal_das.runtime.io import atomic_write_json, check_results_path, read_json, run_metadata
from causal_das.runtime.provenance import Tally
from causal_das.studies.four_objects_mlp import (
    QUICK,
    MLPExperimentConfig,
    align_layer,
    evaluate,
    random_init_copy,
    reusable,
    rng_streams,
    run_settings,
    same_site_baselines,
    trained_mlp,
)
from causal_das.tasks.four_objects import get_task

log = logging.getLogger(__name__)


def run_layer_sweep(config: MLPExperimentConfig, experiment: str) -> dict:
    """Hierarchical equality / pattern matching: DAS at each layer with its control. Writes
    `results.json` (and per-layer cells as they finish) under `config.results_path`. A rerun with
    the same settings reuses the saved MLP and the finished layers, so an interrupted run resumes."""
    config.validate()
    devices.setup(config.device, config.precision)
    out_dir = check_results_path(config.results_path)
    started = time.perf_counter()
    task = get_task(config.task)
    streams = rng_streams(config.seed)
    model, mlp_info, fingerprint = trained_mlp(task, config, out_dir, streams["mlp_data"])
    causal_model = task.causal_model()
    train_data = sample_counterfactuals(causal_model, task.sampler(config.object_dim), config.das_train_size, streams["das_train"])
    test_data = sample_counterfactuals(causal_model, task.sampler(config.object_dim), config.das_test_size, streams["das_test"])
    control_model = random_init_copy(model, config.seed) if config.control == "random_init" else None
    layers = {}
    settings, inputs = run_settings(config), {"mlp_fingerprint": fingerprint}
    cached, tally = {}, Tally("layers")
    for layer in config.layers:
        weights = out_dir / "interventions" / f"L{layer}" / "weights.safetensors"
        cached[layer] = reusable(out_dir / "cells" / f"L{layer}.json", settings, inputs, (weights,), tally)
    tally.print()
    for layer in config.layers:
        cell_path = out_dir / "cells" / f"L{layer}.json"
        record = cached[layer]
        if record is not None and not config.export_pyvene:  # an export is redone from a fresh W
            layers[str(layer)] = {k: v for k, v in record.items() if k not in ("layer", "status", "settings", "inputs")}
            continue
        trained, result = align_layer(model, layer, train_data, test_data, config, f"DAS layer {layer}")
        trained.save(out_dir / "interventions" / f"L{layer}")
        if config.export_pyvene:
            from causal_das.das.pyvene_engine import export

            export(MLPSite(model, layer), trained, out_dir / "interventions" / f"L{layer}" / "pyvene")
        result["train_history"] = trained.history
        result["same_site_baselines"] = same_site_baselines(model, layer, train_data, test_data, config)
        if control_model is not None:
            _, control = align_layer(control_model, layer, train_data, test_data, config, f"control layer {layer}")
            result["control_random_init"] = {"iia": control["iia"], "by_subset": control["by_subset"]}
        layers[str(layer)] = result
        atomic_write_json(cell_path, {"layer": layer, "status": "done", "settings": settings, "inputs": inputs, **result})
        log.info("layer %d: IIA %.3f", layer, result["iia"])
    for result in layers.values():  # each IIA beside its 95% interval (Wilson, on the test examples)
        result["iia_interval"] = rate_interval(result["iia"], result["n_examples"])
    payload = {
        "experiment": experiment,
        "config": config.to_dict(),
        **run_metadata(),
        "causal_model": causal_model.name,
        "variables": list(causal_model.intermediate),
        "subspaces": subspace_layout(causal_model.intermediate, config.subspace_dims),
        "mlp": mlp_info,
        "layers": layers,
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(out_dir / "results.json", payload)
    return payload


def subspace_layout(variables, sizes) -> dict[str, list[int]]:
    """{variable: [first, last]} rotated dimensions, e.g. {"WX": [0, 7], "YZ": [8, 15]}."""
    layout, start = {}, 0
    for v, size in zip(variables, sizes, strict=True):
        layout[v] = [start, start + size - 1]
        start += size
    return layout


def evaluate_saved(results_path: str, device: str = "auto", precision: str = "auto") -> dict:
    """Reloads the saved MLP and interventions of a layer sweep, redraws its test set from the saved
    seed, and re-evaluates. Writes `evaluation.json`; `matches_saved` says whether every IIA is
    identical to the one in `results.json`."""
    out_dir = Path(results_path)
    saved = read_json(out_dir / "results.json")
    try:
        raw = saved["config"]
        config = MLPExperimentConfig(**{**raw, "subspace_dims": tuple(raw["subspace_dims"]), "layers": tuple(raw["layers"])})
    except (KeyError, TypeError) as error:
        raise ValueError(f"{out_dir / 'results.json'} is not a layer-sweep result ({error})") from None
    task = get_task(config.task)
    model = mlp.load(out_dir / "model", devices.setup(device, precision))
    test_data = sample_counterfactuals(task.causal_model(), task.sampler(config.object_dim), config.das_test_size, rng_streams(config.seed)["das_test"])
    layers, matches = {}, True
    for layer in config.layers:
        trained = engine.TrainedIntervention.load(out_dir / "interventions" / f"L{layer}")
        result = evaluate(model, layer, trained, test_data, config.engine)
        layers[str(layer)] = {"iia": result["iia"], "saved_iia": saved["layers"][str(layer)]["iia"]}
        matches &= result["iia"] == saved["layers"][str(layer)]["iia"]
    payload = {"experiment": "evaluate_saved", **run_metadata(), "layers": layers, "matches_saved": bool(matches)}
    atomic_write_json(out_dir / "evaluation.json", payload)
    return payload


def mlp_config_from_args(args, **overrides) -> MLPExperimentConfig:
    """Builds the config from parsed flags (names match the dataclass fields)."""
    fields = MLPExperimentConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    for key in ("subspace_dims", "layers"):
        if key in values:
            values[key] = tuple(values[key])
    values.update(overrides)
    if getattr(args, "quick", False):
        values.update(QUICK)
    return MLPExperimentConfig(**values)


def add_mlp_flags(parser, layers: bool = True) -> None:
    """The flags of every MLP experiment (defaults from `MLPExperimentConfig`)."""
    from causal_das.runtime.cli import positive_float, positive_int

    d = MLPExperimentConfig()
    parser.add_argument("--object_dim", type=positive_int, default=d.object_dim, help="dimension of each object vector; the MLP width is 4x this")
    parser.add_argument("--n_layers", type=positive_int, default=d.n_layers, help="hidden layers of the MLP")
    parser.add_argument("--mlp_train_size", type=positive_int, default=d.mlp_train_size, help="factual examples the MLP trains on")
    parser.add_argument("--mlp_test_size", type=positive_int, default=d.mlp_test_size, help="held-out factual examples for the MLP's accuracy")
    parser.add_argument("--mlp_epochs", type=positive_int, default=d.mlp_epochs, help="MLP training epochs")
    parser.add_argument("--mlp_batch_size", type=positive_int, default=d.mlp_batch_size, help="MLP training batch size")
    parser.add_argument("--mlp_lr", type=positive_float, default=d.mlp_lr, help="MLP learning rate (Adam)")
    parser.add_argument("--das_train_size", type=positive_int, default=d.das_train_size, help="counterfactual examples DAS trains on")
    parser.add_argument("--das_test_size", type=positive_int, default=d.das_test_size, help="fresh counterfactual examples IIA is measured on")
    parser.add_argument("--das_epochs", type=positive_int, default=d.das_epochs, help="DAS training epochs")
    parser.add_argument("--das_batch_size", type=positive_int, default=d.das_batch_size, help="DAS training batch size")
    parser.add_argument("--das_lr", type=positive_float, default=d.das_lr, help="DAS learning rate (Adam)")
    parser.add_argument("--subspace_dims", type=positive_int, nargs="+", default=list(d.subspace_dims),
                        help="rotated dimensions per intermediate variable, in order (default 8 8: first variable dims 0-7, second 8-15)")
    if layers:
        parser.add_argument("--layers", type=int, nargs="+", default=None, help="hidden layers to align at (default: all)")
    parser.add_argument("--control", choices=("random_init", "none"), default=d.control,
                        help="also run DAS on a randomly initialised copy of the network (random_init) or not (none)")
    if layers:
        parser.add_argument("--export_pyvene", action="store_true",
                            help="also save each trained intervention in pyvene's IntervenableModel.save format (interventions/L<layer>/pyvene/)")


def summary(result: dict) -> str:
    """A table of a layer sweep for the terminal."""
    lines = [f"{result['causal_model']} MLP: held-out accuracy {result['mlp']['heldout_accuracy']:.4f}"]
    first = next(iter(result["layers"].values()))
    subsets = list(first["by_subset"])
    header = (f"{'layer':>5} {'IIA':>6} " + " ".join(f"{s:>10}" for s in subsets)
              + f" {'neurons':>8} {'random':>8} {'PCA':>8} {'control':>8} {'base-lbl':>8} {'majority':>8}")
    lines.append(header)
    for layer, r in result["layers"].items():
        control = r.get("control_random_init", {}).get("iia", float("nan"))
        same = r.get("same_site_baselines") or {"neuron_mask": float("nan"), "random_subspace": {"mean": float("nan")}, "pca": float("nan")}
        lines.append(
            f"{layer:>5} {r['iia']:6.3f} " + " ".join(f"{r['by_subset'][s]:10.3f}" for s in subsets)
            + f" {same['neuron_mask']:8.3f} {same['random_subspace']['mean']:8.3f} {same['pca']:8.3f}"
            + f" {control:8.3f} {r['baselines']['copy_base_label']:8.3f} {r['baselines']['majority']:8.3f}"
        )
    return "\n".join(lines)


def layer_sweep_main(args, task: str) -> None:
    """What `reproduce_das_experiment.py` and `mlp/pattern_matching_das.py` do after parsing."""
    from causal_das.plots.mlp import plot_layer_sweep

    layers = tuple(args.layers) if args.layers else tuple(range(args.n_layers))
    config = mlp_config_from_args(args, task=task, layers=layers)
    result = run_layer_sweep(config, task)
    figure = plot_layer_sweep(f"{config.results_path}/results.json", f"{config.results_path}/iia_per_layer.png")
    print(summary(result), f"\nwrote {config.results_path}/results.json and {figure}", sep="")
