"""The default GPT-2 sweep and IIA graphs: one cell at a time (before and after the plain-attention
lever) vs the cells of a layer batched vs batched in one-thread worker processes, side by side in
one run on this machine; and a sweep at token positions 4-5 with the suffix on every position vs
on the changing ones only (the untouched tokens' keys and values cached).

The sweep is `run_das.py`'s default (every causal model of the chosen families, every layer, the
default k and the random-init control), run through `arithmetic_sweep.run_sweep` into a temporary
directory per mode; the graphs are the main job's (k = 16, three layers), built from the batched
sweep's W. Every mode must give the same W and IIA (the script checks and prints the largest
difference). It prints seconds, trained cell-steps per second and the ratio to one at a time, and
where the batched sweep's time goes. torch.compile of the suffix is not a mode: measured on
layer 0 (3 cells per pass) it made a step 1.4x faster but took 39 s to compile per suffix, more
than a layer's whole group of cells takes.

    python benchmarks/bench_sweep.py                                  # the whole default sweep (about 20 min)
    python benchmarks/bench_sweep.py --layers 0 6 11 --families arithmetic   # a quick look
"""

import argparse
import functools
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from causal_das.analysis import graphs as G
from causal_das.das import engine
from causal_das.experiments import arithmetic_sweep
from causal_das.models import gpt2
from causal_das.runtime import progress
from causal_das.runtime.executors import process_map
from causal_das.runtime.io import read_json
from causal_das.studies import arithmetic_cells, arithmetic_decoder, arithmetic_network
from causal_das.tasks import arithmetic as A

# Each mode adds one lever to the one before. "before" is the path before batching: one cell per pass
# and attention through PyTorch's fused CPU kernel (`gpt2.PLAIN_ATTENTION_MAX_TOKENS = 0`).
SWEEP_MODES = {
    "before": {"max_cells_per_pass": 1, "fused_attention": True},
    "one at a time": {"max_cells_per_pass": 1},
    "batched": {},
    "batched, processes": {"executor": "processes"},
}


def run_mode(config: arithmetic_cells.SweepConfig, mode: dict, workers: int) -> float:
    executor = mode.get("executor", "local")
    config = replace(config, max_cells_per_pass=mode.get("max_cells_per_pass"))
    plain_attention = gpt2.PLAIN_ATTENTION_MAX_TOKENS
    if mode.get("fused_attention"):
        gpt2.PLAIN_ATTENTION_MAX_TOKENS = 0
    try:
        started = time.perf_counter()
        arithmetic_sweep.run_sweep(config, executor, workers=workers if executor == "processes" else None)
        return time.perf_counter() - started
    finally:
        gpt2.PLAIN_ATTENTION_MAX_TOKENS = plain_attention


def weights(results_path: Path) -> dict[str, torch.Tensor]:
    return {str(p.parent.relative_to(results_path)): engine.TrainedIntervention.load(p.parent).weight
            for p in sorted((results_path / "interventions").rglob("weights.safetensors"))}


def iia(results_path: Path) -> dict:
    summary = read_json(results_path / "summary.json")
    return {(c["causal_model"], c["layer"], c["k"]): (c["iia"], c.get("control_iia_own_model")) for c in summary["cells"]}


def graphs_one_layer(model_path: str, sweep: str, names: tuple, k: int, batched: bool, layer: int) -> list:
    """The graphs of one layer's cells, batched or one after another (a worker process's task too)."""
    model, tokenizer = arithmetic_decoder.load_classifier(model_path)
    network = arithmetic_network.Network.load(model, arithmetic_decoder.encode_prompts(tokenizer), [layer])
    site = arithmetic_decoder.site(model, layer)
    trained = [engine.TrainedIntervention.load(Path(sweep) / "interventions" / arithmetic_cells.cell_name(n, layer, k)) for n in names]
    models = [A.get_model(n) for n in names]
    with engine.frozen(model):
        if batched:
            return G.correct_matrices(network, site, trained, models, A.counterfactual_labels)
        return [G.correct_matrix(network, site, one, m, A.counterfactual_labels) for one, m in zip(trained, models, strict=True)]


def untouched_keys_lever(model_path: str, family: str, layers, positions: tuple, tmp: Path) -> None:
    """A sweep at `positions` (which leave the first tokens alone) with the suffix on every position
    vs on the positions that can change (the untouched tokens' keys cached: `models.gpt2_untouched`)."""
    from causal_das.models import gpt2_untouched

    base = arithmetic_cells.SweepConfig(model_path=model_path, causal_model_type=family, layers=tuple(layers) if layers else None, positions=positions)
    seconds, results = {}, {}
    for name, reuse in (("every position", False), ("cached keys", True)):
        config = replace(base, results_path=str(tmp / f"positions_{'reuse' if reuse else 'full'}" / family))
        gpt2_untouched.REUSE_UNTOUCHED_KEYS = reuse
        try:
            started = time.perf_counter()
            arithmetic_sweep.run_sweep(config, "local")
            seconds[name] = time.perf_counter() - started
        finally:
            gpt2_untouched.REUSE_UNTOUCHED_KEYS = True
        results[name] = (weights(Path(config.results_path)), iia(Path(config.results_path)))
    (w_full, iia_full), (w_reuse, iia_reuse) = results.values()
    worst = max((w_full[key] - w_reuse[key]).abs().max().item() for key in w_full)
    print(f"\npositions {list(positions)} ({family}, layers {layers or 'all'}): suffix on every position vs only the changing ones "
          f"(max |W difference| = {worst:.1e}; IIA identical: {iia_full == iia_reuse})")
    for name, value in seconds.items():
        print(f"{name:<22} {value:>9.1f} s {seconds['every position'] / value:>16.2f}x")


def profile_group(model_path: str, family: str, layer: int) -> None:
    """Where one layer's batched group spends its time, and the share of the suffix in a step."""
    config = arithmetic_cells.SweepConfig(model_path=model_path, causal_model_type=family)
    model, tokenizer = arithmetic_decoder.load_classifier(model_path)
    ids = arithmetic_decoder.encode_prompts(tokenizer)
    times = {}
    started = time.perf_counter()
    network = arithmetic_network.Network.load(model, ids, [layer])
    control = arithmetic_network.Network.load(arithmetic_decoder.random_init_copy(model, config.seed), ids, [layer])
    times["block outputs of both networks"] = time.perf_counter() - started
    train_ids, test_ids = arithmetic_cells.sweep_pairs(config)
    keys = [(m.name, layer, 16) for m in A.get_family(family)]
    site = arithmetic_decoder.site(model, layer)
    with engine.frozen(model):
        started = time.perf_counter()
        trained = arithmetic_sweep.train_group(network, keys, train_ids, config)
        times["training, network"] = time.perf_counter() - started
        started = time.perf_counter()
        arithmetic_sweep.train_group(control, keys, train_ids, config)
        times["training, control"] = time.perf_counter() - started
        started = time.perf_counter()
        arithmetic_network.evaluate_cells(network, site, trained, test_ids, A.get_family(family), "fast")
        times["evaluation (x2 with the control)"] = time.perf_counter() - started
        batch = torch.cat([network.states[layer][:64]] * len(keys)).requires_grad_(True)
        started = time.perf_counter()
        for _ in range(50):
            engine.suffix_logits(site, batch).logsumexp(-1).sum().backward()
        suffix_step = (time.perf_counter() - started) / 50
    steps = config.epochs * math.ceil(config.n_training / config.batch_size)
    print(f"\nprofile of one batched group: {family}, layer {layer}, {len(keys)} cells of k=16 (+ their controls)")
    for name, value in times.items():
        print(f"  {name:<36} {value:7.2f} s")
    print(f"  a bare suffix forward + backward of {len(keys)} x 64 rows: {suffix_step * 1e3:.2f} ms; x {steps} steps = "
          f"{suffix_step * steps:.2f} s of the {times['training, network']:.2f} s of training")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default="results/gpt2/model", help="the trained default GPT-2 (python train_gpt2.py)")
    parser.add_argument("--families", nargs="+", default=["arithmetic", "simple"], choices=sorted(A.FAMILIES), help="causal model families")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="sweep layers (default: every block)")
    parser.add_argument("--graph_layers", type=int, nargs="+", default=[1, 6, 11], help="layers of the arithmetic graphs (the main job's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes of the processes mode")
    parser.add_argument("--skip_graphs", action="store_true", help="time the sweep only")
    parser.add_argument("--positions", type=int, nargs="+", default=[4, 5],
                        help="token positions of the cached-keys lever's sweep (arithmetic family; must start after token 0)")
    parser.add_argument("--skip_positions", action="store_true", help="skip the cached-keys lever")
    parser.add_argument("--skip_sweep", action="store_true", help="only the cached-keys lever (no sweep modes, no graphs)")
    args = parser.parse_args()
    if not Path(args.model_path, "config.json").is_file():
        parser.error(f"no trained GPT-2 at {args.model_path}; run python train_gpt2.py (or pass --model_path)")
    os.environ[progress.INNER_BARS] = "0"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    if args.skip_sweep:
        untouched_keys_lever(args.model_path, "arithmetic", args.layers, tuple(args.positions), tmp)
        return
    seconds = dict.fromkeys(SWEEP_MODES, 0.0)
    trained_cells, steps_per_cell = 0, 0
    for family in args.families:
        base = arithmetic_cells.SweepConfig(model_path=args.model_path, causal_model_type=family, layers=tuple(args.layers) if args.layers else None)
        model, _ = arithmetic_decoder.load_classifier(args.model_path)
        layers, ks, n = arithmetic_sweep.validate(base, model)
        trained_cells += 2 * len(A.get_family(family)) * len(layers) * sum(k < n for k in ks)  # x2: the control
        steps_per_cell = base.epochs * math.ceil(base.n_training / base.batch_size)
        results = {}
        for name, mode in SWEEP_MODES.items():
            config = replace(base, results_path=str(tmp / name.replace(", ", "_").replace(" ", "_") / family))
            seconds[name] += run_mode(config, mode, args.workers)
            results[name] = (weights(Path(config.results_path)), iia(Path(config.results_path)))
            print(f"  {family:<10} {name:<20} {seconds[name]:8.1f} s so far", flush=True)
        reference_w, reference_iia = results["before"]
        for name, (w, scores) in results.items():
            worst = max((w[key] - reference_w[key]).abs().max().item() for key in reference_w)
            print(f"  {family:<10} {name:<20} max |W - before| = {worst:.1e}; IIA identical: {scores == reference_iia}")
    one = seconds["before"]
    print(f"\nsweep: {trained_cells} trained cells (controls included) x {steps_per_cell} steps, families {args.families}, "
          f"layers {args.layers or 'all'}")
    print(f"{'mode':<22} {'seconds':>9} {'cell-steps/s':>13} {'vs before':>10}")
    for name, value in seconds.items():
        print(f"{name:<22} {value:>9.1f} {trained_cells * steps_per_cell / value:>13.1f} {one / value:>9.2f}x")
    profile_group(args.model_path, args.families[-1], (args.layers or [0])[0])
    if not args.skip_positions:
        untouched_keys_lever(args.model_path, "arithmetic", args.layers, tuple(args.positions), tmp)
    if args.skip_graphs:
        return
    sweep = tmp / "batched" / "arithmetic"
    if not sweep.is_dir():
        return
    names = tuple(m.name for m in A.get_family("arithmetic"))
    k = min(k for k in read_json(sweep / "summary.json")["low_rank_dims"])
    graph_seconds, matrices = {}, {}
    for name, batched in (("one at a time", False), ("batched", True)):
        started = time.perf_counter()
        matrices[name] = [graphs_one_layer(args.model_path, str(sweep), names, k, batched, layer) for layer in args.graph_layers]
        graph_seconds[name] = time.perf_counter() - started
    started = time.perf_counter()
    task = functools.partial(graphs_one_layer, args.model_path, str(sweep), names, k, True)
    by_layer = process_map(task, args.graph_layers, args.workers, desc="graphs")
    matrices["batched, processes"] = [by_layer[layer] for layer in args.graph_layers]
    graph_seconds["batched, processes"] = time.perf_counter() - started
    same = all((a == b).all() for name in matrices for la, lb in zip(matrices[name], matrices["one at a time"], strict=True)
               for a, b in zip(la, lb, strict=True))
    print(f"\ngraphs: {len(names) * len(args.graph_layers)} graphs of 999,000 pairs (layers {args.graph_layers}, k={k}); "
          f"identical matrices in every mode: {same}")
    for name, value in graph_seconds.items():
        print(f"{name:<22} {value:>9.1f} s {graph_seconds['one at a time'] / value:>16.2f}x")


if __name__ == "__main__":
    main()
