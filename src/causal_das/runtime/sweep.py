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


def grouped(keys: list, by) -> list[list]:
    """`keys` grouped by `by(key)` (e.g. the layer: the cells trained together), groups in order of
    first appearance."""
    groups: dict = {}
    for key in keys:
        groups.setdefault(by(key), []).append(key)
    return list(groups.values())


def run_cells(todo: list, cell_path, finished, compute, progress) -> tuple[dict, int]:
    """Computes the cells of `todo` that no other run is computing, one at a time: `run_groups` with
    groups of one cell. `compute(key)` computes and writes one cell and returns its record."""
    return run_groups([[key] for key in todo], cell_path, finished, lambda keys: {keys[0]: compute(keys[0])}, progress)


def run_groups(groups: list[list], cell_path, finished, compute_group, progress) -> tuple[dict, int]:
    """Computes the cells of `groups` that no other run is computing, each group's together;
    returns ({key: record}, number computed here).

    `cell_path(key)` is a cell's JSON path, `finished(key)` its record if it is finished (else None),
    `compute_group(keys)` computes and writes those cells together and returns {key: record};
    `progress` wraps the list of groups (a progress bar). Every cell of a group is claimed before the
    group is computed; a cell another run holds is left to it at first, and at the end this run
    waits for each such cell and computes it (with the others of its group still unfinished) if that
    run stopped without finishing it."""
    records, deferred, computed = {}, [], 0

    def compute_unfinished(keys, wait: bool) -> list:
        """Claims `keys`, computes together those it holds that are still unfinished; returns the keys
        another run holds (none with `wait`)."""
        nonlocal computed
        with contextlib.ExitStack() as held:
            mine, others = [], []
            for key in keys:
                if not held.enter_context(claim(cell_path(key), wait=wait)):
                    others.append(key)
                    continue
                record = finished(key)  # another run may have finished it since the caller looked
                if record is None:
                    mine.append(key)
                else:
                    records[key] = record
            if mine:
                records.update(compute_group(mine))
                computed += len(mine)
        return others

    for group in progress(groups):
        deferred.append(compute_unfinished(group, wait=False))
    if any(deferred):
        print(f"waiting for {sum(map(len, deferred))} cell(s) another run on this results path is computing", flush=True)
    for keys in deferred:
        if keys:
            compute_unfinished(keys, wait=True)
    return records, computed
