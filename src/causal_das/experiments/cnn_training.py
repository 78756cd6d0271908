"""Training the ellipse CNN of the second seed (`cnn/train_cnn.py`) with the seed's recipe, saved
with its held-out accuracy and reused while its flags are unchanged.

Randomness comes from independent streams of one seed (`studies.ellipse_cnn`, with the untrained
control CNN): the CNN's training and test images here, the DAS image pools in `cnn_das`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from causal_das.models import cnn
from causal_das.models.cnn import (
    CNNTrainConfig,
    EllipseCNN,
    predict_classes,
    train_cnn,
)
from causal_das.runtime import devices
from causal_das.runtime.io import (
    atomic_write_json,
    check_results_path,
    run_metadata,
)
from causal_das.runtime.provenance import model_fingerprint, trained_earlier
from causal_das.runtime.settings import settings_of
from causal_das.studies.ellipse_cnn import images_and_labels, rng_streams
from causal_das.tasks import ellipse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CNNRunConfig:
    """How `cnn/train_cnn.py` trains the CNN (the seed's recipe by default)."""

    n_train: int = 50_000
    n_test: int = 10_000
    epochs: int = 5
    batch_size: int = 256
    lr: float = 1e-4
    seed: int = 0
    output_dir: str = "results/cnn/model"
    device: str = "auto"  # see causal_das.runtime.devices
    precision: str = "auto"
    retrain: bool = False  # train even when output_dir holds a CNN trained with these flags

    def settings(self) -> dict:
        """The flags that determine the trained CNN (not where it is written or run)."""
        return settings_of(self)


def train_and_save(config: CNNRunConfig) -> dict:
    """Trains the CNN, writes `model.safetensors`, `cnn.json` and `training.json` (the last one
    written, so its presence means the model is complete). Returns the training record. A CNN already
    trained there with the same flags (whose weights are the ones recorded) is reused."""
    device = devices.setup(config.device, config.precision)
    out = check_results_path(config.output_dir, "--output_dir")
    earlier = trained_earlier(out, config.settings(), lambda: cnn.load(out), config.retrain)
    if earlier is not None:
        return earlier
    streams = rng_streams(config.seed)
    started = time.perf_counter()
    _, train_images, train_labels = images_and_labels(streams["cnn_train"], config.n_train)
    _, test_images, test_labels = images_and_labels(streams["cnn_test"], config.n_test)
    torch.manual_seed(config.seed)
    model = EllipseCNN().to(device)  # initialised on the CPU: the same start on every device
    losses = train_cnn(model, train_images, train_labels, CNNTrainConfig(config.epochs, config.batch_size, config.lr, config.seed))
    record = {
        "experiment": "train_cnn",
        "config": asdict(config),
        **run_metadata(),
        "train_accuracy": float(np.mean(predict_classes(model, train_images) == train_labels)),
        "heldout_accuracy": float(np.mean(predict_classes(model, test_images) == test_labels)),
        "heldout_majority": float(max(test_labels.mean(), 1 - test_labels.mean())),
        "epoch_losses": losses,
        "parameters": sum(p.numel() for p in model.parameters()),
        "model_fingerprint": model_fingerprint(model),
        "seconds": time.perf_counter() - started,
        "settings": config.settings(),
        "inputs": {},
        "status": "done",
    }
    cnn.save(model, out)
    atomic_write_json(out / "training.json", record)
    return record


def plot_examples(out: str | Path, seed: int, n: int = 16) -> Path:
    """A grid of the generator's images with their scaled latents and label."""
    from causal_das.plots.cnn import plot_image_grid

    latents = ellipse.sample_latents(np.random.default_rng([seed, 7]), n)
    scaled = ellipse.causal_model().run_forward(latents)
    titles = [f"({scaled['circularity'][i]:.2f}, {scaled['colour'][i]:.2f}, {scaled['area'][i]:.2f})\nlabel {int(scaled['label'][i])}"
              for i in range(n)]
    return plot_image_grid(ellipse.render(latents), titles, out)
