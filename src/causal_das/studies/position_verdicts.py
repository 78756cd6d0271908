"""The position sweep's verdicts: is a cell's alignment real, and does DAS beat its same-k baselines.

Every alignment of a cell's site is scored on the same test pairs, so each verdict is paired: DAS
against each alignment it must beat, an exact McNemar test per comparison, and the claim's p-value
the largest of theirs (`das.statistics.beats_all`). Two claims per cell:

- **real** (`alignment_real`): DAS beats every *chance* baseline (the pairs' most common
  counterfactual label, the unintervened network on the base and on the source, each random
  subspace of the same k, the same DAS on the random-init network), and the illusion check does not
  flag it;
- **beats its baselines** (`das_beats_baselines`): DAS beats every same-k alignment of the site (each
  random subspace, PCA, the neuron mask, the random-init control).

A sweep makes both claims for every cell at once, so each is adjusted over the sweep's cells (Holm:
the chance of any false "real" in the sweep stays at or below `LEVEL`), raw and adjusted p-values
recorded side by side. The margins by rate (`das_minus_chance`, `das_minus_best_baseline`) stay: they
rank sites, the tests decide them.

Why PCA and the neuron mask are not chance baselines: they are other alignments of the same site,
and where one equals DAS the variable is still there.
"""

from __future__ import annotations

import numpy as np

from causal_das.das.baselines import illusion_flag
from causal_das.das.evaluation import wilson_interval
from causal_das.das.statistics import adjust, beats_all

LEVEL = 0.05
ADJUSTMENT = "holm"
CHANCE_BASELINES = ("majority", "network_no_intervention", "network_on_source", "random_subspace", "control_random_init")
SAME_K_BASELINES = ("random_subspace", "pca", "neuron_mask", "control_random_init")
# Recorded among each cell's inputs: cells judged by an older rule are recomputed, not reused.
RULE = "paired: exact McNemar against each baseline (the majority label among the chance ones), largest p; Holm over the sweep's cells"


def _draws(correct: dict) -> dict:
    """One entry per random draw: DAS must beat each, not only their mean."""
    return {f"random_subspace[{i}]": draw for i, draw in enumerate(correct["random_subspace"])}


def _control(correct: dict) -> dict:
    return {"control_random_init": correct["control_random_init"]} if "control_random_init" in correct else {}


def _chance(correct: dict) -> dict:
    return {name: correct[name] for name in ("majority", "network_no_intervention", "network_on_source")} | _draws(correct) | _control(correct)


def _beats_all(own: np.ndarray, others: dict, seed: int) -> dict:
    return beats_all(own.astype(float), {name: values.astype(float) for name, values in others.items()}, seed=seed)


def paired_verdicts(own: np.ndarray, correct: dict, seed: int) -> dict:
    """The cell's raw paired claims on the report pairs. `correct`: per-pair 0/1 of every other
    alignment of the site ({"random_subspace": [draws], "pca", "neuron_mask", "majority",
    "network_no_intervention", "network_on_source", optionally "control_random_init"})."""
    same_k = _draws(correct) | {"pca": correct["pca"], "neuron_mask": correct["neuron_mask"]} | _control(correct)
    return {"chance": _beats_all(own, _chance(correct), seed), "same_k": _beats_all(own, same_k, seed)}


def selection_record(own: np.ndarray, projected: np.ndarray, labels: dict, draws: list, control, seed: int) -> dict:
    """What the best sites are chosen by, from the selection pairs alone (per-pair 0/1 there): DAS
    (`own`, and `projected` onto the activations' span), the unintervened network (`labels`:
    `arithmetic_network.label_correct`), the random draws and the control (or None)."""
    chance = {**labels, "random_subspace": draws, **({} if control is None else {"control_random_init": control})}
    flagged = illusion_flag(float(own.mean()), float(projected.mean()), float(labels["network_no_intervention"].mean()))
    return selection_claims(own, chance, flagged, seed)


def selection_claims(own: np.ndarray, chance: dict, flagged: bool, seed: int) -> dict:
    """The chance claim on the selection pairs, what the best sites are chosen by (`chance`: the
    chance baselines' per-pair 0/1 there, as in `paired_verdicts`; `flagged`: the illusion check on
    those pairs)."""
    rates = {name: float(np.mean(values)) for name, values in chance.items() if name != "random_subspace"}
    rates["random_subspace"] = float(np.mean(chance["random_subspace"]))
    best = max(rates, key=rates.get)
    return {"n_pairs": len(own), "iia_own_model": float(np.mean(own)), "iia_interval": iia_interval(own),
            "chance_baseline": {"name": best, "iia": rates[best]}, "das_minus_chance": float(np.mean(own)) - rates[best],
            "illusion_flagged": bool(flagged), "paired_chance": _beats_all(own, _chance(chance), seed)}


def iia_interval(own: np.ndarray) -> list[float]:
    """The Wilson 95% interval of DAS's IIA on the cell's test pairs."""
    return list(wilson_interval(int(np.sum(own)), len(own)))


def _rate(value) -> float:
    return value["mean"] if isinstance(value, dict) else value


def best_of(cell: dict, names: tuple[str, ...]) -> tuple[str, float]:
    rates = {name: _rate(cell["baselines"][name]) for name in names if name in cell["baselines"]}
    best = max(rates, key=rates.get)
    return best, rates[best]


def same_k_margin(own: float, baselines: dict) -> dict:
    """DAS against its best same-k alignment by rate: the name, the rate and the margin (which the
    heatmaps show; the paired test decides)."""
    best, rate = best_of({"baselines": baselines}, SAME_K_BASELINES)
    return {"best_baseline": {"name": best, "iia": rate}, "das_minus_best_baseline": own - rate}


def chance_margin(cell: dict) -> dict:
    """The cell's best chance baseline by rate and DAS's margin over it (what ranks the best sites)."""
    best, rate = best_of(cell, CHANCE_BASELINES)
    return {"chance_baseline": {"name": best, "iia": rate}, "das_minus_chance": cell["iia_own_model"] - rate}


def judge_cells(cells: list[dict], level: float = LEVEL, method: str = ADJUSTMENT) -> tuple[list[dict], dict]:
    """The verdicts of a sweep's cells (records of `run_group`), each claim adjusted over all of them:
    ([per cell: margins, raw and adjusted p-values, alignment_real, das_beats_baselines], the claims'
    record for the summary)."""
    chance = adjust([c["paired"]["chance"]["p_value"] for c in cells], method, level)
    same_k = adjust([c["paired"]["same_k"]["p_value"] for c in cells], method, level)
    chosen = adjust([c["selection"]["paired_chance"]["p_value"] for c in cells], method, level)
    verdicts = []
    for i, cell in enumerate(cells):
        paired = cell["paired"]
        verdicts.append({
            **chance_margin(cell),
            "das_minus_chance_interval": paired["chance"]["interval"], "chance_decisive": paired["chance"]["decisive"],
            "p_chance": paired["chance"]["p_value"], "p_chance_adjusted": chance["adjusted"][i],
            "alignment_real": bool(chance["passes"][i] and not cell["illusion"]["flagged"]),
            "p_same_k": paired["same_k"]["p_value"], "p_same_k_adjusted": same_k["adjusted"][i],
            "das_beats_baselines": bool(same_k["passes"][i]),
            "selection": selection_verdict(cell["selection"], chosen["adjusted"][i], chosen["passes"][i]),
        })
    claims = {"level": level, "method": method, "controls": chance["controls"], "n_claims": len(cells), "family": "every cell of the sweep",
              "rule": RULE, "alignment_real": sum(v["alignment_real"] for v in verdicts),
              "das_beats_baselines": sum(v["das_beats_baselines"] for v in verdicts),
              "alignment_real_on_selection": sum(v["selection"]["alignment_real"] for v in verdicts)}
    return verdicts, claims


def selection_verdict(selection: dict, adjusted: float, passes: bool) -> dict:
    """A cell's summary on the selection pairs: what `graph_sites` ranks and filters by, and nothing else."""
    return {key: selection[key] for key in ("n_pairs", "iia_own_model", "chance_baseline", "das_minus_chance", "illusion_flagged")} | {
        "p_chance": selection["paired_chance"]["p_value"], "p_chance_adjusted": adjusted,
        "alignment_real": bool(passes and not selection["illusion_flagged"])}
