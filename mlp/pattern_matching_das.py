"""ABAB pattern matching: train an MLP on O = (W==Y) and (X==Z), then align P = (W==Y) (rotated
dims 0-7) and Q = (X==Z) (dims 8-15) with DAS at each hidden layer (each layer really gets its own
alignment); report IIA per layer with baselines and a random-init control.

    python mlp/pattern_matching_das.py
    python mlp/pattern_matching_das.py --layers 1 --engine pyvene
"""

from causal_das.experiments import mlp as mlp_experiment
from causal_das.runtime.cli import ArgumentParser, add_common_flags, run_main, setup_logging


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    mlp_experiment.add_mlp_flags(parser)
    add_common_flags(parser, "results/pattern_matching")
    args = parser.parse_args()
    setup_logging(args.verbose)
    mlp_experiment.layer_sweep_main(args, "pattern_matching")


if __name__ == "__main__":
    run_main(main)
