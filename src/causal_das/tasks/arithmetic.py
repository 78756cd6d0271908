"""The X+Y+Z task of the thesis: prompts, labels, the two causal-model families, interchange pairs.

Inputs are the 1000 triples (X, Y, Z) with each number in 1..10, shown to a network as the prompt
`"{X}+{Y}+{Z}="`; the label is the class X+Y+Z-3 (28 classes, sums 3..30). Triples are indexed in
lexicographic order: index = 100 (X-1) + 10 (Y-1) + (Z-1).

Every causal model has one intermediate variable P, so an interchange example is an ordered pair
(base, source) of distinct triples: 999,000 of them. The counterfactual label takes P from the
source and everything else from the base:

- arithmetic: `(X+Y)+Z` [s.X+s.Y+b.Z], `(X+Z)+Y` [s.X+s.Z+b.Y], `X+(Y+Z)` [b.X+s.Y+s.Z]
- simple: `(X)+Y+Z` [s.X+b.Y+b.Z], `X+(Y)+Z` [b.X+s.Y+b.Z], `X+Y+(Z)` [b.X+b.Y+s.Z],
  `(X+Y+Z)` [s.X+s.Y+s.Z] (a full swap of every position satisfies it trivially).
"""

from __future__ import annotations

import re

import numpy as np

from causal_das.causal_model import CausalModel, Mechanism

N_CLASSES = 28
NUMBERS = tuple(range(1, 11))
TRIPLES = np.array([(x, y, z) for x in NUMBERS for y in NUMBERS for z in NUMBERS], dtype=np.int64)  # (1000, 3)
N_TRIPLES = len(TRIPLES)
N_PAIRS = N_TRIPLES * (N_TRIPLES - 1)  # ordered pairs of distinct triples
OFFSET = 3  # label = X + Y + Z - 3


def prompt(x: int, y: int, z: int) -> str:
    return f"{x}+{y}+{z}="


PROMPTS = tuple(prompt(*t) for t in TRIPLES.tolist())
LABELS = TRIPLES.sum(axis=1) - OFFSET  # (1000,)


def triple_index(x, y, z):
    """Index of a triple (vectorised); numbers must be in 1..10."""
    return 100 * (np.asarray(x) - 1) + 10 * (np.asarray(y) - 1) + (np.asarray(z) - 1)


def parse_triple(text: str) -> tuple[int, int, int]:
    """'3,7,2' or '3+7+2' -> (3, 7, 2); ValueError naming the problem otherwise."""
    parts = [p for p in re.split(r"[,+\s=]+", text.strip()) if p]
    try:
        numbers = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"triple {text!r} is not three integers such as 3,7,2") from None
    if len(numbers) != 3 or not all(1 <= n <= 10 for n in numbers):
        raise ValueError(f"triple {text!r} must be three integers in 1..10, such as 3,7,2")
    return numbers  # type: ignore[return-value]


def _model(name: str, parents: tuple[str, ...], rest: tuple[str, ...]) -> CausalModel:
    """One intermediate variable P = sum of `parents`; O = P + sum of `rest` - 3."""
    return CausalModel(
        name=name,
        inputs=("X", "Y", "Z"),
        mechanisms={
            "P": Mechanism(parents, lambda *values: np.sum(values, axis=0)),
            "O": Mechanism(("P", *rest), lambda p, *values: p + np.sum(values, axis=0) - OFFSET if values else p - OFFSET),
        },
        output="O",
        values={v: NUMBERS for v in "XYZ"},
    )


FAMILIES: dict[str, tuple[CausalModel, ...]] = {
    "arithmetic": (
        _model("(X+Y)+Z", ("X", "Y"), ("Z",)),
        _model("(X+Z)+Y", ("X", "Z"), ("Y",)),
        _model("X+(Y+Z)", ("Y", "Z"), ("X",)),
    ),
    "simple": (
        _model("(X)+Y+Z", ("X",), ("Y", "Z")),
        _model("X+(Y)+Z", ("Y",), ("X", "Z")),
        _model("X+Y+(Z)", ("Z",), ("X", "Y")),
        _model("(X+Y+Z)", ("X", "Y", "Z"), ()),
    ),
}
MODELS: dict[str, CausalModel] = {m.name: m for family in FAMILIES.values() for m in family}


def get_family(name: str) -> tuple[CausalModel, ...]:
    if name not in FAMILIES:
        raise ValueError(f"unknown causal model type {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def get_model(name: str) -> CausalModel:
    if name not in MODELS:
        raise ValueError(f"unknown causal model {name!r}; choose one of {list(MODELS)}")
    return MODELS[name]


def slug(model_name: str) -> str:
    """A file-name-safe form of a model name: '(X+Y)+Z' -> 'PXY_Z', 'X+(Y+Z)' -> 'X_PYZ'."""
    groups = re.findall(r"\(([^)]*)\)|([XYZ])", model_name)
    parts = []
    for inside, single in groups:
        parts.append(("P" + inside.replace("+", "")) if inside else single)
    return "_".join(parts)


def _setting(indices: np.ndarray) -> dict[str, np.ndarray]:
    triples = TRIPLES[indices]
    return {"X": triples[:, 0], "Y": triples[:, 1], "Z": triples[:, 2]}


def counterfactual_labels(model: CausalModel, base: np.ndarray, source: np.ndarray) -> np.ndarray:
    """The class label after setting P on `base` triples to its value on `source` triples."""
    return model.run_interchange(_setting(base), {"P": _setting(source)})[model.output].astype(np.int64)


def labels_of(model: CausalModel, indices: np.ndarray) -> np.ndarray:
    """The model's (unintervened) label on triples; equals `LABELS` for every model here."""
    return model.run_forward(_setting(indices))[model.output].astype(np.int64)


def intermediate_values(model: CausalModel) -> np.ndarray:
    """(1000,) the value of the model's intermediate variable P on every triple."""
    return np.asarray(model.run_forward(_setting(np.arange(N_TRIPLES)))["P"]).astype(np.int64)


def decode_pairs(pair_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair id in [0, 999000) -> (base, source) triple indices with base != source."""
    pair_ids = np.asarray(pair_ids, dtype=np.int64)
    base, rest = np.divmod(pair_ids, N_TRIPLES - 1)
    source = rest + (rest >= base)
    return base, source


def encode_pairs(base: np.ndarray, source: np.ndarray) -> np.ndarray:
    base, source = np.asarray(base, dtype=np.int64), np.asarray(source, dtype=np.int64)
    return base * (N_TRIPLES - 1) + source - (source > base)


def draw_pairs(rng: np.random.Generator, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """`n` distinct pair ids, none of them in `exclude` (so test pairs never repeat training pairs)."""
    excluded = 0 if exclude is None else len(np.unique(exclude))
    if n > N_PAIRS - excluded:
        raise ValueError(f"asked for {n} pairs but only {N_PAIRS - excluded} distinct (base, source) pairs are left")
    if exclude is None or len(exclude) == 0:
        return rng.choice(N_PAIRS, size=n, replace=False)
    # Draw a few more than needed, drop excluded ones, top up in the rare case of a shortfall.
    chosen = np.empty(0, dtype=np.int64)
    excluded_set = np.unique(exclude)
    while len(chosen) < n:
        candidates = rng.choice(N_PAIRS, size=min(N_PAIRS, 2 * (n - len(chosen)) + 64), replace=False)
        candidates = candidates[~np.isin(candidates, excluded_set) & ~np.isin(candidates, chosen)]
        _, first = np.unique(candidates, return_index=True)
        chosen = np.concatenate([chosen, candidates[np.sort(first)][: n - len(chosen)]])
    return chosen


def heldout_split(rng: np.random.Generator, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) triple indices. Each class keeps at least `1 - fraction` of its triples (and
    the rare extreme sums, with fewer than 5 triples, all of them) in training: a classifier cannot
    name a class it never saw, so holding those out would test nothing about generalisation."""
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    train, heldout = [], []
    for label in range(N_CLASSES):
        members = rng.permutation(np.flatnonzero(np.equal(LABELS, label)))
        n_out = int(fraction * len(members)) if len(members) >= 5 else 0
        heldout.extend(members[:n_out].tolist())
        train.extend(members[n_out:].tolist())
    return np.sort(np.array(train)), np.sort(np.array(heldout))
