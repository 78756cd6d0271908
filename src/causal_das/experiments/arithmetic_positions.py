"""Where each variable lives (`run_das.py --position_sets`): DAS over layers x token positions of the
X+Y+Z decoder classifier, every cell beside its baselines at the same site and k, and the illusion check.

A cell is (causal model, layer, position set): W (k columns) at `block_output` of the layer over the
set's tokens (0..5 = X + Y + Z =). All cells of a (layer, position set) train together in one suffix
pass per step, the neuron masks likewise, then every alignment of the group (DAS, its projection onto
the activation span, the baselines of `das.baselines`) is evaluated on the same test pairs in the
same passes. The random-init control trains the same DAS on an untrained copy of the network.

Causal attention is a built-in negative control: the intermediate variable of a model can exist at a
token only if every input it depends on comes at or before that token (X+Y from position 2 on, X+Z
and Y+Z from 4 on). Cells where it cannot are marked `variable_can_exist: false`; DAS must fail there.

One JSON per cell under <results_path>/cells/ (resumable, like the thesis sweep), W under
interventions/, and summary.json with every cell's DAS IIA, best same-k baseline and margin.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from causal_das.das import baselines, engine
from causal_das.models.answer_head import head_kind
from causal_das.runtime import devices
from causal_das.runtime.io import atomic_write_json, check_results_path, run_metadata
from causal_das.runtime.provenance import Tally, load_current, model_fingerprint
from causal_das.runtime.settings import settings_of
from causal_das.runtime.sweep import grouped, run_groups, split_finished
from causal_das.studies import arithmetic_decoder, position_verdicts
from causal_das.studies.arithmetic_cells import parse_position_set, position_cell_name, split_pairs
from causal_das.studies.arithmetic_network import (
    Network,
    correct_per_pair,
    interchange_data,
    label_correct,
    rates,
)
from causal_das.studies.arithmetic_network import baselines as label_rates_of
from causal_das.tasks import arithmetic

DEFAULT_POSITION_SETS = ("all", "0", "1", "2", "3", "4", "5")
INPUT_POSITION = {"X": 0, "Y": 2, "Z": 4}  # the token of each number in "X + Y + Z ="


@dataclass(frozen=True)
class PositionSweepConfig:
    model_path: str = "results/gpt2/model"
    causal_model_type: str = "arithmetic"
    causal_models: tuple[str, ...] | None = None  # None: every model of `causal_model_type`'s family
    layers: tuple[int, ...] | None = None  # None: every block
    position_sets: tuple[str, ...] = DEFAULT_POSITION_SETS
    k: int | None = None  # None: the thesis's 256 of GPT-2 small's 768 per token, scaled to the width (16 of 48)
    n_training: int = 4_000
    n_testing: int = 2_000  # the report split: every number the sweep reports
    n_selection: int | None = None  # the selection split, where best sites are chosen; None: as many as n_testing
    batch_size: int = 64
    epochs: int = 2
    lr: float = 0.01
    random_draws: int = 3
    control: str = "random_init"
    seed: int = 0
    results_path: str = "results/gpt2/positions_arithmetic"
    device: str = "auto"
    precision: str = "auto"
    max_cells_per_pass: int | None = None

    def das_config(self, k: int) -> engine.DASConfig:
        return engine.DASConfig((k,), self.epochs, self.batch_size, self.lr, self.seed)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(training, selection, report) pair ids: disjoint; the training pairs are the thesis sweep's."""
        return split_pairs(self.seed, self.n_training, self.selection_size(), self.n_testing)

    def selection_size(self) -> int:
        return self.n_testing if self.n_selection is None else self.n_selection

    def models(self) -> tuple:
        if self.causal_models is None:
            return arithmetic.get_family(self.causal_model_type)
        return tuple(arithmetic.get_model(name) for name in dict.fromkeys(self.causal_models))


def earliest_position(causal_model) -> int:
    """The first token at which the model's intermediate variable can be computed under causal attention."""
    return max(INPUT_POSITION[parent] for parent in causal_model.mechanisms["P"].parents)


def can_exist(causal_model, positions: tuple[int, ...]) -> bool:
    return max(positions) >= earliest_position(causal_model)


def default_k(width: int) -> int:
    return max(1, round(256 * width / 768))


def validate(config: PositionSweepConfig, model) -> tuple[tuple[int, ...], int]:
    """(layers, k) after checking the config against the model; ValueError otherwise."""
    arithmetic.get_family(config.causal_model_type)
    config.models()  # unknown names fail here
    for text in config.position_sets:
        parse_position_set(text)
    if config.control not in ("random_init", "none"):
        raise ValueError(f"unknown control {config.control!r}; choose random_init or none")
    n_layers, width = model.config.num_hidden_layers, model.config.hidden_size
    layers = tuple(range(n_layers)) if config.layers is None else tuple(config.layers)
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"--layers {bad} do not exist: the model at {config.model_path} has blocks 0..{n_layers - 1}")
    k = config.k or default_k(width)
    if not 1 <= k < width:
        raise ValueError(f"--low_rank_dims {k} must be in 1..{width - 1} (below one token's width, {width}): a position "
                         "sweep compares k-dimensional alignments inside each position set")
    if config.n_training + config.selection_size() + config.n_testing > arithmetic.N_PAIRS:
        raise ValueError(f"--n_training + --n_selection + --n_testing must not exceed the {arithmetic.N_PAIRS} distinct ordered pairs")
    if config.random_draws < 1:
        raise ValueError("--random_draws must be at least 1")
    return layers, k


@dataclass
class Alignments:
    """Everything one (layer, position set) puts at its site, in the order it is scored: DAS per
    causal model, DAS projected onto the activation span, the neuron masks, then the alignments the
    models share (the full patch, PCA, the random draws)."""

    das: list
    projected: list
    masks: list
    shared: list

    def all(self) -> list:
        return [*self.das, *self.projected, *self.masks, *self.shared]

    def split(self, scores: list) -> tuple[list, list, list, list]:
        n = len(self.das)
        return scores[:n], scores[n:2 * n], scores[2 * n:3 * n], scores[3 * n:]


def train_alignments(site, states, activations, span, datas: list, models: list, k: int, config: PositionSweepConfig, label: str) -> Alignments:
    """DAS for each causal model's data (one pass per step), its neuron masks, the projections and the
    shared baselines of one site."""
    das = engine.train_cells(site, [engine.Cell(d, config.das_config(k), f"{m.name} {label}") for m, d in zip(models, datas, strict=True)],
                             states, config.max_cells_per_pass)
    with engine.frozen(site.model):
        masks = baselines.train_neuron_masks(site, datas, [config.das_config(k)] * len(datas), (k,), states,
                                             functools.partial(engine.suffix_logits, site),
                                             descs=[f"neuron mask {m.name} {label}" for m in models])
    projected = [baselines.project_onto_span(site, one, span) for one in das]
    shared = [baselines.full_patch(site), baselines.principal_subspace(site, activations, k),
              *baselines.random_subspaces(site, (k,), config.random_draws, config.seed)]
    return Alignments(das, projected, masks, shared)


def control_correct(control, layer: int, positions, models: list, k: int, config: PositionSweepConfig, label: str) -> list:
    """The same DAS on the random-init copy, right or wrong per test pair against every model of the
    family (None per cell without a control)."""
    if control is None:
        return [None] * len(models)
    train_ids, selection_ids, report_ids = config.pairs()
    site = control.site(layer, positions)
    states = control.site_states(site)
    cells = [engine.Cell(interchange_data(control.input_ids, train_ids, m), config.das_config(k), f"control {m.name} {label}") for m in models]
    trained = engine.train_cells(site, cells, states, config.max_cells_per_pass)
    return correct_per_pair(control, site, trained, np.concatenate([selection_ids, report_ids]), config.models(), "fast", states)


def same_site_rates(name: str, shared: list, shared_scores: list, mask, mask_score: dict, control_score: dict | None) -> dict:
    """The IIA of every other alignment of the cell's site and k against the cell's causal model."""
    draws = [score[name] for score in shared_scores[2:]]
    rates = {
        "full_patch": shared_scores[0][name],
        "pca": shared_scores[1][name],
        "pca_variance_explained": shared[1].history["variance_explained"],
        "random_subspace": {"mean": float(np.mean(draws)), "std": float(np.std(draws)), "draws": draws},
        "neuron_mask": mask_score[name],
        "neuron_mask_neurons": mask.history["neurons"],
    }
    if control_score is not None:
        rates["control_random_init"] = control_score[name]
    return rates


def run_group(network, control, keys: list, k: int, config: PositionSweepConfig, out_dir: Path, settings_for: dict, inputs: dict) -> dict:
    """Trains, evaluates and writes the cells `keys` = [(causal model, layer, position set)] of one
    (layer, position set); returns {key: record}. `network` (and `control`, or None) is a
    `Network` or anything with its attributes and `site(layer, positions)` (a test's
    planted network)."""
    started = time.perf_counter()
    _, layer, position_set = keys[0]
    positions, label = parse_position_set(position_set), f"L{layer} {position_set}"
    train_ids, selection_ids, test_ids = config.pairs()
    site = network.site(layer, positions)
    states = network.site_states(site)
    activations = baselines.site_activations(site, states)
    span = baselines.activation_span(activations)
    models = [arithmetic.get_model(name) for name, _, _ in keys]
    datas = [interchange_data(network.input_ids, train_ids, m) for m in models]
    alignments = train_alignments(site, states, activations, span, datas, models, k, config, label)
    # Both evaluation splits in the same passes, then kept apart: the selection split chooses, the
    # report split (test_ids) reports.
    both = correct_per_pair(network, site, alignments.all(), np.concatenate([selection_ids, test_ids]), config.models(), "fast", states)
    controls_both = control_correct(control, layer, positions, models, k, config, label)
    split = len(selection_ids)
    selection, correct = _part(both, slice(None, split)), _part(both, slice(split, None))
    controls = [None if one is None else _part([one], slice(split, None))[0] for one in controls_both]
    das_scores, projected_scores, mask_scores, shared_scores = alignments.split(rates(correct))
    das_correct, _, mask_correct, shared_correct = alignments.split(correct)
    chosen_das, chosen_projected, _, chosen_shared = alignments.split(selection)
    seconds = (time.perf_counter() - started) / len(keys)
    records = {}
    for c, (key, model) in enumerate(zip(keys, models, strict=True)):
        name, das = model.name, alignments.das[c]
        own = das_scores[c][name]
        label_rates = label_rates_of(network, model, test_ids)
        control_rates = None if controls[c] is None else rates([controls[c]])[0]
        same_site = same_site_rates(name, alignments.shared, shared_scores, alignments.masks[c], mask_scores[c], control_rates)
        others = {**label_correct(network, model, test_ids), "pca": shared_correct[1][name], "neuron_mask": mask_correct[c][name],
                  "random_subspace": [draw[name] for draw in shared_correct[2:]],
                  **({} if controls[c] is None else {"control_random_init": controls[c][name]})}
        illusion = baselines.illusion_check(das, activations, span)
        illusion.update(projected_iia=projected_scores[c][name], projected_columns=alignments.projected[c].history["columns_kept"])
        illusion["flagged"] = baselines.illusion_flag(own, illusion["projected_iia"], label_rates["network_no_intervention"])
        das.save(out_dir / "interventions" / position_cell_name(name, layer, position_set))
        record = {
            "causal_model": name, "layer": layer, "position_set": position_set, "positions": list(positions),
            "site": str(site.name), "n": site.n, "k": k,
            "variable_can_exist": can_exist(model, positions), "earliest_position": earliest_position(model),
            "iia": das_scores[c], "iia_own_model": own, "iia_interval": position_verdicts.iia_interval(das_correct[c][name]),
            "baselines": {**label_rates, **same_site},
            **position_verdicts.same_k_margin(own, same_site),
            "paired": position_verdicts.paired_verdicts(das_correct[c][name], others, config.seed),
            "illusion": illusion,
            "selection": position_verdicts.selection_record(
                chosen_das[c][name], chosen_projected[c][name], label_correct(network, model, selection_ids),
                [draw[name] for draw in chosen_shared[2:]], None if controls_both[c] is None else controls_both[c][name][:split], config.seed),
            "n_training_pairs": len(train_ids), "n_selection_pairs": len(selection_ids), "n_test_pairs": len(test_ids),
            "train_history": das.history, "neuron_mask_history": alignments.masks[c].history["training"],
        }
        record.update(settings=settings_for[key], inputs=inputs, status="done", seconds=seconds, **run_metadata())
        atomic_write_json(out_dir / "cells" / f"{position_cell_name(name, layer, position_set)}.json", record)
        records[key] = record
    return records


def _part(correct: list[dict], part: slice) -> list[dict]:
    return [{name: right[part] for name, right in one.items()} for one in correct]


def cell_settings(config: PositionSweepConfig, key: tuple, k: int) -> dict:
    """What determines one cell's numbers: not the sweep's axes (which cells exist), not where it runs."""
    settings = settings_of(config, "layers", "position_sets", "causal_model_type", "causal_models")
    name, layer, position_set = key
    return {**settings, "k": k, "causal_model": name, "layer": layer, "positions": list(parse_position_set(position_set))}


class _Cells:
    """Where a sweep's cells live and whether each is finished and current."""

    def __init__(self, config: PositionSweepConfig, k: int, fingerprint: str):
        self.out_dir, self.k = Path(config.results_path), k
        # The judgement rule is an input: cells judged by an older rule are recomputed, saying so.
        self.config, self.inputs = config, {"model_fingerprint": fingerprint, "judgement_rule": position_verdicts.RULE}

    def path(self, key) -> Path:
        return self.out_dir / "cells" / f"{position_cell_name(*key)}.json"

    def finished(self, key, tally=None):
        weights = self.out_dir / "interventions" / position_cell_name(*key) / "weights.safetensors"
        return load_current(self.path(key), cell_settings(self.config, key, self.k), self.inputs, companions=(weights,), tally=tally)

    def settings_for(self, keys) -> dict:
        return {key: cell_settings(self.config, key, self.k) for key in keys}


def _networks(model, tokenizer, config: PositionSweepConfig, layers):
    input_ids = arithmetic_decoder.encode_prompts(tokenizer)
    network = Network.load(model, input_ids, layers)
    control = None
    if config.control == "random_init":
        control = Network.load(arithmetic_decoder.random_init_copy(model, config.seed), input_ids, layers)
    return network, control


def layer_task(config: PositionSweepConfig, cwd: str, keys: tuple) -> dict:
    """The cells of one layer (every position set) as a worker process or Ray task, the network loaded
    once: the cells no other run holds or finished, each (layer, position set) together."""
    os.chdir(cwd)
    device = devices.setup(config.device, config.precision)
    model, tokenizer = arithmetic_decoder.load_classifier(config.model_path, device)
    _, k = validate(config, model)
    cells = _Cells(config, k, model_fingerprint(model))
    networks = []

    def compute(group):
        if not networks:
            networks.extend(_networks(model, tokenizer, config, [keys[0][1]]))
        with engine.frozen(model):
            return run_group(*networks, group, k, config, cells.out_dir, cells.settings_for(group), cells.inputs)

    records, _ = run_groups(grouped(list(keys), lambda key: key[2]), cells.path, cells.finished, compute, lambda groups: groups)
    return records


def run_position_sweep(config: PositionSweepConfig, executor: str = "local", ray_address: str | None = None, ray_cpus: int | None = None,
                       workers: int | None = None) -> dict:
    """Every unfinished cell of the position sweep; writes cells/, interventions/ and summary.json."""
    device = devices.setup(config.device, config.precision) if executor == "local" else None
    model, tokenizer = arithmetic_decoder.load_classifier(config.model_path)
    layers, k = validate(config, model)
    out_dir = check_results_path(config.results_path)
    started = time.perf_counter()
    family = config.models()
    cells = _Cells(config, k, model_fingerprint(model))
    # Early layers first: their suffix is longest, so no worker is left alone with one at the end.
    keys = [(m.name, layer, s) for layer in layers for s in config.position_sets for m in family]
    done, todo = split_finished(keys, cells.finished, Tally("cells"))
    groups = grouped(todo, lambda key: key[1:])
    desc = "position sweep" if config.causal_models else f"position sweep ({config.causal_model_type})"
    if todo and executor in ("ray", "processes"):
        from causal_das.runtime.executors import map_tasks

        task = functools.partial(layer_task, config, os.getcwd())
        for records in map_tasks(executor, task, [tuple(g) for g in grouped(todo, lambda key: key[1])], address=ray_address, cpus=ray_cpus, workers=workers,
                                 device=config.device, desc=desc).values():
            done.update(records)
    elif todo:
        model.to(device)
        print(f"computing on {devices.describe()}", flush=True)
        network, control = _networks(model, tokenizer, config, sorted({key[1] for key in todo}))

        def compute(group):
            return run_group(network, control, group, k, config, out_dir, cells.settings_for(group), cells.inputs)

        with engine.frozen(model):
            records, _ = run_groups(groups, cells.path, cells.finished, compute, lambda gs: tqdm(gs, desc=desc, unit="site"))
        done.update(records)
    summary = {
        "experiment": "position_sweep",
        "config": settings_of(config),
        **run_metadata(),
        "model_fingerprint": cells.inputs["model_fingerprint"],
        "head": head_kind(model),
        "k": k, "layers": list(layers), "position_sets": list(config.position_sets),
        "causal_models": [m.name for m in family],
        "seconds": None,
    }
    verdicts, summary["claims"] = position_verdicts.judge_cells([done[key] for key in keys])
    summary["cells"] = [_summary_row(done[key], verdict) for key, verdict in zip(keys, verdicts, strict=True)]
    summary["seconds"] = time.perf_counter() - started
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _summary_row(cell: dict, verdict: dict) -> dict:
    row = {key: cell[key] for key in ("causal_model", "layer", "position_set", "positions", "variable_can_exist", "iia_own_model",
                                      "iia_interval", "best_baseline", "das_minus_best_baseline")}
    row["das_minus_best_baseline_interval"] = cell["paired"]["same_k"]["interval"]
    same_site = cell["baselines"]
    row["baselines"] = {name: (value["mean"] if isinstance(value, dict) else value) for name, value in same_site.items()
                        if not name.endswith(("_neurons", "_explained"))}
    row["illusion_flagged"] = cell["illusion"]["flagged"]
    row["projected_iia"] = cell["illusion"]["projected_iia"]
    row.update(verdict)
    return row


def summary_table(summary: dict) -> str:
    """Per causal model: DAS IIA per layer x position set, the margin over the best same-k baseline in
    brackets; '*' marks a real alignment, '+' one that also beats every same-k baseline (both paired
    and adjusted over the sweep), '-' a set where the variable cannot exist, '!' an illusion flag."""
    claims = summary["claims"]
    lines = [f"claims adjusted over the sweep's {claims['n_claims']} cells ({claims['method']}, level {claims['level']}): "
             f"{claims['alignment_real']} real, {claims['das_beats_baselines']} beating every same-k baseline"]
    cells = {(c["causal_model"], c["layer"], c["position_set"]): c for c in summary["cells"]}
    sets = summary["position_sets"]
    for name in summary["causal_models"]:
        lines.append(f"\n{name}: DAS IIA (k = {summary['k']}) per layer x position set, [margin over the best same-k baseline]; "
                     "* real (beats every chance baseline), + also every same-k baseline, - the variable cannot exist there, ! illusion flag")
        lines.append("layer " + "".join(f"{s:>16}" for s in sets))
        for layer in summary["layers"]:
            entries = []
            for s in sets:
                cell = cells[(name, layer, s)]
                mark = (("*" if cell["alignment_real"] else "") + ("+" if cell["alignment_real"] and cell["das_beats_baselines"] else "")
                        + ("!" if cell["illusion_flagged"] else "") + ("" if cell["variable_can_exist"] else "-"))
                entries.append(f"{cell['iia_own_model']:.2f}[{cell['das_minus_best_baseline']:+.2f}]{mark}")
            lines.append(f"{layer:>5} " + "".join(f"{e:>16}" for e in entries))
    return "\n".join(lines)
