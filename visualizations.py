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
    python visualizations.py --experiment sanity_check --results_path disentangling_results/   # the thesis's form

--results_path is where the figures go; the results are read from --sweeps_path, or else from the
first of --results_path and <results_path>/gpt2 that holds das_arithmetic/, das_simple/, positions/
or model/, so our layout (results/gpt2) keeps the figures beside the sweeps. Failing both, the
thesis's form (with --causal_model_type) reads results/gpt2, where its sweep commands wrote: its
`--results_path disentangling_results/` is where the figures go.
"""

from pathlib import Path

from causal_das.experiments.thesis_commands import figure_paths
from causal_das.plots import arithmetic as figures
from causal_das.plots.positions import plot_positions
from causal_das.runtime.cli import ArgumentParser, compatibility_note, run_main
from causal_das.tasks.arithmetic import FAMILIES

EXPERIMENTS = ("sanity_check", "empirical", "overview", "training")
FAMILY_OF = {"sanity_check": "arithmetic", "empirical": "simple"}  # the one sweep each of these figures reads


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
                        help="directory the figures go to; also where the results are read from when it holds das_arithmetic/, "
                             "das_simple/, positions/ or model/ (as run_pipeline.py writes them; see below)")
    parser.add_argument("--sweeps_path", default=None,
                        help="directory holding das_arithmetic/, das_simple/, positions/ and model/ (default: --results_path or "
                             "<results_path>/gpt2, the first that holds any; with --causal_model_type, else results/gpt2)")
    parser.add_argument("--causal_model_type", choices=sorted(FAMILIES), default=None,
                        help="the thesis's form: the family of the figure's sweep (sanity_check: arithmetic, empirical: simple; "
                             "another stops), read from results/gpt2 when neither --results_path nor --sweeps_path holds it")
    parser.add_argument("--model_path", default=None, help="the thesis's flag, accepted and unused: the figures are drawn from result JSON only")
    parser.add_argument("--formats", nargs="+", choices=("png", "pdf", "svg"), default=["png"], help="file formats to write (default png)")
    args = parser.parse_args()
    chosen = EXPERIMENTS if "all" in args.experiment else tuple(dict.fromkeys(args.experiment))
    if args.causal_model_type:
        other = next((e for e in chosen if FAMILY_OF.get(e, args.causal_model_type) != args.causal_model_type), None)
        if other:
            raise ValueError(f"--experiment {other} draws the {FAMILY_OF[other]} sweep, not the {args.causal_model_type} one; "
                             f"drop --causal_model_type or give it {FAMILY_OF[other]}")
    if args.model_path is not None:
        compatibility_note("--model_path", "the figures are drawn from result JSON only")
    out_dir, root = figure_paths(args.results_path, args.sweeps_path, args.causal_model_type)
    if out_dir.resolve() != root.resolve():
        print(f"reading the results in {root}; the figures go to {out_dir}", flush=True)
    arithmetic = root / "das_arithmetic"
    simple = root / "das_simple"
    sweep_hint = "run `python run_das.py --causal_model_type {} --results_path {}` first"
    for experiment in chosen:
        for fmt in args.formats:
            if experiment == "sanity_check":
                summary = require(arithmetic / "summary.json", sweep_hint.format("arithmetic", arithmetic))
                out = figures.plot_sanity_check(summary, out_dir / f"sanity_check.{fmt}", arithmetic / "evaluation.json")
            elif experiment == "empirical":
                out = figures.plot_empirical(require(simple / "summary.json", sweep_hint.format("simple", simple)), out_dir / f"empirical.{fmt}")
            elif experiment == "overview":
                summaries = [path / "summary.json" for path in (arithmetic, simple) if (path / "summary.json").is_file()]
                if not summaries:
                    raise ValueError(f"no sweep under {root} (neither das_arithmetic/summary.json nor das_simple/summary.json); run run_das.py first")
                out = figures.plot_overview(summaries, out_dir / f"overview.{fmt}")
            elif experiment == "positions":
                hint = f"run `python run_das.py --position_sets all 0 1 2 3 4 5 --results_path {root / 'positions'}` first"
                out = ", ".join(map(str, plot_positions(require(root / "positions" / "summary.json", hint), out_dir / "positions", fmt)))
            else:
                training = require(root / "model" / "training.json", f"train the model with `python train_gpt2.py --output_dir {root / 'model'}` first")
                beside = root / "model" if out_dir.resolve() == root.resolve() else out_dir  # no model/ holding only a figure
                out = figures.plot_training_curves(training, beside / f"training_curves.{fmt}")
            print(f"wrote {out}")


if __name__ == "__main__":
    run_main(main)
