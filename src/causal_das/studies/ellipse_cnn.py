"""The ellipse study's shared pieces: independent random streams of one seed, images with their
latents and labels, and the untrained control CNN. `experiments.cnn_training` trains the CNN,
`experiments.cnn_das` aligns it; neither imports the other.
"""

from __future__ import annotations

import numpy as np
import torch

from causal_das.models.cnn import EllipseCNN
from causal_das.tasks import ellipse


def rng_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent streams: the CNN's training and test images, and the DAS image pools."""
    names = ("cnn_train", "cnn_test", "das_train_pool", "das_test_pool")
    return {name: np.random.default_rng(s) for name, s in zip(names, np.random.SeedSequence([seed, 5]).spawn(len(names)), strict=True)}


def images_and_labels(rng: np.random.Generator, n: int) -> tuple[dict, np.ndarray, np.ndarray]:
    latents = ellipse.sample_latents(rng, n)
    return latents, ellipse.render(latents), ellipse.labels(latents)


def random_init_cnn(seed: int) -> EllipseCNN:
    """The control network: the same architecture, untrained, initialised from its own seed."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed + 10_007)
    model = EllipseCNN().eval()
    torch.random.set_rng_state(generator_state)
    return model
