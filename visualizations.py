"""Figures of the GPT-2 experiments, drawn from result JSON only (no model is loaded).

  sanity_check  each arithmetic model's W tested on every arithmetic model, per layer and k
                (reads das_arithmetic/summary.json and, if present, its evaluation.json)
  empirical     simple models: where does X, Y, Z (and the whole sum) live? layer x k heatmaps
                (reads das_simple/summary.json)
  overview      layer x k heatmaps of every causal model of both sweeps, controls in brackets
  training      the GPT-2's training curves (reads model/training.json)
  positions     where each variable lives: DAS per layer x token position beside the best baseline,
                and their difference (reads positions/summary.json; not part of `all`, which are the
                thesis's figures; run_das.py --position_sets draws it too)

    python visualizations.py --experiment all
    python visualizations.py --experiment sanity_check --results_path results/gpt2 --formats png pdf
"""

from pathlib import Path

from causal_das.plots import gpt2 as figures
from causal_das.plots.positions import plot_positions
from causal_das.runtime.cli import ArgumentParser, run_main

EXPERIMENTS = ("sanity_check", "empirical", "overview", "training")


def require(path: Path, how: str) -> Path:
    if not path.is_file():
        raise ValueError(f"{path} does not exist: {how}")
    return path


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                            formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", nargs="+", choices=(*EXPERIMENTS, "positions", "all"), required=True,
                        help="which figures to draw (all: the thesis's four)")
    parser.add_argument("--results_path", default="results/gpt2",
                        help="directory holding das_arithmetic/, das_simple/ and model/ (as run_pipeline.py writes them); figures go here")
    parser.add_argument("--formats", nargs="+", choices=("png", "pdf", "svg"), default=["png"], help="file formats to write (default png)")
    args = parser.parse_args()
    root = Path(args.results_path)
    if not root.is_dir():
        raise ValueError(f"--results_path {root} is not a directory; run run_pipeline.py (or run_das.py) first")
    chosen = EXPERIMENTS if "all" in args.experiment else tuple(dict.fromkeys(args.experiment))
    arithmetic = root / "das_arithmetic"
    simple = root / "das_simple"
    sweep_hint = "run `python run_das.py --causal_model_type {} --results_path {}` first"
    for experiment in chosen:
        for fmt in args.formats:
            if experiment == "sanity_check":
                summary = require(arithmetic / "summary.json", sweep_hint.format("arithmetic", arithmetic))
                out = figures.plot_sanity_check(summary, root / f"sanity_check.{fmt}", arithmetic / "evaluation.json")
            elif experiment == "empirical":
                out = figures.plot_empirical(require(simple / "summary.json", sweep_hint.format("simple", simple)), root / f"empirical.{fmt}")
            elif experiment == "overview":
                summaries = [path / "summary.json" for path in (arithmetic, simple) if (path / "summary.json").is_file()]
                if not summaries:
                    raise ValueError(f"no sweep under {root} (neither das_arithmetic/summary.json nor das_simple/summary.json); run run_das.py first")
                out = figures.plot_overview(summaries, root / f"overview.{fmt}")
            elif experiment == "positions":
                hint = f"run `python run_das.py --position_sets all 0 1 2 3 4 5 --results_path {root / 'positions'}` first"
                out = ", ".join(map(str, plot_positions(require(root / "positions" / "summary.json", hint), root / "positions", fmt)))
            else:
                training = require(root / "model" / "training.json", f"train the model with `python train_gpt2.py --output_dir {root / 'model'}` first")
                out = figures.plot_training_curves(training, root / "model" / f"training_curves.{fmt}")
            print(f"wrote {out}")


if __name__ == "__main__":
    run_main(main)
