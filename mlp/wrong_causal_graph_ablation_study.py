"""Wrong-causal-model ablation: an MLP trained on ABAB; DAS trained on counterfactuals of ABAB,
AABB(AND) and ABBA and tested on each: a 3x3 IIA table (JSON) and heatmap (PNG). The true model's
diagonal cell should stand out.

    python mlp/wrong_causal_graph_ablation_study.py
    python mlp/wrong_causal_graph_ablation_study.py --layer 1
"""

from causal_das.experiments import mlp as mlp_experiment
from causal_das.experiments.mlp_ablation import run_ablation
from causal_das.plots.mlp import plot_ablation
from causal_das.runtime.cli import ArgumentParser, add_common_flags, run_main, setup_logging


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    mlp_experiment.add_mlp_flags(parser, layers=False)
    parser.add_argument("--layer", type=int, default=0, help="hidden layer DAS intervenes at")
    add_common_flags(parser, "results/wrong_causal_graph_ablation")
    args = parser.parse_args()
    setup_logging(args.verbose)
    config = mlp_experiment.mlp_config_from_args(args, task="pattern_matching")
    result = run_ablation(config, args.layer)
    figure = plot_ablation(f"{config.results_path}/results.json", f"{config.results_path}/iia_heatmap.png")
    rows = "\n".join(f"  trained on {name:>9}: " + "  ".join(f"{v:.3f}" for v in row) for name, row in zip(result["models"], result["iia"], strict=True))
    print(f"IIA (columns: tested on {', '.join(result['models'])}):\n{rows}\nwrote {config.results_path}/results.json and {figure}")


if __name__ == "__main__":
    run_main(main)
