"""Which sweep cells the graphs step builds IIA graphs for, and where each one's files are.

A graph is built from one trained cell: of a thesis sweep (`run_das.py`, every cell at the sweep's
token positions, selected by causal model and layer) or of a position sweep (`run_das.py
--position_sets`, selected by causal model and site). The analyses after the graphs (cliques,
division, classification) group graphs by a label, `group`, and divide the triples among the
causal models of one group:

- a thesis sweep's graphs: the layer (the three arithmetic models at layer 1, ...);
- `--site LAYER:POSITIONS` on a position sweep: that site, the same for every model ("L2:3");
- `--site best` on a position sweep: each causal model at its own best site ("best sites"): among
  the cells where its intermediate variable can exist and its alignment is real (DAS beats every
  chance baseline in paired tests adjusted over the sweep, no illusion flag: `position_verdicts`), the
  one with the widest margin over the chance baselines (ties: the lower layer, then the sweep's
  order of position sets). All of it is read on the sweep's *selection* pairs, never on the report
  pairs whose numbers are shown (the winner's curse). A model with no real alignment anywhere is
  left out, so that an illusion cannot take triples in the division; if no model has one, there
  are no best-site graphs and the disentangling at best sites stops, saying so.

Why not the margin over PCA and the neuron mask: on a network trained to hold (X+Y)+Z at layer 2,
position 3 (`train_gpt2.py --induce`), that position carries little else, so its top 16 principal
directions align the variable as well as DAS does (0.60 against 0.59) and DAS's margin there is
zero; the widest margin over them was the all-token site, where the full patch and PCA fail by
construction and DAS's 0.70 is an illusion (0.17 once confined to the activations' span). PCA or
the neuron mask equal to DAS says the variable is there in a simple basis, not that it is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from causal_das.studies.arithmetic_cells import cell_name, parse_position_set, position_cell_name

BEST = "best"
NOTHING_REAL = ("no causal model has a real alignment at any site of the position sweep (on its selection pairs), so there is "
                "no best site to disentangle at: the best-site disentangling stops here")
BEST_GROUP = "best sites"


@dataclass(frozen=True)
class GraphKey:
    causal_model: str
    layer: int
    position_set: str | None  # None: a thesis sweep's cell, at its sweep's token positions
    group: int | str | None  # what the analyses group graphs by (see the module docstring)

    @property
    def cell(self) -> GraphKey:
        """The key without its group: what is built (one graph can belong to two groups)."""
        return GraphKey(self.causal_model, self.layer, self.position_set, None)

    def cell_name(self, k: int) -> str:
        """The sweep cell's name (its JSON under cells/, its W under interventions/)."""
        if self.position_set is None:
            return cell_name(self.causal_model, self.layer, k)
        return position_cell_name(self.causal_model, self.layer, self.position_set)

    def graph_name(self, k: int) -> str:
        """The graph's files under graphs/ (.json and .npz)."""
        if self.position_set is None:
            return self.cell_name(k)
        return f"{self.cell_name(k)}_k{k}"

    @property
    def site_label(self) -> str:
        return f"L{self.layer}" if self.position_set is None else f"L{self.layer}:{self.position_set}"


def is_position_sweep(summary: dict) -> bool:
    return summary.get("experiment") == "position_sweep"


def parse_site(text: str) -> tuple[int, str]:
    """'2:3' -> (2, '3'), '1:all' -> (1, 'all'), '0:4-5' -> (0, '4-5'); ValueError otherwise."""
    layer, _, positions = text.partition(":")
    try:
        number = int(layer.removeprefix("L"))
        parse_position_set(positions)
    except ValueError:
        raise ValueError(f"--site {text!r} is not LAYER:POSITIONS (e.g. 2:3, 1:all, 0:4-5) or {BEST}") from None
    return number, positions


def select(summary: dict, sweep: Path, causal_models, layers, k, sites) -> tuple[list[GraphKey], int, dict]:
    """(graph keys, k, {key: why it was selected}) for a sweep's summary; ValueError when the flags do
    not fit the sweep."""
    if not summary.get("cells"):
        raise ValueError(f"{sweep / 'summary.json'} lists no DAS cells; run run_das.py with --results_path {sweep} first")
    if is_position_sweep(summary):
        return _select_sites(summary, sweep, causal_models, layers, k, sites)
    if sites:
        raise ValueError(f"--site needs a position sweep (run_das.py --position_sets); {sweep} is a sweep over layers: use --layers")
    keys, k = _select_layers(summary, sweep, causal_models, layers, k)
    return keys, k, {}


def _select_layers(summary: dict, sweep: Path, causal_models, layers, k) -> tuple[list[GraphKey], int]:
    cells = {(c["causal_model"], c["layer"], c["k"]) for c in summary["cells"]}
    ks = sorted({k for _, _, k in cells})
    k = k if k is not None else next((v for v in ks if v < summary["n"]), ks[0])
    if k not in ks:
        raise ValueError(f"--low_rank_dim {k} is not in the sweep {sweep} (it has k = {ks})")
    models = list(causal_models) if causal_models is not None else list(summary["causal_models"])
    layers = list(layers) if layers is not None else list(summary["layers"])
    missing = [(m, layer) for m in models for layer in layers if (m, layer, k) not in cells]
    if missing:
        m, layer = missing[0]
        raise ValueError(f"the sweep {sweep} has no cell for {m} at layer {layer} with k={k} ({len(missing)} such); "
                         f"it has causal models {summary['causal_models']} and layers {summary['layers']}")
    return [GraphKey(m, layer, None, layer) for m in models for layer in layers], k


def _select_sites(summary: dict, sweep: Path, causal_models, layers, k, sites) -> tuple[list[GraphKey], int, dict]:
    if layers is not None:
        raise ValueError(f"{sweep} is a position sweep: choose its graphs with --site LAYER:POSITIONS or --site {BEST}, not --layers")
    if k is not None and k != summary["k"]:
        raise ValueError(f"--low_rank_dim {k} is not the position sweep's k ({summary['k']}) in {sweep}")
    cells = {(c["causal_model"], c["layer"], c["position_set"]): c for c in summary["cells"]}
    models = list(causal_models) if causal_models is not None else list(summary["causal_models"])
    unknown = [m for m in models if m not in summary["causal_models"]]
    if unknown:
        raise ValueError(f"the position sweep {sweep} has no cells for {unknown[0]}; it has {summary['causal_models']}")
    keys, why = [], {}
    for site in sites or (BEST,):
        if site == BEST:
            best = {m: _best_site(m, summary, cells) for m in models}
            real = [m for m in models if best[m][1]["selection"]["alignment_real"]]
            left_out = [m for m in models if m not in real]
            if not real:
                print(f"note: no causal model has a real alignment at any site of {sweep} (on the selection pairs): no best-site "
                      "graphs; the disentangling at best sites stops here")
            elif left_out:
                print(f"note: left out of the best-site graphs, no real alignment at any site: {left_out}")
            for m in real:
                key, cell = best[m]
                keys.append(key)
                why[key] = {"rule": "on the selection pairs: the widest margin over the chance baselines where the variable can exist "
                                    "and the alignment is real", **cell["selection"],
                            "report": {name: cell[name] for name in ("iia_own_model", "iia_interval", "das_minus_chance", "chance_baseline",
                                                                     "das_minus_chance_interval", "alignment_real", "p_chance_adjusted",
                                                                     "das_minus_best_baseline", "best_baseline", "das_beats_baselines",
                                                                     "illusion_flagged")}}
            continue
        layer, position_set = parse_site(site)
        missing = [m for m in models if (m, layer, position_set) not in cells]
        if missing:
            raise ValueError(f"the position sweep {sweep} has no cell for {missing[0]} at --site {site}; it has layers "
                             f"{summary['layers']} and position sets {summary['position_sets']}")
        keys += [GraphKey(m, layer, position_set, f"L{layer}:{position_set}") for m in models]
    return keys, summary["k"], why


def _best_site(model: str, summary: dict, cells: dict) -> tuple[GraphKey, dict]:
    order = {s: i for i, s in enumerate(summary["position_sets"])}
    candidates = [c for (m, _, _), c in cells.items() if m == model and c["variable_can_exist"]]
    if not candidates:
        raise ValueError(f"no cell of the position sweep lets {model}'s intermediate variable exist; add later token positions")
    if "selection" not in candidates[0]:
        raise ValueError("this position sweep's summary.json predates the selection split and the paired judgement; rerun "
                         "run_das.py on it (it recomputes its cells under the new rule) to rewrite the summary")
    # The selection pairs alone decide: the report pairs' numbers are reported, never chosen by.
    chosen = min(candidates, key=lambda c: (not c["selection"]["alignment_real"], -c["selection"]["das_minus_chance"], c["layer"],
                                            order[c["position_set"]]))
    return GraphKey(model, chosen["layer"], chosen["position_set"], BEST_GROUP), chosen


def model_path(summary: dict) -> str:
    return summary["config"]["model_path"]


def positions(summary: dict, key: GraphKey) -> tuple[int, ...]:
    if key.position_set is None:
        return tuple(summary["config"]["positions"])
    return parse_position_set(key.position_set)
