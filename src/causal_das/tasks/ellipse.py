"""The ellipse task of the second seed: is a grey ellipse "big, round and dark enough"?

An image is 28 x 28, one channel, white background (1.0), with one filled ellipse centred in it
(hard edges); half of the ellipses are turned by 90 degrees. Three latents make the label:

- circularity c = b/a ~ U(0.3, 1) (minor over major semi-axis);
- colour (the ellipse's grey level) = round(0.9 U(0, 1), 2), so 0 (black) .. 0.9 (light grey);
- area ~ U(16 pi, 64 pi); the semi-axes are a = sqrt(area / (pi c)), b = a c.

The causal model scales each latent to [0, 1] (its intermediate variables) and thresholds their
weighted sum: label = 1 iff 0.4 (circularity' + colour' + area') > 0.6. An interchange
intervention gives a variable the (scaled) value it has on a source image.

Images are drawn by broadcasting every ellipse against the pixel grid at once (no Python loop per
pixel or per image). Randomness comes only from the `numpy.random.Generator` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from causal_das.causal_model import CausalModel, Mechanism, Setting

SIZE = 28
VARIABLES = ("circularity", "colour", "area")
COEFFICIENTS = (0.4, 0.4, 0.4)
THRESHOLD = 0.6
MIN_CIRCULARITY, MIN_AREA, MAX_AREA, MAX_COLOUR = 0.3, 16 * math.pi, 64 * math.pi, 0.9
# Raw latents are the causal model's inputs; `rotated` changes the image but not the label.
RAW = {"circularity": "raw_circularity", "colour": "raw_colour", "area": "raw_area"}


def sample_latents(rng: np.random.Generator, n: int) -> Setting:
    """n images' latents: {raw_circularity, raw_colour, raw_area: float (n,), rotated: bool (n,)}."""
    return {
        "raw_circularity": rng.uniform(MIN_CIRCULARITY, 1.0, size=n),
        "raw_colour": np.round(MAX_COLOUR * rng.uniform(0.0, 1.0, size=n), 2),
        "raw_area": rng.uniform(MIN_AREA, MAX_AREA, size=n),
        "rotated": rng.uniform(size=n) < 0.5,
    }


def render(latents: Setting, chunk: int = 8192) -> np.ndarray:
    """Latents -> images (n, 1, 28, 28) float32: the ellipse's grey level inside, 1.0 outside."""
    c, colour, area = latents["raw_circularity"], latents["raw_colour"], latents["raw_area"]
    major = np.sqrt(area / (math.pi * c))
    minor = major * c
    # Horizontal and vertical semi-axes: the major axis is horizontal unless the image is rotated.
    horizontal = np.where(latents["rotated"], minor, major)[:, None, None]
    vertical = np.where(latents["rotated"], major, minor)[:, None, None]
    centres = np.arange(SIZE) + 0.5 - SIZE / 2  # pixel centres, the image centre at 0
    x, y = centres[None, None, :], centres[None, :, None]
    images = np.empty((len(c), 1, SIZE, SIZE), dtype=np.float32)
    for start in range(0, len(c), chunk):
        part = slice(start, start + chunk)
        inside = (x / horizontal[part]) ** 2 + (y / vertical[part]) ** 2 <= 1.0
        images[part, 0] = np.where(inside, colour[part, None, None], 1.0)
    return images


def _scale(low: float, high: float):
    return lambda raw: (raw - low) / (high - low)


def _label(*scaled: np.ndarray) -> np.ndarray:
    weighted = sum(w * s for w, s in zip(COEFFICIENTS, scaled, strict=True))
    return weighted > THRESHOLD


def causal_model() -> CausalModel:
    """Inputs: the raw latents; intermediate: the three scaled latents; output: the label."""
    return CausalModel(
        name="ellipse",
        inputs=tuple(RAW.values()),
        mechanisms={
            "circularity": Mechanism(("raw_circularity",), _scale(MIN_CIRCULARITY, 1.0)),
            "colour": Mechanism(("raw_colour",), _scale(0.0, MAX_COLOUR)),
            "area": Mechanism(("raw_area",), _scale(MIN_AREA, MAX_AREA)),
            "label": Mechanism(VARIABLES, _label),
        },
        output="label",
        values={"label": (False, True)},
    )


def labels(latents: Setting) -> np.ndarray:
    """The class of each image (int64, 0 or 1)."""
    return causal_model().run_forward(latents)["label"].astype(np.int64)


def parse_variables(text: str) -> tuple[str, ...]:
    """'circularity,colour' -> ('circularity', 'colour'), in the causal model's order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIABLES]
    if unknown or not names:
        raise ValueError(f"unknown variable(s) {unknown or [text]} in {text!r}; choose from {', '.join(VARIABLES)} (comma-separated)")
    if len(set(names)) != len(names):
        raise ValueError(f"variable subset {text!r} names a variable twice")
    return tuple(v for v in VARIABLES if v in names)


@dataclass(frozen=True)
class EllipsePairs:
    """Counterfactual examples as indices into a pool of images.

    `sources[:, j]` is the image the j-th subspace is filled from: one column in single-source mode
    (every chosen variable comes from the same source), one per variable in multi-source mode
    (variable j from source j).
    """

    variables: tuple[str, ...]
    mode: str
    base: np.ndarray  # (N,) int64
    sources: np.ndarray  # (N, V) int64
    labels: np.ndarray  # (N,) the causal model's counterfactual label
    base_labels: np.ndarray  # (N,) its label of the base
    source_labels: np.ndarray  # (N,) its label of the first source

    def __len__(self) -> int:
        return len(self.base)


MODES = ("single", "multi")


def sample_pairs(latents: Setting, variables: tuple[str, ...], mode: str, n: int, rng: np.random.Generator) -> EllipsePairs:
    """Draws `n` counterfactual examples over the pool `latents` (bases and sources uniformly)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if mode == "multi" and len(variables) < 2:
        raise ValueError(f"multi-source DAS needs at least two variables (one source each), got {list(variables)}; use --mode single")
    model = causal_model()
    pool = len(latents["raw_circularity"])
    base = rng.integers(pool, size=n)
    sources = rng.integers(pool, size=(n, 1 if mode == "single" else len(variables)))
    pick = lambda idx: {name: latents[name][idx] for name in model.inputs}  # noqa: E731
    source_of = {v: pick(sources[:, 0 if mode == "single" else j]) for j, v in enumerate(variables)}
    counterfactual = model.run_interchange(pick(base), source_of)["label"]
    return EllipsePairs(
        variables=variables,
        mode=mode,
        base=base,
        sources=sources,
        labels=counterfactual.astype(np.int64),
        base_labels=model.run_forward(pick(base))["label"].astype(np.int64),
        source_labels=model.run_forward(pick(sources[:, 0]))["label"].astype(np.int64),
    )
