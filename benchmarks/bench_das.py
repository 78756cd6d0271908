"""DAS training steps on GPT-2, fast engine vs pyvene, measured side by side in one run.

1. The thesis setting: a GPT-2-small-shaped classifier (12 blocks, width 768, random weights), all
   six tokens (n = 4608), k = 64, batch 128; one step per engine at every layer. Target: the fast
   engine >= 25x faster at layer 6 and summed over the 12 layers.
2. The floor: a fast step over a bare suffix forward + backward of the same batch with no
   intervention. Target: <= 1.15x at layer 6.
3. The default model (results/gpt2/model): step times, and IIA after training one cell to convergence
   with both engines on the same data, batches and initial W. Target: within 1 point.

With --batch_size 1280 (the thesis preset's batch) it also prints the training cells per hour each
engine would reach at `--preset thesis` (800 steps per cell: 256,000 pairs x 4 epochs / 1280),
from the measured step time; evaluation and the random-init control are not included.

    python benchmarks/bench_das.py                       # everything (about 15 minutes on 2 cores)
    python benchmarks/bench_das.py --layers 6 --skip_default_model
    python benchmarks/bench_das.py --device cuda --batch_size 1280 --pyvene_steps 5 --skip_default_model   # on a GPU
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from causal_das.das import engine
from causal_das.das import pyvene_engine as pe
from causal_das.models import gpt2
from causal_das.runtime import devices
from causal_das.studies import arithmetic_cells, arithmetic_decoder, arithmetic_network
from causal_das.tasks import arithmetic as A

THESIS_STEPS_PER_CELL = 800  # 256,000 pairs x 4 epochs / batch 1280


def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_timer(parameters, logits_for, labels, batches):
    """Times full training steps (forward, loss, backward, Adam) exactly as `engine.optimise` runs them."""
    optimizer = torch.optim.Adam(parameters, lr=0.01)
    seconds = []
    for idx in batches:
        synchronize()
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(logits_for(idx), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure_layer(model, input_ids, states, layer, k, batches, data, pyvene_steps):
    """(fast step s, floor step s, pyvene step s or None) at one layer, on the same batches."""
    site = arithmetic_decoder.site(model, layer)
    device = model.device
    states, data, input_ids = states[layer].to(device), data.to(device), input_ids.to(device)
    batches = [idx.to(device) for idx in batches]
    config = engine.DASConfig((k,), seed=0)
    intervention = engine.initial_intervention(site, config).to(device)

    def fast_logits(idx):
        weight = intervention.weight()
        return engine.suffix_logits(site, engine.interchange(site, intervention, states[data.base[idx]], states[data.sources[idx]], weight))

    fast = statistics.median(step_timer(intervention.parameters(), fast_logits, data.labels, batches)[1:])

    # The floor: the same suffix forward + backward with nothing to intervene (gradient to the input).
    def floor_step(idx):
        hidden = states[data.base[idx]].clone().requires_grad_(True)
        synchronize()
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(engine.suffix_logits(site, hidden), data.labels[idx])
        loss.backward()
        synchronize()
        return time.perf_counter() - start

    floor = statistics.median([floor_step(idx) for idx in batches][1:])
    slow = None
    if pyvene_steps:
        intervenable, spec = pe.build_intervenable(site, site.n, (k,), intervention.weight().detach())
        params = list({id(p): p for p in intervenable.get_trainable_parameters()}.values())

        def pyvene_logits(idx):
            return pe.intervened_logits(intervenable, spec, (k,), input_ids[data.base[idx]], input_ids[data.sources[idx]])

        slow = statistics.median(step_timer(params, pyvene_logits, data.labels, batches[:pyvene_steps]))
    return fast, floor, slow


def thesis_setting(args, report):
    tokenizer = arithmetic_decoder.build_tokenizer()
    model = arithmetic_decoder.build_default_model(tokenizer, width=768, n_layers=12, n_heads=12, seed=0).to(args.device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    input_ids = arithmetic_decoder.encode_prompts(tokenizer)
    start = time.perf_counter()
    states = {layer: s.flatten(1) for layer, s in gpt2.block_outputs(model, input_ids, args.layers).items()}
    cache_seconds = time.perf_counter() - start
    rng = np.random.default_rng(0)
    pairs = A.draw_pairs(rng, args.batch_size * (args.fast_steps + 1))
    data = arithmetic_network.interchange_data(input_ids, pairs, A.get_model("(X+Y)+Z"))
    batches = [torch.arange(i, i + args.batch_size) for i in range(0, len(pairs), args.batch_size)]
    if not args.skip_pyvene:  # warm pyvene's one-time machinery up, outside any measurement
        measure_layer(model, input_ids, states, args.layers[0], args.k, batches[:2], data, 1)
    print(f"\n1-2. GPT-2-small shape (12 blocks, width 768, random weights), n = 4608, k = {args.k}, batch {args.batch_size}")
    print(f"     block outputs of all 1000 prompts at {len(args.layers)} layers cached once: {cache_seconds:.1f} s")
    print(f"{'layer':>5} {'fast s/step':>12} {'floor s/step':>13} {'fast/floor':>11} {'pyvene s/step':>14} {'speed-up':>9}")
    rows = []
    for layer in args.layers:
        fast, floor, slow = measure_layer(model, input_ids, states, layer, args.k, batches, data, 0 if args.skip_pyvene else args.pyvene_steps)
        rows.append({"layer": layer, "fast": fast, "floor": floor, "pyvene": slow})
        speedup = f"{slow / fast:8.1f}x" if slow else "       -"
        slow_text = f"{slow:14.2f}" if slow else "             -"
        print(f"{layer:>5} {fast:12.3f} {floor:13.3f} {fast / floor:10.2f}x {slow_text} {speedup}", flush=True)
    report["thesis_setting"] = {"k": args.k, "batch_size": args.batch_size, "cache_seconds": cache_seconds, "layers": rows}
    if not args.skip_pyvene:
        total_fast, total_slow = sum(r["fast"] for r in rows), sum(r["pyvene"] for r in rows)
        print(f"{'sum':>5} {total_fast:12.3f} {'':>13} {'':>11} {total_slow:14.2f} {total_slow / total_fast:8.1f}x")
        report["thesis_setting"]["summed_speedup"] = total_slow / total_fast
    if args.batch_size == 1280:
        # A cell at each measured layer in turn: hours = steps x mean step time.
        cells = {"fast": 3600 / (THESIS_STEPS_PER_CELL * statistics.mean(r["fast"] for r in rows))}
        if not args.skip_pyvene:
            cells["pyvene"] = 3600 / (THESIS_STEPS_PER_CELL * statistics.mean(r["pyvene"] for r in rows))
        print("     --preset thesis training cells per hour (800 steps each, from the mean step time over these layers): "
              + ", ".join(f"{name} {value:.1f}" for name, value in cells.items()))
        report["thesis_setting"]["cells_per_hour"] = cells


def default_model(args, report):
    model_path = Path(args.model_path)
    if not model_path.exists():
        print(f"\n3. skipped: no default model at {model_path} (python train_gpt2.py writes it)")
        return
    model, tokenizer = arithmetic_decoder.load_classifier(model_path, args.device)
    for p in model.parameters():
        p.requires_grad_(False)
    input_ids = arithmetic_decoder.encode_prompts(tokenizer)
    layers = list(range(model.config.n_layer))
    states = {layer: s.flatten(1) for layer, s in gpt2.block_outputs(model, input_ids, layers).items()}
    n, k = 6 * model.config.n_embd, arithmetic_cells.default_k(6 * model.config.n_embd)[0]
    pairs = A.draw_pairs(np.random.default_rng(1), args.batch_size * 6)
    data = arithmetic_network.interchange_data(input_ids, pairs, A.get_model("(X+Y)+Z"))
    batches = [torch.arange(i, i + 64) for i in range(0, len(pairs), 64)]
    print(f"\n3. default model ({model.config.n_layer} blocks, width {model.config.n_embd}), n = {n}, k = {k}, batch 64")
    print(f"{'layer':>5} {'fast s/step':>12} {'pyvene s/step':>14} {'speed-up':>9}")
    rows = []
    for layer in layers:
        fast, _, slow = measure_layer(model, input_ids, states, layer, k, batches, data, 0 if args.skip_pyvene else 5)
        rows.append({"layer": layer, "fast": fast, "pyvene": slow})
        print(f"{layer:>5} {fast:12.4f} {slow or float('nan'):14.4f} {(slow or float('nan')) / fast:8.1f}x", flush=True)
    report["default_model"] = {"k": k, "layers": rows}
    if args.skip_pyvene:
        return
    # IIA after training one cell to convergence with each engine: same pairs, batches, initial W.
    config = arithmetic_cells.SweepConfig(model_path=str(model_path), n_training=args.converge_pairs, epochs=args.converge_epochs)
    train_ids, test_ids = arithmetic_cells.sweep_pairs(config)
    print(f"\n   IIA after {config.epochs} epochs x {config.n_training} pairs (batch {config.batch_size}), same data and initial W:")
    print(f"{'cell':>22} {'fast IIA':>9} {'pyvene IIA':>11} {'diff (points)':>14} {'fast s':>7} {'pyvene s':>9}")
    network = arithmetic_network.Network(model, input_ids, states, arithmetic_decoder.predictions(model, input_ids).numpy())
    iia_rows = []
    for name, layer in args.converge_cells:
        causal_model = A.get_model(name)
        site = arithmetic_decoder.site(model, layer)
        train_data = arithmetic_network.interchange_data(input_ids, train_ids, causal_model)
        results = {}
        for engine_name in ("fast", "pyvene"):
            start = time.perf_counter()
            trained = engine.train(site, train_data, config.das_config(k), engine_name, activations=states[layer] if engine_name == "fast" else None)
            seconds = time.perf_counter() - start
            iia = arithmetic_network.evaluate_cells(network, site, [trained], test_ids, [causal_model], "fast")[0]
            results[engine_name] = (iia[name], seconds)
        diff = 100 * abs(results["fast"][0] - results["pyvene"][0])
        label = f"{name} L{layer} k{k}"
        print(f"{label:>22} {results['fast'][0]:9.4f} {results['pyvene'][0]:11.4f} {diff:14.2f} {results['fast'][1]:7.1f} {results['pyvene'][1]:9.1f}", flush=True)
        iia_rows.append({"causal_model": name, "layer": layer, "k": k, "fast_iia": results["fast"][0], "pyvene_iia": results["pyvene"][0],
                         "difference_points": diff, "fast_seconds": results["fast"][1], "pyvene_seconds": results["pyvene"][1]})
    report["default_model"]["converged_iia"] = iia_rows


def cell(text):
    name, layer = text.rsplit("@", 1)
    return A.get_model(name).name, int(layer)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=list(range(12)), help="layers of the GPT-2-small-shaped network to time")
    parser.add_argument("--k", type=int, default=64, help="rotated dimensions in the thesis setting")
    parser.add_argument("--batch_size", type=int, default=128, help="batch in the thesis setting")
    parser.add_argument("--fast_steps", type=int, default=5, help="timed fast and floor steps per layer (median; the first is dropped)")
    parser.add_argument("--pyvene_steps", type=int, default=1, help="timed pyvene steps per layer (each about 20 s on 2 cores)")
    parser.add_argument("--skip_pyvene", action="store_true", help="time only the fast engine and the floor")
    parser.add_argument("--skip_thesis_setting", action="store_true", help="only the default-model part")
    parser.add_argument("--skip_default_model", action="store_true", help="only the thesis-setting part")
    parser.add_argument("--model_path", default="results/gpt2/model", help="the default model, written by train_gpt2.py")
    parser.add_argument("--converge_cells", type=cell, nargs="+", default=[("(X+Y+Z)", 6), ("(X+Y)+Z", 0)],
                        help="cells trained to convergence with both engines, as MODEL@LAYER")
    parser.add_argument("--converge_pairs", type=int, default=8000, help="training pairs for the convergence comparison")
    parser.add_argument("--converge_epochs", type=int, default=40, help="epochs for the convergence comparison")
    parser.add_argument("--output", default=None, help="also write the measurements to this JSON file")
    devices.add_device_flags(parser)
    args = parser.parse_args()
    args.device = devices.setup(args.device, args.precision)
    torch.manual_seed(0)
    report = {"torch_threads": torch.get_num_threads(), "compute": devices.current()}
    print(f"computing on {devices.describe()}")
    with torch.inference_mode(False):
        if not args.skip_thesis_setting:
            thesis_setting(args, report)
        if not args.skip_default_model:
            default_model(args, report)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
