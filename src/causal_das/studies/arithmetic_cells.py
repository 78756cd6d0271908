"""The X+Y+Z study's cells: the thesis sweep's configuration and k values, the (base, source) pairs
every cell of a sweep shares, and the names of the cells of both sweeps (the thesis sweep's
(causal model, layer, k) and the position sweep's (causal model, layer, position set)).

The experiment modules of the study (`experiments.arithmetic_sweep`, `arithmetic_positions`, `arithmetic_evaluation`,
`iia_graphs`) build on these; none of them imports another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from causal_das.das import engine
from causal_das.runtime.io import read_json
from causal_das.runtime.settings import settings_of
from causal_das.runtime.sweep import grouped
from causal_das.studies import arithmetic_decoder
from causal_das.tasks import arithmetic

THESIS_K = (64, 128, 256, 768, 4608)  # for GPT-2 small: n = 6 x 768 = 4608
THESIS_PRESET = {"n_training": 256_000, "batch_size": 1280, "epochs": 4, "lr": 0.01}


@dataclass(frozen=True)

class SweepConfig:
    model_path: str = "results/gpt2/model"
    causal_model_type: str = "arithmetic"
    layers: tuple[int, ...] | None = None  # None: every block
    low_rank_dims: tuple[int, ...] | None = None  # None: `default_k` (or the thesis's k with preset "thesis")
    preset: str | None = None  # "thesis": the thesis's sizes (THESIS_PRESET) and k values, scaled to n
    n_training: int = 8_000
    n_testing: int = 2_000
    batch_size: int = 64
    epochs: int = 3
    lr: float = 0.01
    positions: tuple[int, ...] = tuple(range(arithmetic_decoder.SEQ_LEN))
    engine: str = "fast"
    control: str = "random_init"
    seed: int = 0
    results_path: str = "results/gpt2/das_arithmetic"
    # Where and how it runs (see `devices`, `engine.train_cells`); not part of a cell's settings (they
    # do not change its numbers), so a sweep can be resumed elsewhere.
    device: str = "auto"
    precision: str = "auto"
    max_cells_per_pass: int | None = None  # None: as many as the device's memory budget fits

    def das_config(self, k: int) -> engine.DASConfig:
        return engine.DASConfig((k,), self.epochs, self.batch_size, self.lr, self.seed)


def scaled_k(thesis_k, n: int) -> tuple[int, ...]:
    """The thesis's k values (for n = 4608) scaled to a site of dimension n."""
    return tuple(sorted({max(1, round(k * n / THESIS_K[-1])) for k in thesis_k}))


def thesis_k(n: int) -> tuple[int, ...]:
    return scaled_k(THESIS_K, n)


def default_k(n: int) -> tuple[int, ...]:
    """Default sweep: thesis k = 256 and the full swap, scaled (for the default model: 16 and 288)."""
    return scaled_k((256, 4608), n)


def rng_streams(seed: int) -> dict[str, np.random.Generator]:
    names = ("pairs", "evaluation")
    return {name: np.random.default_rng(s) for name, s in zip(names, np.random.SeedSequence([seed, 3]).spawn(len(names)), strict=True)}


def sweep_pairs(config: SweepConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training, test) pair ids: disjoint, the same for every cell of a sweep with this seed."""
    rng = rng_streams(config.seed)["pairs"]
    train = arithmetic.draw_pairs(rng, config.n_training)
    return train, arithmetic.draw_pairs(rng, config.n_testing, exclude=train)


def split_pairs(seed: int, n_training: int, n_selection: int, n_report: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training, selection, report) pair ids, disjoint, drawn in that order from the sweep's stream:
    the training pairs are `sweep_pairs`' own, and the report split's size changes neither of the
    others (so nothing chosen on the selection split can depend on the report pairs)."""
    rng = rng_streams(seed)["pairs"]
    train = arithmetic.draw_pairs(rng, n_training)
    selection = arithmetic.draw_pairs(rng, n_selection, exclude=train)
    return train, selection, arithmetic.draw_pairs(rng, n_report, exclude=np.concatenate([train, selection]))


def cell_name(model_name: str, layer: int, k: int) -> str:
    return f"{arithmetic.slug(model_name)}/L{layer:02d}_k{k}"


def group_by_layer(keys: list) -> list[list]:
    """Cells or graphs keyed (causal model, layer, ...) grouped by layer: those trained or evaluated together."""
    return grouped(keys, lambda key: key[1])


def sweep_settings(config: SweepConfig) -> dict:
    """Everything that determines a cell's numbers (not where it is written)."""
    return settings_of(config)


def load_sweep_config(results_path: str | Path) -> SweepConfig:
    summary = read_json(Path(results_path) / "summary.json")
    try:
        raw = dict(summary["config"])
        for key in ("layers", "low_rank_dims", "positions"):
            if raw.get(key) is not None:
                raw[key] = tuple(raw[key])
        return SweepConfig(**raw, results_path=str(results_path))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{Path(results_path) / 'summary.json'} is not a run_das.py summary ({error})") from None


def position_cell_name(model_name: str, layer: int, position_set: str) -> str:
    """A position sweep's cell: (causal model, layer, position set)."""
    return f"{arithmetic.slug(model_name)}/L{layer:02d}_{'all' if position_set == 'all' else 'p' + position_set.replace(',', '_')}"


def parse_position_set(text: str) -> tuple[int, ...]:
    """'all' -> 0..5, '3' -> (3,), '2-3' -> (2, 3), '0,2' -> (0, 2); ValueError otherwise."""
    return arithmetic_decoder.parse_positions(text, "--position_sets")
