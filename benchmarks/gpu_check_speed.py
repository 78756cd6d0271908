"""The speed part of `gpu_check.py`: fast vs pyvene DAS training steps at the thesis's shape, and the
thesis sweep's wall time estimated from them.

A step is timed as `bench_das.py` times it (`bench_das.measure_layer`: build W, interchange, the
suffix forward, loss, backward, Adam; the median of several steps after a warm-up one), on a randomly
initialised `GPT2ForSequenceClassification` of the shape's depth and width, all six tokens
(n = 6 x width), k = the thesis's smallest k scaled to n (64 at the thesis shape).

The estimate of `run_das.py --preset thesis` reads the preset from `studies.arithmetic_cells` (pairs,
batch, epochs, the k values scaled to n, the test pairs, the random-init control) and adds, per layer:
every trained cell's steps x the measured fast step time at the preset's batch (scaled by k, measured
at the middle layer), every cell's evaluation (its test pairs through `engine.predict`, measured per
layer), and the block outputs of every prompt, computed once per network. Cells are counted as if
trained one at a time: the sweep's batching of a layer's cells into one pass can only make it faster.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import numpy as np
import torch
from bench_das import measure_layer, synchronize

from causal_das.das import engine
from causal_das.models import gpt2
from causal_das.studies import arithmetic_cells, arithmetic_decoder, arithmetic_network
from causal_das.tasks import arithmetic

# The thesis's network is GPT-2 small (12 blocks of width 768, 12 heads); `tiny` is for a CPU run of
# the check (the tests), where only the code path matters.
SHAPES = {"thesis": dict(n_layers=12, width=768, n_heads=12), "tiny": dict(n_layers=2, width=32, n_heads=2)}
TIMED_MODEL = "(X+Y)+Z"  # any causal model: the step time does not depend on the labels
SEED = 0


def thesis_preset() -> arithmetic_cells.SweepConfig:
    """The sweep `run_das.py --preset thesis` runs (its sizes as run_das.py sets them)."""
    return replace(arithmetic_cells.SweepConfig(), **arithmetic_cells.THESIS_PRESET, preset="thesis")


def _network(shape: str, device: torch.device):
    tokenizer = arithmetic_decoder.build_tokenizer()
    model = arithmetic_decoder.build_default_model(tokenizer, seed=SEED, **SHAPES[shape]).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, arithmetic_decoder.encode_prompts(tokenizer)


def _batches(input_ids, batch_size: int, steps: int):
    pairs = arithmetic.draw_pairs(np.random.default_rng(SEED), batch_size * steps)
    data = arithmetic_network.interchange_data(input_ids, pairs, arithmetic.get_model(TIMED_MODEL))
    return [torch.arange(i, i + batch_size) for i in range(0, len(pairs), batch_size)], data


def _predict_seconds(model, input_ids, states, layer: int, k: int, n_pairs: int) -> float:
    """Seconds to predict `n_pairs` test pairs with one W at `layer` (one cell's evaluation)."""
    site = arithmetic_decoder.site(model, layer)
    weight = engine.initial_intervention(site, engine.DASConfig((k,), seed=SEED)).weight().detach()
    trained = engine.TrainedIntervention(str(site.name), site.n, (k,), weight)
    pairs = arithmetic.draw_pairs(np.random.default_rng(SEED), n_pairs)
    data = arithmetic_network.interchange_data(input_ids, pairs, arithmetic.get_model(TIMED_MODEL))
    engine.predict(site, trained, data, activations=states[layer])  # warm-up
    synchronize()
    started = time.perf_counter()
    engine.predict(site, trained, data, activations=states[layer])
    synchronize()
    return time.perf_counter() - started


def measure(shape: str, device: torch.device, batch_sizes: list[int], layers: list[int] | None, fast_steps: int, pyvene_steps: int,
            progress) -> dict:
    """Step times per layer and batch size (fast, floor, pyvene), the k scaling of a fast step and the
    evaluation and cache times the estimate needs. `layers`: None for every block."""
    model, input_ids = _network(shape, device)
    n_layers = model.config.n_layer
    layers = list(range(n_layers)) if layers is None else layers
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"--timing_layers {bad} do not exist: the {shape} shape has blocks 0..{n_layers - 1}")
    synchronize()
    started = time.perf_counter()
    states = {layer: s.flatten(1) for layer, s in gpt2.block_outputs(model, input_ids, range(n_layers)).items()}
    synchronize()
    cache_seconds = time.perf_counter() - started
    n = arithmetic_decoder.SEQ_LEN * model.config.n_embd
    k = arithmetic_cells.scaled_k(arithmetic_cells.THESIS_K[:1], n)[0]
    preset = thesis_preset()
    report = {"shape": shape, **SHAPES[shape], "n": n, "k": k, "layers": layers, "cache_seconds": cache_seconds, "batches": {}}
    progress(f"speed: {shape} shape ({n_layers} blocks x {model.config.n_embd}), n = {n}, k = {k}; block outputs of 1000 prompts "
             f"in {cache_seconds:.2f} s")
    with torch.inference_mode(False):
        for batch_size in dict.fromkeys([*batch_sizes, preset.batch_size]):  # the preset's batch is what the estimate needs
            batches, data = _batches(input_ids, batch_size, fast_steps + 1)  # the first step is a warm-up
            if pyvene_steps:  # pyvene's one-time machinery, outside any measurement (as bench_das.py does)
                measure_layer(model, input_ids, states, layers[0], k, batches[:2], data, 1)
            rows = []
            for layer in layers:
                fast, floor, slow = measure_layer(model, input_ids, states, layer, k, batches, data, pyvene_steps)
                rows.append({"layer": layer, "fast": fast, "floor": floor, "pyvene": slow})
                progress(f"speed: batch {batch_size}, layer {layer}: fast {fast:.4f} s/step, floor {floor:.4f}"
                         + (f", pyvene {slow:.4f} ({slow / fast:.1f}x)" if slow else ""))
            report["batches"][str(batch_size)] = summarise(rows, n_layers)
        # A fast step at the preset's batch for each k the preset trains, at the middle layer.
        middle = layers[len(layers) // 2]
        batches, data = _batches(input_ids, preset.batch_size, fast_steps + 1)
        trained_ks = [one for one in arithmetic_cells.thesis_k(n) if one < n]  # k = n is a full swap, not trained
        seconds = {one: measure_layer(model, input_ids, states, middle, one, batches, data, 0)[0] for one in trained_ks}
        report["k_scaling"] = {"layer": middle, "seconds_per_step": {str(one): s for one, s in seconds.items()},
                               "relative_to_k": k, "relative": {str(one): s / seconds[k] for one, s in seconds.items()}}
        report["predict_seconds"] = {str(layer): _predict_seconds(model, input_ids, states, layer, k, preset.n_testing) for layer in layers}
    return report


def summarise(rows: list[dict], n_layers: int) -> dict:
    """Per-layer rows plus the sums over the measured layers and the speed-ups (summed and at the
    middle measured layer) where pyvene was timed."""
    summary = {"rows": rows, "fast_sum": sum(r["fast"] for r in rows)}
    if all(r["pyvene"] for r in rows):
        middle = rows[len(rows) // 2]
        summary.update(pyvene_sum=sum(r["pyvene"] for r in rows), speedup_summed=sum(r["pyvene"] for r in rows) / summary["fast_sum"],
                       speedup_middle_layer={"layer": middle["layer"], "speedup": middle["pyvene"] / middle["fast"]})
    return summary


def estimate_thesis_sweep(speed: dict) -> dict:
    """Seconds `run_das.py --preset thesis` would take on the measured device, per causal-model family
    and for both, from `measure`'s times (module docstring). Layers not measured take the mean
    of the measured ones."""
    preset = thesis_preset()
    n = speed["n"]
    batch = speed["batches"][str(preset.batch_size)]
    step = {r["layer"]: r["fast"] for r in batch["rows"]}
    pyvene_step = {r["layer"]: r["pyvene"] for r in batch["rows"] if r["pyvene"]}
    predict = {int(layer): s for layer, s in speed["predict_seconds"].items()}
    layers = range(speed["n_layers"])

    def per_layer(times: dict, layer: int) -> float:
        return times.get(layer, statistics.mean(times.values()))

    ks = arithmetic_cells.thesis_k(n)
    trained = [one for one in ks if one < n]
    networks = 2 if preset.control == "random_init" else 1  # the random-init control repeats every cell
    steps = {one: engine.n_steps(preset.n_training, preset.das_config(one)) for one in trained}
    relative = {int(one): r for one, r in speed["k_scaling"]["relative"].items()}
    train_per_model = networks * sum(per_layer(step, layer) * relative[one] * steps[one] for layer in layers for one in trained)
    evaluate_per_model = networks * len(ks) * sum(per_layer(predict, layer) for layer in layers)
    families = {}
    for family in sorted(arithmetic.FAMILIES):
        models = len(arithmetic.get_family(family))
        seconds = models * (train_per_model + evaluate_per_model) + networks * speed["cache_seconds"]
        families[family] = {"causal_models": models, "cells": models * len(ks) * speed["n_layers"], "trained_cells": models * len(trained) * speed["n_layers"],
                            "seconds": seconds}
    estimate = {
        "preset": {**arithmetic_cells.THESIS_PRESET, "k": list(ks), "n_testing": preset.n_testing, "control": preset.control,
                   "steps_per_cell": {str(one): s for one, s in steps.items()}},
        "families": families,
        "seconds_both_families": sum(f["seconds"] for f in families.values()),
        "layers_measured": speed["layers"],
        "assumes": "cells trained one at a time (the sweep batches a layer's cells: faster); unmeasured layers at the measured mean",
    }
    if pyvene_step:
        # pyvene's step time barely depends on k (its cost is the whole network and its Householder W).
        per_model = networks * len(trained) * sum(per_layer(pyvene_step, layer) * steps[trained[0]] for layer in layers)
        estimate["pyvene_training_seconds_both_families"] = sum(f["causal_models"] for f in families.values()) * per_model
    return estimate
