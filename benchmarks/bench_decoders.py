"""GPT-2's own site against the generic decoder site on the same network, side by side.

`arithmetic_decoder.site` keeps GPT2Site for GPT-2 (the final block at the last position only, attention spelled
out for six tokens) and uses `decoder.DecoderSite` for the other decoder types; this measures
whether that is still the faster choice for GPT-2: a DAS training step (suffix forward + backward
of a batch) and a prediction pass, per row, at a few layers, both sites alternating in one run.
Both give the same logits (checked here too).

    python benchmarks/bench_decoders.py --model_path results/gpt2/model
"""

import argparse
import time

import torch

from causal_das.models import decoder
from causal_das.studies import arithmetic_decoder


def per_row(site, states: torch.Tensor, grad: bool, reps: int) -> float:
    """Microseconds per row of one suffix pass (forward, or forward + backward)."""
    def once():
        if grad:
            hidden = states.clone().requires_grad_()
            site.suffix(hidden).logsumexp(-1).sum().backward()
        else:
            with torch.no_grad():
                site.suffix(states)

    once()
    started = time.perf_counter()
    for _ in range(reps):
        once()
    return (time.perf_counter() - started) / reps / len(states) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default="results/gpt2/model", help="a GPT-2 classifier saved by train_gpt2.py")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 6, 10], help="layers to time")
    parser.add_argument("--rows", type=int, default=192, help="rows per pass (the default sweep: 3 cells x 64)")
    parser.add_argument("--reps", type=int, default=20, help="passes timed per measurement")
    args = parser.parse_args()
    model, tokenizer = arithmetic_decoder.load_classifier(args.model_path)
    for p in model.parameters():
        p.requires_grad_(False)
    ids = arithmetic_decoder.encode_prompts(tokenizer)[: args.rows]
    print(f"torch threads {torch.get_num_threads()}, {args.rows} rows per pass; microseconds per row (lower is faster)")
    print(f"{'layer':>5} {'pass':>16} {'GPT2Site':>9} {'generic':>9} {'ratio':>6}")
    for layer in args.layers:
        own, generic = arithmetic_decoder.site(model, layer), decoder.DecoderSite(model, layer, None, arithmetic_decoder.SEQ_LEN)
        states = own.prefix(ids)
        with torch.no_grad():
            assert (own.suffix(states) - generic.suffix(states)).abs().max().item() < 1e-5
        for grad, name in ((True, "forward+backward"), (False, "forward")):
            a, b = per_row(own, states, grad, args.reps), per_row(generic, states, grad, args.reps)
            print(f"{layer:>5} {name:>16} {a:>9.1f} {b:>9.1f} {b / a:>5.2f}x")


if __name__ == "__main__":
    main()
