"""How much the disentangling moves when the whole measurement is redone with another seed: the
training pairs, the initial W and the batch order of every DAS cell, hence the sites, the graphs,
the cliques, the division and the classifier.

Subsampling the inputs (`stability.py`) asks whether a set depends on which other inputs are
there, on one set of graphs; this asks whether it depends on the training run that made the graphs.
Each run is a results directory of the same analysis made from a sweep with its own --seed. Per
division group (a layer, or "best sites") and causal model: the site each run chose, the set's size
per run and the Jaccard index of every pair of runs' sets (stable when their mean is at least
`stability.STABLE_JACCARD`); per group, the share of inputs given the same label by every run; the
inputs covered by each graph's cliques, compared the same way; and the classifier's held-out
accuracy and first rule per run.
"""

from __future__ import annotations

import itertools

import numpy as np

from causal_das.analysis.stability import STABLE_JACCARD, jaccard


def _pairwise(sets: list[set]) -> list[float]:
    return [jaccard(a, b) for a, b in itertools.combinations(sets, 2)]


def compare_runs(divisions: list[dict], cliques: list[dict | None], classifications: list[dict | None], labels: list[str]) -> dict:
    """`divisions[i]`, `cliques[i]`, `classifications[i]`: the records of run `labels[i]` (division.json,
    cliques.json, classification.json; the last two may be missing)."""
    if len(divisions) < 2:
        raise ValueError(f"comparing runs needs at least two results directories, got {len(divisions)}")
    groups = []
    rows_by_run = [{str(row["layer"]): row for row in record["layers"]} for record in divisions]
    for group in (g for g in rows_by_run[0] if all(g in rows for rows in rows_by_run[1:])):
        rows = [rows_by_run[i][group] for i in range(len(divisions))]
        models = {}
        # A model a run left out (no real alignment at any site: `graph_sites`) has no set there.
        for name in dict.fromkeys(name for row in rows for name in row["order"]):
            sets = [set(row["sets"].get(name, ())) for row in rows]
            indices = _pairwise(sets)
            models[name] = {
                "in_runs": [name in row["order"] for row in rows],
                "sites": [row.get("sites", {}).get(name) if name in row["order"] else "left out" for row in rows],
                "sizes": [len(s) for s in sets],
                "jaccard_pairs": indices,
                "jaccard_mean": float(np.mean(indices)),
                "jaccard_min": float(np.min(indices)),
                "stable": bool(np.mean(indices) >= STABLE_JACCARD),
            }
        assignments = np.array([row["assignment"] for row in rows], dtype=object)
        groups.append({
            "group": rows[0]["layer"],
            "rule": rows[0]["rule"],
            "faithfulness": rows[0]["faithfulness"],
            "models": models,
            "unexplained": [len(row["unexplained"]) for row in rows],
            "triples_with_one_label_in_every_run": float(np.mean((assignments == assignments[0]).all(axis=0))),
        })
    return {"runs": labels, "stable_jaccard": STABLE_JACCARD, "groups": groups,
            "cliques": _compare_cliques(cliques, next((len(r["layers"][0]["assignment"]) for r in divisions if r["layers"]), None)),
            "classification": _compare_classifiers(classifications, labels)}


def _compare_cliques(records: list[dict | None], n: int | None) -> list[dict]:
    """The inputs covered by each graph's cliques, run against run (`n`: how many inputs there are,
    from the divisions; None: no coverage)."""
    if any(record is None for record in records):
        return []
    covered = [{(g["causal_model"], str(g["layer"])): {v for c in g["cliques"] for v in c["nodes"]} for g in record["graphs"]} for record in records]
    out = []
    for key in (k for k in covered[0] if all(k in run for run in covered[1:])):
        indices = _pairwise([run[key] for run in covered])
        out.append({"causal_model": key[0], "group": key[1], "coverage": [len(run[key]) / n if n else None for run in covered],
                    "covered_jaccard_mean": float(np.mean(indices)), "covered_jaccard_min": float(np.min(indices)),
                    "stable": bool(np.mean(indices) >= STABLE_JACCARD)})
    return out


def _compare_classifiers(records: list[dict | None], labels: list[str]) -> dict | None:
    if any(record is None for record in records):
        return None
    accuracy = [record["heldout_accuracy"] for record in records]
    return {
        "heldout_accuracy": accuracy,
        "heldout_majority_rate": [record["heldout_majority_rate"] for record in records],
        "heldout_accuracy_std": float(np.std(accuracy)),
        "first_split": dict(zip(labels, (record.get("first_split") for record in records), strict=True)),
    }


def comparison_table(result: dict) -> str:
    lines = [f"runs {', '.join(result['runs'])}: division sets compared pairwise (Jaccard index; below {result['stable_jaccard']} on "
             "average: the set changes with the seed)"]
    for g in result["groups"]:
        lines.append(f"{g['group']} ({g['rule']} rule, faithfulness {g['faithfulness']}): "
                     f"{g['triples_with_one_label_in_every_run']:.3f} of the inputs get one label in every run; unexplained {g['unexplained']}")
        for name, m in g["models"].items():
            sites = ", ".join(str(s) for s in m["sites"]) if any(m["sites"]) else "-"
            lines.append(f"  {name:>10}  sizes {m['sizes']}  Jaccard {m['jaccard_mean']:.2f} (least {m['jaccard_min']:.2f})  "
                         f"{'stable' if m['stable'] else 'CHANGES WITH THE SEED'}  sites {sites}")
    for c in result["cliques"]:
        lines.append(f"cliques {c['causal_model']:>10} {c['group']:>10}: coverage {', '.join('-' if v is None else f'{v:.3f}' for v in c['coverage'])}, "
                     f"covered inputs Jaccard {c['covered_jaccard_mean']:.2f} (least {c['covered_jaccard_min']:.2f})")
    if result["classification"]:
        c = result["classification"]
        pairs = ", ".join(f"{a:.3f} (majority {b:.3f})" for a, b in zip(c["heldout_accuracy"], c["heldout_majority_rate"], strict=True))
        lines.append(f"classifier held-out accuracy per run: {pairs}; first rules {c['first_split']}")
    return "\n".join(lines)
