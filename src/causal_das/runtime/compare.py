"""This run's results beside the committed reference: per headline number, both values and the
difference.

The reference (`results/reference/`, written by the main job on the machine named in its files) is
never read by a run: another CPU rounds differently, trains a slightly different network, and every
number downstream moves in its last digits. This module only reads both trees' result JSON and
reports how far apart they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from causal_das.runtime.io import run_metadata

MLP_RUNS = ("hierarchical_equality", "pattern_matching")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def numbers(root: str | Path) -> dict[str, tuple[str, float]]:
    """{name: (group, value)} of every comparable number under a results root; absent files are
    skipped. Names are stable across runs, so two roots can be matched name by name."""
    root = Path(root)
    out: dict[str, tuple[str, float]] = {}

    def put(group: str, name: str, value) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = (group, float(value))

    for run in MLP_RUNS:
        record = _read(root / run / "results.json")
        if record:
            put(run, f"{run}: MLP held-out accuracy", record["mlp"]["heldout_accuracy"])
            for layer, cell in record["layers"].items():
                put(run, f"{run}: IIA layer {layer}", cell["iia"])
                put(run, f"{run}: random-init control IIA layer {layer}", (cell.get("control_random_init") or {}).get("iia"))
    record = _read(root / "wrong_causal_graph_ablation" / "results.json")
    if record:
        for i, trained in enumerate(record["models"]):
            for j, tested in enumerate(record["models"]):
                put("wrong_causal_graph_ablation", f"ablation: DAS trained on {trained}, tested on {tested}", record["iia"][i][j])
    record = _read(root / "gpt2" / "model" / "training.json")
    if record:
        put("gpt2_model", "GPT-2: held-out accuracy", record["heldout_accuracy"])
        put("gpt2_model", "GPT-2: training accuracy", record["train_accuracy"])
    for family in ("arithmetic", "simple"):
        record = _read(root / "gpt2" / f"das_{family}" / "summary.json")
        for cell in (record or {}).get("cells", []):
            where = f"{cell['causal_model']} L{cell['layer']} k{cell['k']}"
            put(f"gpt2_das_{family}", f"sweep {family}: IIA {where}", cell["iia_own_model"])
            put(f"gpt2_das_{family}", f"sweep {family}: control IIA {where}", cell.get("control_iia_own_model"))
    for cell in (_read(root / "gpt2" / "positions" / "summary.json") or {}).get("cells", []):
        where = f"{cell['causal_model']} L{cell['layer']} {cell['position_set']}"
        put("gpt2_positions", f"positions: IIA {where}", cell["iia_own_model"])
        put("gpt2_positions", f"positions: best baseline {where}", cell["best_baseline"]["iia"])
    for suffix, where in (("", ""), ("_best_sites", " at best sites")):
        analysis = root / "gpt2" / f"disentangling{suffix}"
        for row in (_read(analysis / "graphs.json") or {}).get("graphs", []):
            put(f"graphs{suffix}", f"graph mean IIA{where} {row['causal_model']} {row.get('site') or 'L' + str(row['layer'])}", row["mean_iia"])
        for row in (_read(analysis / "division.json") or {}).get("layers", []):
            group = f"L{row['layer']}" if isinstance(row["layer"], int) else row["layer"]
            for name, size in row.get("sizes", {}).items():
                put(f"divide{suffix}", f"division{where} set size {name} {group}", size)
        record = _read(analysis / "classification.json")
        if record and "stopped" not in record:
            put(f"classify{suffix}", f"classifier held-out accuracy{where}", record["heldout_accuracy"])
    record = _read(root / "cnn" / "model" / "training.json")
    if record:
        put("cnn_model", "CNN: held-out accuracy", record["heldout_accuracy"])
    for cell in (_read(root / "cnn" / "das" / "summary.json") or {}).get("cells", []):
        put("cnn_das", f"CNN DAS IIA {cell['cell']}", cell["iia"])
    return out


# Printed rows (every number goes to the JSON): a name is printed when it starts with one of these.
HEADLINES = (
    "hierarchical_equality: IIA", "pattern_matching: IIA", "hierarchical_equality: MLP", "pattern_matching: MLP",
    "GPT-2: held-out", "graph mean IIA", "classifier held-out", "CNN: held-out", "CNN DAS IIA single_circularity+colour",
    "CNN DAS IIA multi_",
)


def compare(reference: str | Path, run: str | Path) -> dict:
    """Every number of both roots, side by side, with per-group statistics of the differences."""
    ref, now = numbers(reference), numbers(run)
    rows, groups = [], {}
    for name in list(dict.fromkeys([*ref, *now])):
        group = (ref.get(name) or now.get(name))[0]
        r, n = (ref[name][1] if name in ref else None), (now[name][1] if name in now else None)
        diff = None if r is None or n is None else n - r
        rows.append({"name": name, "group": group, "reference": r, "this_run": n, "difference": diff})
        g = groups.setdefault(group, {"n": 0, "identical": 0, "max_abs_difference": 0.0, "missing_here": 0, "not_in_reference": 0})
        if r is None:
            g["not_in_reference"] += 1
        elif n is None:
            g["missing_here"] += 1
        else:
            g["n"] += 1
            g["identical"] += diff == 0
            g["max_abs_difference"] = max(g["max_abs_difference"], abs(diff))
    return {"experiment": "compare_with_reference", "reference": str(reference), "this_run": str(run), **run_metadata(),
            "reference_compute": _compute_of(Path(reference)), "groups": groups, "numbers": rows}


def _compute_of(root: Path) -> dict | None:
    record = _read(root / "gpt2" / "model" / "training.json") or {}
    return record.get("compute")


def table(record: dict) -> str:
    """Headline rows, then one line per group: how many numbers, how many identical, the largest
    difference."""
    lines = [f"this run ({record['this_run']}) beside the reference ({record['reference']})",
             f"{'number':<62} {'reference':>10} {'this run':>10} {'difference':>11}"]

    def fmt(v, sign=False):
        return "-" if v is None else format(v, "+.4f" if sign else ".4f")

    for row in record["numbers"]:
        if row["name"].startswith(HEADLINES):
            lines.append(f"{row['name'][:62]:<62} {fmt(row['reference']):>10} {fmt(row['this_run']):>10} {fmt(row['difference'], True):>11}")
    lines.append(f"\n{'group':<30} {'numbers':>8} {'identical':>10} {'max |difference|':>17} {'missing here':>13}")
    for group, g in record["groups"].items():
        lines.append(f"{group:<30} {g['n']:>8} {g['identical']:>10} {g['max_abs_difference']:>17.4f} {g['missing_here']:>13}")
    return "\n".join(lines)


# What legitimately differs between two runs of the same flags: when, how long, where, with what, and
# how many cells shared a training pass.
VOLATILE_FIELDS = ("command", "versions", "git_commit", "compute", "reference_compute", "cells_in_pass")


def _volatile(key: str) -> bool:
    return key in VOLATILE_FIELDS or key == "seconds" or key.endswith("_seconds")


def field_differences(reference: str | Path, run: str | Path, limit: int = 50) -> dict:
    """Every field of every result JSON of the reference beside the run's, apart from timing,
    command, commit, versions and compute: how many files and fields were compared, which files are
    missing here, and the first `limit` differing fields (file, path inside it, both values)."""
    reference, run = Path(reference), Path(run)
    compared = {"files": 0, "fields": 0, "missing_files": [], "n_differences": 0, "differences": []}

    def walk(where: str, path: str, ref, now) -> None:
        if isinstance(ref, dict) and isinstance(now, dict):
            for key in dict.fromkeys([*ref, *now]):
                if not _volatile(key):
                    walk(where, f"{path}.{key}" if path else key, ref.get(key, "<absent>"), now.get(key, "<absent>"))
        elif isinstance(ref, list) and isinstance(now, list) and len(ref) == len(now):
            for i, (r, n) in enumerate(zip(ref, now, strict=True)):
                walk(where, f"{path}[{i}]", r, n)
        else:
            compared["fields"] += 1
            if ref != now:
                compared["n_differences"] += 1
                if len(compared["differences"]) < limit:
                    compared["differences"].append({"file": where, "field": path, "reference": ref, "this_run": now})

    for path in sorted(reference.rglob("*.json")):
        relative = path.relative_to(reference)
        if not _is_reference_file(relative):
            continue
        mine = _read(run / relative)
        if mine is None:
            compared["missing_files"].append(str(relative))
            continue
        compared["files"] += 1
        walk(str(relative), "", _read(path), mine)
    return compared


def field_table(compared: dict) -> str:
    lines = [f"every field: {compared['files']} result files, {compared['fields']} fields compared (timing, command, commit, "
             f"versions and compute left out): {compared['n_differences']} differ, {len(compared['missing_files'])} files missing here"]
    lines += [f"  {d['file']}: {d['field']}: reference {d['reference']!r}, this run {d['this_run']!r}" for d in compared["differences"][:20]]
    lines += [f"  missing: {name}" for name in compared["missing_files"][:20]]
    return "\n".join(lines)


def _is_reference_file(relative: Path) -> bool:
    """What the reference keeps of a run: its JSON and figures, not weights, caches, locks or the
    steps' logs."""
    parts = relative.parts
    return not (parts[0] in ("reference", "comparison.json", "logs") or "evaluations" in parts or any(p.startswith(".") for p in parts)
                or relative.suffix == ".safetensors" or (relative.name.startswith("weights") and "interventions" in parts))


def update_reference(run: str | Path, reference: str | Path) -> int:
    """Replaces the reference with this run's result files (JSON, figures, graph arrays); returns how
    many files it copied. Built beside the reference and swapped in, so a failure keeps the old one."""
    import shutil
    import tempfile

    run, reference = Path(run), Path(reference)
    reference.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{reference.name}.", dir=reference.parent))
    copied = 0
    try:
        for path in sorted(run.rglob("*")):
            relative = path.relative_to(run)
            if path.is_file() and _is_reference_file(relative):
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, staging / relative)
                copied += 1
        if reference.exists():
            old = reference.with_name(f".{reference.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            reference.rename(old)
            staging.rename(reference)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(reference)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return copied
