"""What a result was computed with: a run configuration's fields, less where and how it runs.

Every finished result records the settings it was computed with, and a rerun reuses it only when
they match (`runtime.provenance`). Where the result is written, which device runs it, the matrix
precision, how many cells share a pass, whether to retrain anyway or also export pyvene weights:
none of these changes a number, so none is a setting. They are named once here, for every
configuration, rather than in each experiment.
"""

from __future__ import annotations

from dataclasses import asdict

# Fields of any run configuration that say where or how it runs, not what it computes.
WHERE_AND_HOW = ("results_path", "output_dir", "device", "precision", "max_cells_per_pass", "retrain", "export_pyvene")


def as_json(config) -> dict:
    """Every field of a dataclass configuration, tuples as lists (as JSON reads them back)."""
    return {key: (list(value) if isinstance(value, tuple) else value) for key, value in asdict(config).items()}


def settings_of(config, *axes: str) -> dict:
    """The fields of `config` that determine its results, in field order: all but `WHERE_AND_HOW`
    and the given `axes` (fields that say which cells a sweep has, each cell recording its own)."""
    return {key: value for key, value in as_json(config).items() if key not in WHERE_AND_HOW and key not in axes}
