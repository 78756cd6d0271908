"""IIA graph construction on the default model: all 999,000 ordered pairs of one graph.

Target: one graph in under 60 seconds on 2 CPU cores at every layer. Layer 0 is the slowest (the
intervened state runs through all 11 later blocks), so it is measured by default. For a side-by-side
ratio the same graph is also built the way evaluate_das.py streams pairs (batches of 8192 mixed
pairs) with --compare; both must give the same matrix.

    python benchmarks/bench_graphs.py                    # layer 0
    python benchmarks/bench_graphs.py --layers 0 6 11 --compare
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from causal_das.analysis import graphs as G
from causal_das.das import engine
from causal_das.studies import arithmetic_cells, arithmetic_decoder, arithmetic_network
from causal_das.tasks import arithmetic as A


def intervention_for(sweep: Path, model, name: str, layer: int, k: int, n: int) -> engine.TrainedIntervention:
    """The sweep's trained W if it is there, else a random orthonormal W (the cost is the same)."""
    path = sweep / "interventions" / arithmetic_cells.cell_name(name, layer, k)
    if (path / "weights.safetensors").is_file():
        return engine.TrainedIntervention.load(path)
    generator = torch.Generator().manual_seed(0)
    weight, _ = torch.linalg.qr(torch.randn(n, k, generator=generator))
    print(f"  (no trained W at {path}: timing a random orthonormal W)")
    return engine.TrainedIntervention(str(arithmetic_decoder.site(model, layer).name), n, (k,), weight)


def streamed(network, site, trained, causal_model, batch_size=8192):
    """The graph as evaluate_das.py would evaluate it: mixed pairs in batches of 8192."""
    base = np.repeat(np.arange(A.N_TRIPLES), A.N_TRIPLES)
    source = np.tile(np.arange(A.N_TRIPLES), A.N_TRIPLES)
    data = engine.InterchangeData(network.input_ids, torch.as_tensor(base), torch.as_tensor(source)[:, None], torch.zeros(len(base), dtype=torch.long))
    predicted = engine.predict(site, trained, data, "fast", batch_size=batch_size, activations=network.states[site.layer]).numpy()
    correct = (predicted == A.counterfactual_labels(causal_model, base, source)).reshape(A.N_TRIPLES, A.N_TRIPLES)
    np.fill_diagonal(correct, False)
    return correct


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default="results/gpt2/model", help="the trained default GPT-2")
    parser.add_argument("--sweep_path", default="results/gpt2/das_arithmetic", help="where trained W are looked for")
    parser.add_argument("--causal_model", default="(X+Y)+Z", help="causal model of the graph")
    parser.add_argument("--layers", type=int, nargs="+", default=[0], help="layers to time (default 0, the slowest)")
    parser.add_argument("--k", type=int, default=16, help="rank of W (default 16, the default sweep's)")
    parser.add_argument("--compare", action="store_true", help="also build each graph from 8192-pair batches, for the ratio")
    args = parser.parse_args()
    model, tokenizer = arithmetic_decoder.load_classifier(args.model_path)
    causal_model = A.get_model(args.causal_model)
    network = arithmetic_network.Network.load(model, arithmetic_decoder.encode_prompts(tokenizer), args.layers)
    print(f"torch threads: {torch.get_num_threads()}; model {args.model_path}: {model.config.n_layer} blocks, width {model.config.n_embd}")
    with engine.frozen(model):
        for layer in args.layers:
            site = arithmetic_decoder.site(model, layer)
            trained = intervention_for(Path(args.sweep_path), model, args.causal_model, layer, args.k, site.n)
            start = time.perf_counter()
            correct = G.correct_matrix(network, site, trained, causal_model, A.counterfactual_labels)
            seconds = time.perf_counter() - start
            verdict = "under" if seconds < 60 else "OVER"
            print(f"layer {layer:>2}: {A.N_PAIRS:,} ordered pairs in {seconds:6.1f} s ({verdict} the 60 s target); "
                  f"mean IIA {correct.sum() / A.N_PAIRS:.4f}")
            if args.compare:
                start = time.perf_counter()
                reference = streamed(network, site, trained, causal_model)
                other = time.perf_counter() - start
                print(f"          8192-pair batches: {other:6.1f} s -> one base per batch is {other / seconds:.2f}x faster; "
                      f"cells that differ: {int((reference != correct).sum())} of {A.N_TRIPLES ** 2:,}")


if __name__ == "__main__":
    main()
