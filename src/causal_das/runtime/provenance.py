"""Derived results follow their inputs, like a build system.

Every result file records two things besides its numbers:
- `settings`: the user's flags that determine it (sizes, learning rate, seed, ...). A file made with
  other flags is the user's own conflict: a multi-cell results directory refuses to mix them
  (`SettingsMismatch`), so that a sweep never silently holds cells of two different experiments.
- `inputs`: what it was derived from (the network's weights fingerprint, a trained W's sha256, a
  sweep cell's settings and inputs, a graph array's sha256, ...). When an input changed (another
  machine trained a slightly different network, a network was retrained, a cell was recomputed),
  the file is stale: it is recomputed, and the step says so in one line (`Tally`).

A file is reused only when it is whole, was made with the same settings, from the same inputs, and
every companion file it names (its saved W, its graph array) is present.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

# How a changed input reads in a step's one-line summary ("recomputing 36 graphs: the trained W changed").
INPUT_NAMES = {
    "model_fingerprint": "the network",
    "mlp_fingerprint": "the MLP",
    "weights_sha256": "the trained W",
    "sweep_cell": "their sweep cells",
    "graphs": "the IIA graphs",
    "division": "the division",
    "judgement_rule": "the judgement rule",
}


class SettingsMismatch(ValueError):
    """A results directory holds a result computed with other settings (the user's flags)."""


def model_fingerprint(model) -> str:
    """A hash of a network's weights: results computed on another network are never mixed in.

    Floating tensors narrower than fp32 (bf16, which numpy cannot hold, fp16, fp8) are hashed as
    their fp32 values, which represent them exactly: a checkpoint has one fingerprint whether it is
    loaded in fp32 or kept in bf16 (`models.checkpoint_dtype`), as a worker and its parent may do.
    Every other tensor is hashed as its bytes, as always: fp32 fingerprints are unchanged."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point() and tensor.element_size() < 4:
            tensor = tensor.float()
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def file_sha256(path: str | Path) -> str | None:
    """The sha256 of a file, None if it does not exist."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def digest(value) -> str:
    """A short hash of a JSON-able value (e.g. a record's settings and inputs)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _normalised(value):
    return json.loads(json.dumps(value, default=str))


class Tally:
    """Why a step's results were reused or recomputed, summarised in one line.

    `what` names the results ("cells", "graphs"); each checked record adds one reason: "reused",
    "new" (never computed), or why it is recomputed ("the network changed", "the saved W is missing")."""

    def __init__(self, what: str):
        self.what = what
        self.reasons: Counter[str] = Counter()

    def add(self, reason: str) -> None:
        self.reasons[reason] += 1

    def retract_reuse(self, reason: str) -> None:
        """A record counted as reusable turned out not to be (e.g. its array failed its checksum)."""
        self.reasons["reused"] -= 1
        self.add(reason)

    @property
    def reused(self) -> int:
        return self.reasons["reused"]

    @property
    def stale(self) -> int:
        return sum(n for reason, n in self.reasons.items() if reason not in ("reused", "new"))

    def line(self) -> str | None:
        """e.g. "recomputing 36 of 36 graphs: the network changed"; "reusing 12 cells computed
        earlier with these settings and inputs"; None when every result is new."""
        total = sum(self.reasons.values())
        if total == 1 and "." in self.what:  # a single result file, e.g. "cliques.json"
            if self.reused:
                return f"reusing {self.what}, computed earlier with these settings and inputs"
            if self.stale:
                return f"recomputing {self.what}: {next(r for r in self.reasons if self.reasons[r] and r not in ('reused', 'new'))}"
            return None
        parts = []
        if self.stale:
            why = "; ".join(f"{reason}" + (f" ({n})" if n != self.stale else "")
                            for reason, n in self.reasons.most_common() if reason not in ("reused", "new"))
            parts.append(f"recomputing {self.stale} of {total} {self.what}: {why}")
        if self.reused:
            parts.append(f"reusing {self.reused} of {total} {self.what} computed earlier with these settings and inputs")
        return "; ".join(parts) or None

    def print(self) -> None:
        line = self.line()
        if line:
            print(line, flush=True)


def changed_inputs(saved: dict | None, inputs: dict) -> list[str]:
    """The names of the inputs that differ between a record and now."""
    saved = saved or {}
    now = _normalised(inputs)
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


def describe_change(names: list[str]) -> str:
    words = [INPUT_NAMES.get(name, name) for name in names]
    return f"{' and '.join(words)} changed"


def load_current(path: Path, settings: dict, inputs: dict | None = None, required: tuple[str, ...] = (),
                 companions: tuple[Path, ...] = (), tally: Tally | None = None, mixing: str = "refuse") -> dict | None:
    """The finished, up-to-date record at `path`, or None if it must be (re)computed.

    `settings`: the flags it must have been made with; `inputs`: what it must have been derived from;
    `required`: keys it must have; `companions`: files it also wrote (e.g. its saved W), without which
    it counts as unfinished. `mixing`: with "refuse" (a directory of cells), other settings raise
    SettingsMismatch; with "recompute" (a single result the user asked for again with new flags), the
    record is recomputed. `tally` (if given) records the reason."""

    def stale(reason: str) -> None:
        if tally is not None:
            tally.add(reason)

    if not path.exists():
        stale("new")
        return None
    try:
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict) or payload.get("status") != "done" or any(key not in payload for key in required):
            raise ValueError("incomplete")
    except (ValueError, UnicodeDecodeError):
        stale("some files were corrupt or incomplete")
        return None
    if "inputs" not in payload:
        stale("they were written by an older version of this code")
        return None
    saved = payload.get("settings")
    if saved != _normalised(settings):
        if mixing == "recompute":
            stale("the flags changed")
            return None
        differing = sorted(k for k in set(saved or {}) | set(settings) if (saved or {}).get(k) != _normalised(settings).get(k))
        raise SettingsMismatch(
            f"{path} was computed with other settings (differing: {', '.join(differing)}); "
            "use another --results_path, or delete that directory to recompute it with these flags"
        )
    changed = changed_inputs(payload.get("inputs"), inputs or {})
    if changed:
        stale(describe_change(changed))
        return None
    if any(not p.is_file() for p in companions):
        stale("their saved files are missing")
        return None
    stale("reused")
    return payload


def trained_earlier(output_dir: Path, settings: dict, load, retrain: bool = False, record_name: str = "training.json") -> dict | None:
    """The training record of a network already trained in `output_dir` with these `settings`, or
    None if it must be trained (missing, incomplete, or its weights are not the ones recorded).

    `load()` loads the saved network (raising ValueError when it cannot); its fingerprint must equal
    the record's `model_fingerprint`. A network trained with other flags is the user's conflict:
    SettingsMismatch, unless `retrain` (then it is replaced)."""
    path = output_dir / record_name
    if retrain or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        complete = isinstance(record, dict) and record.get("status") == "done" and "settings" in record
    except (ValueError, UnicodeDecodeError):
        record, complete = None, False
    if not complete:
        print(f"retraining the network in {output_dir}: its {record_name} is incomplete or from an older version of this code", flush=True)
        return None
    if record["settings"] != _normalised(settings):
        differing = sorted(k for k in set(record["settings"]) | set(settings) if record["settings"].get(k) != _normalised(settings).get(k))
        raise SettingsMismatch(f"{output_dir} holds a network trained with other flags (differing: {', '.join(differing)}); "
                               "pass --retrain to replace it, or choose another --output_dir")
    try:
        fingerprint = model_fingerprint(load())
    except ValueError:
        fingerprint = None
    if fingerprint is None or fingerprint != record.get("model_fingerprint"):
        print(f"retraining the network in {output_dir}: its saved weights are missing or not the ones {record_name} records", flush=True)
        return None
    print(f"reusing the network in {output_dir}, trained earlier with these flags (--retrain to train it again)", flush=True)
    return record
