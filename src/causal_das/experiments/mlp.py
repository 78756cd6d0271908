"""The MLP layer sweeps of the thesis (`reproduce_das_experiment.py`, `mlp/pattern_matching_das.py`):
DAS per layer on a trained MLP; the wrong-model ablation builds on this (`mlp_ablation`).

Each run: train the MLP on its task (held-out accuracy reported), draw counterfactual train and test
sets once, then for each hidden layer train a multi-source DAS intervention (one subspace per
intermediate variable), evaluate IIA on the test set, and run the same DAS on a randomly initialised
copy of the network as a control. Randomness comes from independent streams of one seed, so the
same flags give the same files, and `evaluate_saved` can redraw the exact test set.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from causal_das.causal_model import CounterfactualData, sample_counterfactuals
from causal_das.das import baselines as alignment_baselines
from causal_das.das import engine
from causal_das.metrics import baselines, iia
from causal_das.models import mlp
from causal_das.models.mlp import MLPClassifier, MLPSite, MLPTrainConfig, accuracy, train_classifier
from causal_das.runtime import devices
from causal_das.runtime.io import atomic_write_json, check_results_path, read_json, run_metadata
from causal_das.runtime.provenance import Tally, load_current, model_fingerprint
from causal_das.tasks.four_objects import FourObjectTask, encode, get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MLPExperimentConfig:
    """Every knob of an MLP experiment; saved inside each result file."""

    task: str = "hierarchical_equality"
    object_dim: int = 4
    n_layers: int = 3
    mlp_train_size: int = 262_144
    mlp_test_size: int = 10_000
    mlp_epochs: int = 5
    mlp_batch_size: int = 1024
    mlp_lr: float = 1e-3
    das_train_size: int = 131_072
    das_test_size: int = 10_000
    das_epochs: int = 10
    das_batch_size: int = 1024
    das_lr: float = 1e-3
    subspace_dims: tuple[int, ...] = (8, 8)
    layers: tuple[int, ...] = (0, 1, 2)
    engine: str = "fast"
    control: str = "random_init"
    random_draws: int = 3  # untrained random subspaces beside each layer's DAS (`same_site_baselines`)
    export_pyvene: bool = False
    seed: int = 0
    results_path: str = "results/hierarchical_equality"
    device: str = "auto"  # see causal_das.runtime.devices
    precision: str = "auto"

    @property
    def width(self) -> int:
        return 4 * self.object_dim

    def validate(self) -> None:
        get_task(self.task)
        if self.engine not in engine.ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {engine.ENGINES}")
        bad = [layer for layer in self.layers if not 0 <= layer < self.n_layers]
        if bad:
            raise ValueError(f"layer(s) {bad} do not exist: the MLP has hidden layers 0..{self.n_layers - 1}")
        n_vars = len(get_task(self.task).variable_names)
        if len(self.subspace_dims) != n_vars:
            raise ValueError(f"--subspace_dims needs {n_vars} sizes (one per intermediate variable), got {list(self.subspace_dims)}")
        if min(self.subspace_dims) < 1 or sum(self.subspace_dims) > self.width:
            raise ValueError(
                f"--subspace_dims {list(self.subspace_dims)} need {sum(self.subspace_dims)} dimensions, "
                f"but a hidden layer has {self.width} (4 x --object_dim); each size must be >= 1"
            )
        if self.control not in ("random_init", "none"):
            raise ValueError(f"unknown control {self.control!r}; choose random_init or none")

    def das_config(self) -> engine.DASConfig:
        return engine.DASConfig(self.subspace_dims, self.das_epochs, self.das_batch_size, self.das_lr, self.seed)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
QUICK = dict(mlp_train_size=8192, mlp_test_size=1000, mlp_epochs=2, das_train_size=2048, das_test_size=500, das_epochs=1, das_batch_size=256)


def rng_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent random streams, so redrawing one (e.g. the test set) needs no other."""
    names = ("mlp_data", "das_train", "das_test", "ablation")
    return {name: np.random.default_rng(s) for name, s in zip(names, np.random.SeedSequence(seed).spawn(len(names)), strict=True)}


def to_interchange(data: CounterfactualData) -> engine.InterchangeData:
    """Network inputs for a counterfactual set: the table [base; source_1; ...; source_V]."""
    n, variables = len(data), data.variables
    tables = [encode(data.base)] + [encode(data.sources[v]) for v in variables]
    base = torch.arange(n)
    sources = torch.stack([torch.arange(n) + n * (i + 1) for i in range(len(variables))], dim=1)
    return engine.InterchangeData(torch.from_numpy(np.concatenate(tables)), base, sources, torch.as_tensor(data.labels.astype(np.int64)))


def train_task_mlp(task: FourObjectTask, config: MLPExperimentConfig, rng: np.random.Generator) -> tuple[MLPClassifier, dict]:
    model_cm = task.causal_model()
    sampler = task.sampler(config.object_dim)
    train_inputs, test_inputs = sampler(rng, config.mlp_train_size), sampler(rng, config.mlp_test_size)
    torch.manual_seed(config.seed)
    # Initialised on the CPU, then moved: the same start on every device.
    model = MLPClassifier(config.width, config.n_layers).to(devices.resolve(config.device))
    start = time.perf_counter()
    losses = train_classifier(
        model, encode(train_inputs), model_cm.run_forward(train_inputs)["O"].astype(np.int64),
        MLPTrainConfig(config.mlp_epochs, config.mlp_batch_size, config.mlp_lr, config.seed),
    )
    info = {
        "train_accuracy": accuracy(model, encode(train_inputs), model_cm.run_forward(train_inputs)["O"]),
        "heldout_accuracy": accuracy(model, encode(test_inputs), model_cm.run_forward(test_inputs)["O"]),
        "epoch_losses": losses,
        "train_seconds": time.perf_counter() - start,
    }
    return model, info


def random_init_copy(model: MLPClassifier, seed: int) -> MLPClassifier:
    """The control network: same architecture, fresh PyTorch-default weights, never trained."""
    torch.manual_seed(seed + 7919)
    return MLPClassifier(model.width, model.n_layers, model.n_classes).to(devices.of(model)).eval()


def evaluate(model: MLPClassifier, layer: int, trained: engine.TrainedIntervention, data: CounterfactualData, engine_name: str) -> dict:
    site = MLPSite(model, layer)
    predictions = engine.predict(site, trained, to_interchange(data), engine_name).numpy()
    with torch.no_grad():
        plain = model(torch.from_numpy(encode(data.base)).to(devices.of(model))).argmax(-1).cpu().numpy()
    return {**iia(predictions, data), "baselines": baselines(data, plain)}


def align_layer(model, layer, train_data, test_data, config: MLPExperimentConfig, desc: str) -> tuple[engine.TrainedIntervention, dict]:
    site = MLPSite(model, layer)
    trained = engine.train(site, to_interchange(train_data), config.das_config(), config.engine, desc=desc)
    return trained, evaluate(model, layer, trained, test_data, config.engine)


def same_site_baselines(model, layer, train_data, test_data, config: MLPExperimentConfig) -> dict:
    """What the layer's DAS is judged against at the same site and subspace sizes (`das.baselines`):
    random subspaces (mean, spread, draws), the top principal directions of the site's activations
    (given to the variables in order or in reverse order, the better one), and the localist alignment of a
    learned neuron mask per variable (disjoint neurons, the same training budget as DAS)."""
    site, sizes = MLPSite(model, layer), config.subspace_dims
    train = to_interchange(train_data)
    with engine.frozen(model):
        states = engine.cache_activations(site, train.inputs)
        (mask,) = alignment_baselines.train_neuron_masks(site, [train], [config.das_config()], sizes, states,
                                                         functools.partial(engine.suffix_logits, site), descs=[f"neuron mask layer {layer}"])
    _, directions = alignment_baselines.principal_directions(states)
    top = directions[:, : sum(sizes)]
    swapped = torch.cat(top.split(list(sizes), dim=1)[::-1], dim=1)  # the variables take the directions in reverse order
    pca = [alignment_baselines.fixed(site, w, "pca", sizes[::-1] if i else sizes) for i, w in enumerate((top, swapped))]
    randoms = alignment_baselines.random_subspaces(site, sizes, config.random_draws, config.seed)
    everything = [mask, *pca, *randoms]
    predictions = engine.predict_cells(site, everything, to_interchange(test_data))
    scores = [iia(p.numpy(), test_data)["iia"] for p in predictions]
    draws = scores[3:]
    return {"neuron_mask": scores[0], "neuron_mask_neurons": mask.history["neurons"], "pca": max(scores[1:3]),
            "random_subspace": {"mean": float(np.mean(draws)), "std": float(np.std(draws)), "draws": draws}}


def run_settings(config: MLPExperimentConfig) -> dict:
    """What a saved MLP or layer cell must have been computed with to be reused (not where it is
    written or run, nor which other layers the run covers)."""
    return {k: v for k, v in config.to_dict().items() if k not in ("results_path", "device", "precision", "export_pyvene", "layers")}


def reusable(path: Path, settings: dict, inputs: dict, companions: tuple[Path, ...], tally: Tally | None = None) -> dict | None:
    """A finished record computed with `settings` from `inputs`, else None. A record from other
    settings is recomputed (and overwritten) rather than refused: these runs take seconds."""
    return load_current(path, settings, inputs, companions=companions, tally=tally, mixing="recompute")


def trained_mlp(task: FourObjectTask, config: MLPExperimentConfig, out_dir: Path, rng: np.random.Generator) -> tuple[MLPClassifier, dict, str]:
    """(the task's MLP, its training info, its weights fingerprint): reloaded from `out_dir/model`
    when a run with the same settings saved it (and its weights are the ones recorded), else
    trained and saved (weights first, its training record last)."""
    settings = run_settings(config)
    record_path = out_dir / "model" / "training.json"
    tally = Tally("model/training.json")
    record = reusable(record_path, settings, {}, companions=(out_dir / "model" / "mlp.safetensors",), tally=tally)
    if record is not None:
        model = mlp.load(out_dir / "model", devices.resolve(config.device))
        if model_fingerprint(model) == record.get("mlp_fingerprint"):
            return model, record["mlp"], record["mlp_fingerprint"]
        tally.retract_reuse("its weights are not the ones it records")
    tally.print()
    model, mlp_info = train_task_mlp(task, config, rng)
    mlp.save(model, out_dir / "model")
    fingerprint = model_fingerprint(model)
    atomic_write_json(record_path, {"status": "done", "settings": settings, "inputs": {}, "mlp_fingerprint": fingerprint, "mlp": mlp_info})
    return model, mlp_info, fingerprint


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
