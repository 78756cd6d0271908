"""The four-object study's MLPs (the hierarchical-equality and pattern-matching sweeps and the
wrong-model ablation): the run configuration, the trained MLP reused while its settings are
unchanged, its untrained control copy, counterfactual data for the engine, and DAS at one layer
with its evaluation and same-site baselines. `experiments.mlp` and `experiments.mlp_ablation`
build on these; neither imports the other.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from causal_das.causal_model import CounterfactualData
from causal_das.das import baselines as alignment_baselines
from causal_das.das import engine
from causal_das.metrics import baselines, iia
from causal_das.models import mlp
from causal_das.models.mlp import MLPClassifier, MLPSite, MLPTrainConfig, accuracy, train_classifier
from causal_das.runtime import devices
from causal_das.runtime.io import atomic_write_json
from causal_das.runtime.provenance import Tally, load_current, model_fingerprint
from causal_das.runtime.settings import as_json, settings_of
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
        return as_json(self)

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
    return settings_of(config, "layers")


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
