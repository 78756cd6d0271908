"""Result files: atomic writes, self-describing metadata, results-path checks.

Every file is written to a temporary name in its own directory and renamed into place, so a reader
(or a rerun after a crash) sees a whole file or none.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

PACKAGES = ("torch", "numpy", "pyvene", "transformers", "safetensors", "matplotlib", "tqdm", "networkx", "scikit-learn")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, binary: bool = False):
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_json(path: str | os.PathLike, payload: dict) -> None:
    with atomic_writer(path) as tmp, open(tmp, "w") as handle:
        json.dump(_jsonable(payload), handle, indent=2, sort_keys=False)
        handle.write("\n")


def read_json(path: str | os.PathLike) -> dict:
    """Reads a result JSON; raises ValueError with the path when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it and rerun") from None


def git_commit() -> str | None:
    """The commit of the code that produced a result (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_metadata() -> dict:
    """What every result file records besides its config and metrics."""
    from causal_das.runtime import devices

    return {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "versions": package_versions(), "git_commit": git_commit(),
            "compute": devices.current()}


def check_results_path(path: str | os.PathLike, flag: str = "--results_path") -> Path:
    """The results directory, created if needed; ValueError (naming `flag`) if it is a file or not
    writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a directory; pass a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{flag} {path} cannot be created ({error.strerror})") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} is not writable")
    return path
