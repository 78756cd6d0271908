"""Resumable sweeps: a sweep is a set of independent cells, each finished cell one JSON file.

A cell file is written atomically and only after everything else the cell saves (its intervention),
so its presence means the cell is done. A rerun skips cells whose file is whole and was computed
with the same settings, recomputes (and says so) cells whose file is corrupt or incomplete, and
refuses to mix cells computed with different settings in one results directory.
"""

from __future__ import annotations

import json
import logging
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
