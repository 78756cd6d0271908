"""Resumable sweeps: a sweep is a set of independent cells, each finished cell one JSON file.

A cell file is written atomically and only after everything else the cell saves (its intervention),
so its presence means the cell is done. A rerun skips cells whose file is whole and was computed
with the same settings, recomputes (and says so) cells whose file is corrupt or incomplete, and
refuses to mix cells computed with different settings in one results directory. Two runs on one
results directory share the work: each cell is claimed (`claim`) before it is computed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class SettingsMismatch(ValueError):
    """A results directory holds a cell computed with other settings."""


def load_finished(path: Path, settings: dict, required: tuple[str, ...] = (), companions: tuple[Path, ...] = ()) -> dict | None:
    """The finished cell at `path`, or None if it must be (re)computed.

    `required`: keys the cell JSON must have; `companions`: files the cell also wrote (e.g. its
    saved W), without which it counts as unfinished (a fresh clone has the JSON but not the weights).
    Raises SettingsMismatch when the file is whole but was computed with other `settings`:
    overwriting it silently would lose a finished result, mixing it in would be wrong."""
    if not path.exists():
        return None
    missing = [str(p) for p in companions if not p.is_file()]
    if missing:
        print(f"note: {path} has no saved intervention ({missing[0]} is missing); recomputing that cell", flush=True)
        return None
    try:
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict) or payload.get("status") != "done" or any(key not in payload for key in required):
            raise ValueError("incomplete")
    except (ValueError, UnicodeDecodeError):
        log.warning("cell file %s is corrupt or incomplete; recomputing that cell", path)
        print(f"warning: cell file {path} is corrupt or incomplete; recomputing that cell", flush=True)
        return None
    saved = payload.get("settings")
    if saved != json.loads(json.dumps(settings)):
        differing = sorted(k for k in set(saved or {}) | set(settings) if (saved or {}).get(k) != settings.get(k))
        raise SettingsMismatch(
            f"{path} was computed with other settings (differing: {', '.join(differing)}); "
            "use another --results_path or delete that directory"
        )
    return payload


@contextlib.contextmanager
def claim(cell_path: Path, wait: bool = False):
    """Owns a cell for the duration, so two runs on one results path never compute it twice.

    Yields True when this process holds the cell's lock, False when another live process does
    (only with `wait=False`; with `wait=True` it blocks until the other run finishes or dies). The
    lock is an advisory `flock` on a hidden file beside the cell file: the kernel releases it when
    its holder exits, even on SIGKILL, so a crashed run never leaves a cell locked. Callers check
    again, once they hold it, whether the cell was finished meanwhile. The lock file is kept
    (removing it would let two processes lock different files for the same cell)."""
    cell_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(cell_path.parent / f".{cell_path.name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def run_cells(todo: list, cell_path, finished, compute, progress) -> tuple[dict, int]:
    """Computes the cells of `todo` that no other run is computing; returns ({key: record}, number
    computed here).

    `cell_path(key)` is a cell's JSON path, `finished(key)` its record if it is finished (else None),
    `compute(key)` computes and writes it; `progress` wraps an iterable (a progress bar). A cell
    another run holds is skipped at first; at the end this run waits for each such cell and takes
    it over if that run stopped without finishing it."""
    records, deferred, computed = {}, [], 0
    for key in progress(todo):
        with claim(cell_path(key)) as mine:
            if not mine:
                deferred.append(key)
                continue
            record = finished(key)  # another run may have finished it since the caller looked
            if record is None:
                record, computed = compute(key), computed + 1
            records[key] = record
    if deferred:
        print(f"waiting for {len(deferred)} cell(s) another run on this results path is computing", flush=True)
    for key in deferred:
        with claim(cell_path(key), wait=True):
            record = finished(key)
            if record is None:
                record, computed = compute(key), computed + 1
            records[key] = record
    return records, computed
