"""Hierarchical equality (pyvene's DAS tutorial): train an MLP, then align WX (rotated dims 0-7) and
YZ (dims 8-15) with DAS at each hidden layer; report IIA per layer and per intervened set, with
baselines and a random-init control.

    python reproduce_das_experiment.py                  # default run, results/hierarchical_equality/
    python reproduce_das_experiment.py --engine pyvene  # the same through pyvene
    python reproduce_das_experiment.py --evaluate_saved # reload saved model + W, re-measure IIA
"""

from causal_das.experiments import mlp as mlp_experiment
from causal_das.runtime.cli import ArgumentParser, add_common_flags, run_main, setup_logging


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    mlp_experiment.add_mlp_flags(parser)
    add_common_flags(parser, "results/hierarchical_equality")
    parser.add_argument("--evaluate_saved", action="store_true",
                        help="do not train: reload the model and interventions saved in --results_path and re-measure IIA")
    args = parser.parse_args()
    setup_logging(args.verbose)
    if args.evaluate_saved:
        result = mlp_experiment.evaluate_saved(args.results_path, args.device, args.precision)
        print(f"re-evaluated saved interventions: {result['layers']} (identical to saved: {result['matches_saved']})")
        return
    mlp_experiment.layer_sweep_main(args, "hierarchical_equality")


if __name__ == "__main__":
    run_main(main)
