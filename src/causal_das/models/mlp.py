"""The MLP of the hierarchical-equality and pattern-matching experiments, and its training loop.

Same architecture and parameter names as pyvene's `MLPForClassification` (no input projection:
the 4*dim input feeds `h[0]` directly; each hidden layer is Linear + ReLU of width 4*dim; a linear
`score` head), so its weights load into pyvene's class for the reference engine. Unlike pyvene's
class it keeps PyTorch's default initialisation: with Hugging Face's N(0, 0.02) init, which
pyvene's class gets since transformers 4.57, the tutorial's IIA fell from 0.89 to 0.61.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from causal_das.das.site import PyveneSpec, SiteName
from causal_das.das.training import DivergenceGuard
from causal_das.models.training import adam, fit, load_weights, save_weights

log = logging.getLogger(__name__)


class MLPBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.ff1 = nn.Linear(width, width)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.ff1(x))


class MLPStack(nn.Module):
    def __init__(self, width: int, n_layers: int):
        super().__init__()
        self.h = nn.ModuleList(MLPBlock(width) for _ in range(n_layers))


class MLPClassifier(nn.Module):
    """x (batch, width) -> logits (batch, n_classes) through `n_layers` hidden ReLU layers."""

    def __init__(self, width: int, n_layers: int = 3, n_classes: int = 2):
        super().__init__()
        self.width, self.n_layers, self.n_classes = width, n_layers, n_classes
        self.mlp = MLPStack(width, n_layers)
        self.score = nn.Linear(width, n_classes)

    def hidden(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """Output of hidden layer `upto` (0-based): pyvene's `block_output` of that layer."""
        for block in self.mlp.h[: upto + 1]:
            x = block(x)
        return x

    def head(self, hidden: torch.Tensor, after: int) -> torch.Tensor:
        """Runs the layers after hidden layer `after`, then the score head."""
        for block in self.mlp.h[after + 1 :]:
            hidden = block(hidden)
        return self.score(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x, self.n_layers - 1), self.n_layers - 1)

    def config(self) -> dict:
        return {"width": self.width, "n_layers": self.n_layers, "n_classes": self.n_classes}

    def to_pyvene(self) -> nn.Module:
        """pyvene's own `MLPForClassification` holding these weights (imports pyvene)."""
        from pyvene.models.mlp.modelings_mlp import MLPConfig, MLPForClassification

        config = MLPConfig(
            h_dim=self.width, n_layer=self.n_layers, num_classes=self.n_classes,
            activation_function="relu", pdrop=0.0, include_bias=True, squeeze_output=True,
        )
        model = MLPForClassification(config)
        model.load_state_dict(self.state_dict())
        return model.to(self.score.weight.device).eval()


class MLPSite:
    """The output of hidden layer `layer` of an `MLPClassifier` (n = width)."""

    def __init__(self, model: MLPClassifier, layer: int):
        if not 0 <= layer < model.n_layers:
            raise ValueError(f"layer {layer} does not exist: the MLP has hidden layers 0..{model.n_layers - 1}")
        self.model, self.layer = model.eval(), layer
        self.name = SiteName("mlp", "block_output", layer)
        self.n = model.width
        self.coordinates = None

    def prefix(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model.hidden(inputs, self.layer)

    def suffix(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.head(hidden, self.layer)

    def pyvene_spec(self) -> PyveneSpec:
        return PyveneSpec(
            model=self.model.to_pyvene(),
            layer=self.layer,
            component="block_output",
            positions=(0,),
            to_pyvene_inputs=lambda x: {"inputs_embeds": x.unsqueeze(1)},
            logits=lambda out: out[0] if isinstance(out, tuple) else out.logits,
        )


@dataclass(frozen=True)
class MLPTrainConfig:
    epochs: int = 3
    batch_size: int = 1024
    lr: float = 1e-3
    seed: int = 0


def train_classifier(
    model: nn.Module, inputs: np.ndarray, labels: np.ndarray, config: MLPTrainConfig, desc: str = "train MLP"
) -> list[float]:
    """Trains `model` with Adam and cross-entropy; returns the mean loss of each epoch (ValueError if
    training diverges, see `DivergenceGuard`)."""
    device = next(model.parameters()).device
    x, y = torch.as_tensor(inputs).to(device), torch.as_tensor(labels, dtype=torch.long).to(device)
    history = fit(
        model, torch.arange(len(x)), lambda idx: nn.functional.cross_entropy(model(x[idx]), y[idx]),
        adam(model.parameters(), config.lr), epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
        guard=DivergenceGuard("training of the MLP classifier", "lower the MLP learning rate (--mlp_lr)"), desc=desc,
    )
    return [epoch.per_batch for epoch in history]


def save(model: MLPClassifier, directory: Path) -> None:
    """`mlp.safetensors` (weights) and `mlp.json` (architecture) in `directory`, each whole or absent."""
    from causal_das.runtime.io import atomic_write_json

    save_weights(model, directory / "mlp.safetensors")
    atomic_write_json(directory / "mlp.json", model.config())


def load(directory: Path, device: str | torch.device = "cpu") -> MLPClassifier:
    """The MLP `save` wrote, in eval mode on `device`; one ValueError line when it is broken."""
    from causal_das.runtime.io import read_json

    model = MLPClassifier(**read_json(directory / "mlp.json"))
    load_weights(model, directory / "mlp.safetensors", f"saved MLP {directory / 'mlp.safetensors'}")
    return model.to(device).eval()


@torch.no_grad()
def accuracy(model: nn.Module, inputs: np.ndarray, labels: np.ndarray, batch_size: int = 65536) -> float:
    model.eval()
    device = next(model.parameters()).device
    x, y = torch.as_tensor(inputs).to(device), torch.as_tensor(labels, dtype=torch.long).to(device)
    correct = sum((model(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum().item() for i in range(0, len(x), batch_size))
    return correct / len(x)
