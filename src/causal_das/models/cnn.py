"""The ellipse CNN of the second seed, its training loop, and its DAS sites.

Architecture (as the seed): conv 1->16 3x3 pad 1, ReLU, maxpool 2; conv 16->32 3x3 pad 1, ReLU,
maxpool 2; conv 32->64 3x3 pad 1, ReLU; flatten (3136) -> fc1 (3) -> ReLU -> fc2 (1) -> sigmoid.
It is trained with binary cross-entropy on the logit.

DAS sites are the outputs of `conv1`, `conv2`, `conv3` (before their ReLU) and `fc1` (before its
ReLU). A site state can be viewed two ways:

- `rows` (the seed's view): a conv map (C, H, W) as H rows of C*W numbers each (28 x 448 at conv1,
  14 x 448 at conv2, 7 x 448 at conv3) with one rotation shared by all rows: DAS rotates each
  row's 448-vector with the same W and swaps the same subspace in every row;
- `flat`: the whole map as one vector (12,544 at conv1) with one low-rank rotation.

For the engine, a state is a flat (batch, rows * n) tensor laid out row by row; `rows` tells the
engine how many n-vectors share the rotation. The 2-class logits [0, z] make cross-entropy equal
the seed's binary cross-entropy on the logit z, and argmax equal sigmoid(z) > 0.5.
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
from causal_das.models.training import adam, check_model_directory, fit, load_weights, save_weights

log = logging.getLogger(__name__)

LAYERS = ("conv1", "conv2", "conv3", "fc1")
VIEWS = ("rows", "flat")


class EllipseCNN(nn.Module):
    """images (batch, 1, 28, 28) -> logit (batch,) of class 1."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 3)
        self.fc2 = nn.Linear(3, 1)
        self.pool = nn.MaxPool2d(2)

    def _stages(self):
        """Each layer's module and what runs between its output and the next layer's output."""
        # ReLU after the max pool rather than before: max commutes with the (monotone) ReLU, so the
        # values and gradients are the same, on a quarter of the elements. Conv maps run channels
        # last, where the CPU's pooling and convolution kernels are fastest (1.7x for the suffix
        # after conv1, benchmarks/bench_sweep.py --profile); flatten still reads them as (C, H, W).
        return [
            lambda x: self.conv1(x),
            lambda h: self.conv2(torch.relu(self.pool(h.contiguous(memory_format=torch.channels_last)))),
            lambda h: self.conv3(torch.relu(self.pool(h))),
            lambda h: self.fc1(torch.relu(h).flatten(1)),
            lambda h: self.fc2(torch.relu(h)).squeeze(-1),
        ]

    def features(self, images: torch.Tensor, layer: str) -> torch.Tensor:
        """The output of `layer` (before its ReLU): (B, C, H, W) for a conv layer, (B, 3) for fc1."""
        h = images
        for stage in self._stages()[: LAYERS.index(layer) + 1]:
            h = stage(h)
        return h

    def head(self, hidden: torch.Tensor, layer: str) -> torch.Tensor:
        """Runs everything after `layer` on its (possibly intervened) output; returns the logit."""
        for stage in self._stages()[LAYERS.index(layer) + 1 :]:
            hidden = stage(hidden)
        return hidden

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images, "fc1"), "fc1")


def site_shape(layer: str) -> tuple[int, ...]:
    """The output shape of `layer` for one image."""
    return {"conv1": (16, 28, 28), "conv2": (32, 14, 14), "conv3": (64, 7, 7), "fc1": (3,)}[layer]


def site_geometry(layer: str, view: str) -> tuple[int, int]:
    """(rows, n): how many n-vectors of the state share one rotation."""
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")
    if view not in VIEWS:
        raise ValueError(f"unknown site view {view!r}; choose one of {', '.join(VIEWS)}")
    shape = site_shape(layer)
    if view == "flat" or len(shape) == 1:
        return 1, int(np.prod(shape))
    channels, height, width = shape
    return height, channels * width


def _to_rows(h: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, C*W): row r holds every channel's row r, channel by channel."""
    return h.permute(0, 2, 1, 3).flatten(2)


def _from_rows(state: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    channels, height, width = shape
    return state.reshape(-1, height, channels, width).permute(0, 2, 1, 3)


def two_class(logit: torch.Tensor) -> torch.Tensor:
    """logit z (B,) -> (B, 2) logits [0, z]: softmax gives sigmoid(z) for class 1."""
    return torch.stack([torch.zeros_like(logit), logit], dim=-1)


class CNNSite:
    """The output of one layer of an `EllipseCNN`, in the `rows` or `flat` view (module docstring).

    Site names: `cnn.rows.L0` is conv1 in the rows view; layers count conv1, conv2, conv3, fc1 as 0-3.
    """

    def __init__(self, model: EllipseCNN, layer: str, view: str = "rows"):
        self.rows, self.n = site_geometry(layer, view)
        self.model, self.layer, self.view = model.eval(), layer, view
        self.name = SiteName("cnn", view, LAYERS.index(layer))
        self.coordinates = None
        self._shape = site_shape(layer)

    def _to_state(self, h: torch.Tensor) -> torch.Tensor:
        if self.view == "rows" and len(self._shape) == 3:
            return _to_rows(h).flatten(1)
        return h.flatten(1)

    def _from_state(self, state: torch.Tensor) -> torch.Tensor:
        if len(self._shape) == 1:
            return state
        if self.view == "rows":
            return _from_rows(state, self._shape)
        return state.reshape(-1, *self._shape)

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        return self._to_state(self.model.features(images, self.layer))

    def suffix(self, state: torch.Tensor) -> torch.Tensor:
        return two_class(self.model.head(self._from_state(state), self.layer))

    def pyvene_spec(self) -> PyveneSpec:
        wrapper = _PyveneCNN(self)
        return PyveneSpec(
            model=wrapper,
            layer=0,
            component="site.output",
            positions=tuple(range(self.rows)),
            to_pyvene_inputs=lambda images: {"images": images},
            logits=lambda out: out,
            row_dim=self.n,
        )


class _SiteView(nn.Module):
    """An identity module whose output pyvene hooks: the site state as (B, rows, n)."""

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return state


class _PyveneConfig:
    def __init__(self, hidden_size: int):
        self.hidden_size = hidden_size

    def to_dict(self) -> dict:
        return {"hidden_size": self.hidden_size}


class _PyveneCNN(nn.Module):
    """The CNN with its site state exposed as a module output of shape (B, rows, n) for pyvene."""

    def __init__(self, site: CNNSite):
        super().__init__()
        self.cnn, self.site = site.model, _SiteView()
        self._cnn_site = site
        self.config = _PyveneConfig(site.n)

    @property
    def device(self) -> torch.device:
        return next(self.cnn.parameters()).device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        state = self._cnn_site.prefix(images).reshape(len(images), self._cnn_site.rows, self._cnn_site.n)
        return self._cnn_site.suffix(self.site(state).flatten(1))


KIND = "ellipse_cnn"  # written into cnn.json: what --model_path must hold


def save(model: EllipseCNN, directory: Path) -> None:
    """`model.safetensors` and the `cnn.json` marker (what kind of model the directory holds)."""
    from causal_das.runtime.io import atomic_write_json

    save_weights(model, directory / "model.safetensors")
    atomic_write_json(directory / "cnn.json", {"kind": KIND, "layers": list(LAYERS)})


def load(path: str | Path, device: str | torch.device = "cpu") -> EllipseCNN:
    """The CNN `save` wrote (cnn/train_cnn.py); one-line ValueErrors that say what to do otherwise."""
    from causal_das.runtime.io import read_json

    train_hint = f"train it first: python cnn/train_cnn.py --output_dir {path}"
    path = check_model_directory(path, "cnn/train_cnn.py", train_hint)
    marker = path / "cnn.json"
    if not marker.is_file():
        raise ValueError(f"--model_path {path} holds no ellipse CNN ({marker.name} is missing); {train_hint}")
    if read_json(marker).get("kind") != KIND:
        raise ValueError(f"--model_path {path} holds a model of another kind ({marker} does not say {KIND!r}); {train_hint}")
    model = load_weights(EllipseCNN(), path / "model.safetensors", f"--model_path {path}: model.safetensors", train_hint)
    return model.to(device).eval()


@dataclass(frozen=True)
class CNNTrainConfig:
    epochs: int = 5
    batch_size: int = 256
    lr: float = 1e-4
    seed: int = 0


def train_cnn(model: EllipseCNN, images: np.ndarray, labels: np.ndarray, config: CNNTrainConfig) -> list[float]:
    """Adam on binary cross-entropy (the seed's recipe); returns each epoch's mean loss (ValueError if
    training diverges, see `DivergenceGuard`)."""
    device = next(model.parameters()).device
    x, y = torch.as_tensor(images).to(device), torch.as_tensor(labels, dtype=torch.float32).to(device)
    history = fit(
        model, torch.arange(len(x)), lambda idx: nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx]),
        adam(model.parameters(), config.lr), epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
        guard=DivergenceGuard("training of the CNN", "lower the learning rate (--lr)"), desc="train CNN",
    )
    return [epoch.per_batch for epoch in history]


@torch.no_grad()
def predict_classes(model: EllipseCNN, images: np.ndarray | torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """The CNN's class (0/1) for each image."""
    model.eval()
    x, device = torch.as_tensor(images), next(model.parameters()).device
    return torch.cat([(model(x[i : i + batch_size].to(device)) > 0).long().cpu() for i in range(0, len(x), batch_size)]).numpy()
