"""Resumable sweeps: a sweep is a set of independent cells, each finished cell one JSON file.

A cell file is written atomically and only after everything else the cell saves (its intervention),
so its presence means the cell is done. Whether a finished cell is reused, recomputed or refused is
`provenance.load_current`'s rule. Two runs on one results directory share the work: each cell is
claimed (`claim`) before it is computed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


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


def split_finished(keys, finished, tally) -> tuple[dict, list]:
    """({key: record} of the cells already finished and current, [the keys still to compute]), and
    the step's one line of what is reused and what is recomputed, and why (`tally`, a `Tally`)."""
    records, todo = {}, []
    for key in keys:
        record = finished(key, tally)
        if record is None:
            todo.append(key)
        else:
            records[key] = record
    tally.print()
    return records, todo


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
