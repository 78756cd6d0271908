"""DAS sweep on the X+Y+Z GPT-2: for each causal model of a family, each layer and each k, train W at
block_output over the token positions (all six by default, concatenated as pyvene does: n = 6 x
width), save it, and measure IIA on fresh pairs against every model of the family, beside the
baselines and the same DAS on a randomly initialised copy of the network.

The cells of a layer (every causal model and k) are trained together, one suffix pass per step for
all of them; the random-init control's cells likewise on the control network. One JSON per cell
under <results_path>/cells/; a rerun skips finished cells, so an interrupted sweep resumes where it
stopped. summary.json gathers every cell.

    python run_das.py --causal_model_type arithmetic          # -> results/gpt2/das_arithmetic/
    python run_das.py --causal_model_type simple --results_path results/gpt2/das_simple
    python run_das.py --preset thesis --model_path models/gpt2_finetuned   # the thesis's sizes
    python run_das.py --position_sets all 0 1 2 3 4 5   # where each variable lives: -> results/gpt2/positions_arithmetic/
    python src/run_das.py ...                            # the thesis's path: this script, the same flags

With --position_sets, each cell is (causal model, layer, position set) at one k, beside its baselines at
the same site and k (full patch, random subspaces, PCA, a learned neuron mask, the random-init control)
and the illusion check (docs/experiments.md#where-each-variable-lives).
"""

from dataclasses import replace

from causal_das.experiments import arithmetic_positions, arithmetic_sweep
from causal_das.plots.arithmetic import plot_sweep
from causal_das.plots.positions import plot_positions
from causal_das.runtime.cli import ArgumentParser, positive_float, positive_int, run_main, setup_logging
from causal_das.runtime.devices import add_device_flags
from causal_das.runtime.executors import add_executor_flags
from causal_das.studies import arithmetic_cells
from causal_das.tasks.arithmetic import FAMILIES


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    d = arithmetic_cells.SweepConfig()
    parser.add_argument("--model_path", default=d.model_path, help="a network saved by train_gpt2.py: a 28-class sequence classifier or a causal LM answering with the next token, of any Hugging Face decoder family")
    parser.add_argument("--causal_model_type", choices=sorted(FAMILIES), default=d.causal_model_type,
                        help="family of causal models: arithmetic ((X+Y)+Z, (X+Z)+Y, X+(Y+Z)) or simple ((X)+Y+Z, X+(Y)+Z, X+Y+(Z), (X+Y+Z))")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="blocks to intervene at (default: every block)")
    parser.add_argument("--low_rank_dims", type=positive_int, nargs="+", default=None,
                        help="k values: dimensions of the aligned subspace; k = n is a full swap (default: the thesis's 256 and 4608 "
                             "scaled to the site, 16 and 288 for the default model)")
    p = arithmetic_positions.PositionSweepConfig()
    parser.add_argument("--n_training", type=positive_int, default=None,
                        help=f"training (base, source) pairs per cell (default {d.n_training}; {p.n_training} with --position_sets)")
    parser.add_argument("--n_testing", type=positive_int, default=None, help=f"fresh test pairs per cell, disjoint from the training pairs (default {d.n_testing})")
    parser.add_argument("--n_selection", type=positive_int, default=None,
                        help="with --position_sets: pairs, disjoint from the training and test pairs, on which the best sites are "
                             "chosen, so that the numbers reported (on the test pairs) are not the ones they were chosen by "
                             "(default: as many as --n_testing)")
    parser.add_argument("--batch_size", type=positive_int, default=None, help=f"DAS training batch size (default {d.batch_size})")
    parser.add_argument("--epochs", type=positive_int, default=None, help=f"DAS training epochs (default {d.epochs}; {p.epochs} with --position_sets)")
    parser.add_argument("--lr", type=positive_float, default=None, help=f"DAS learning rate, Adam (default {d.lr})")
    parser.add_argument("--positions", type=int, nargs="+", default=list(d.positions),
                        help="token positions intervened at (0..5 = X + Y + Z =), concatenated; default all six")
    parser.add_argument("--position_sets", nargs="+", default=None,
                        help="run the position sweep instead: one site per layer and position set (all, 3, 2-3, 0,2), one k "
                             "(--low_rank_dims, default 16 of the width 48), every baseline beside each cell; e.g. all 0 1 2 3 4 5")
    parser.add_argument("--causal_models", nargs="+", default=None,
                        help="with --position_sets: these causal models (any of both families, e.g. '(X+Y)+Z' '(X)+Y+Z') instead of "
                             "the --causal_model_type family; all are trained together at each site")
    parser.add_argument("--random_draws", type=positive_int, default=p.random_draws,
                        help="untrained random subspaces per cell of the position sweep (their mean and spread are reported)")
    parser.add_argument("--preset", choices=("thesis",), default=None,
                        help="thesis: 256000 pairs, batch 1280, 4 epochs, lr 0.01, k in {64,128,256,768,4608} scaled to the site; "
                             "--n_training, --batch_size, --epochs, --lr and --low_rank_dims given beside it win")
    parser.add_argument("--control", choices=("random_init", "none"), default=d.control,
                        help="also run every cell's DAS on a randomly initialised copy of the network (random_init) or not")
    parser.add_argument("--engine", choices=("fast", "pyvene"), default=d.engine, help="DAS engine: fast (cached block outputs) or pyvene")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed for the pairs, the initial W and the batch order")
    parser.add_argument("--results_path", default=None, help="directory for cells/, interventions/ and summary.json (default results/gpt2/das_<type>)")
    parser.add_argument("--max_cells_per_pass", type=positive_int, default=None,
                        help="most cells of one layer trained together in one suffix pass (default: as many as a quarter of the "
                             "machine's memory, or half of the GPU's free memory, holds); does not change the results")
    parser.add_argument("--verbose", action="store_true", help="log per-epoch losses")
    add_executor_flags(parser)
    add_device_flags(parser)
    args = parser.parse_args()
    setup_logging(args.verbose)
    sizes = {name: getattr(args, name) for name in ("n_training", "n_testing", "batch_size", "epochs", "lr") if getattr(args, name) is not None}
    if args.position_sets:
        return position_sweep(args, sizes)
    if args.causal_models or args.n_selection or args.random_draws != arithmetic_positions.PositionSweepConfig.random_draws:
        raise ValueError("--causal_models, --n_selection and --random_draws belong to the position sweep: add --position_sets (e.g. all 0 1 2 3 4 5)")
    results_path = args.results_path or f"results/gpt2/das_{args.causal_model_type}"
    config = arithmetic_cells.SweepConfig(
        model_path=args.model_path, causal_model_type=args.causal_model_type,
        layers=tuple(args.layers) if args.layers else None,
        low_rank_dims=tuple(args.low_rank_dims) if args.low_rank_dims else None,
        positions=tuple(args.positions), engine=args.engine, control=args.control, seed=args.seed, results_path=results_path,
        device=args.device, precision=args.precision, max_cells_per_pass=args.max_cells_per_pass, **sizes,
    )
    if args.preset == "thesis":  # the preset's sizes, except those the user gave
        config = replace(config, **{**arithmetic_cells.THESIS_PRESET, **sizes}, preset="thesis")
    summary = arithmetic_sweep.run_sweep(config, args.executor, args.ray_address, args.ray_cpus, args.workers)
    figure = plot_sweep(f"{results_path}/summary.json", f"{results_path}/iia_per_layer.png")
    print(arithmetic_sweep.summary_table(summary))
    print(f"\nwrote {len(summary['cells'])} cells, {results_path}/summary.json and {figure}")


def position_sweep(args, sizes: dict) -> None:
    """run_das.py --position_sets: the flags that only the thesis sweep has are refused, not ignored."""
    if args.preset or args.engine != "fast" or args.positions != list(range(6)):
        raise ValueError("--position_sets takes the positions from its sets and runs on the fast engine; drop --positions, --preset and --engine")
    if args.low_rank_dims and len(args.low_rank_dims) != 1:
        raise ValueError("--position_sets compares alignments at one k: give one --low_rank_dims value")
    results_path = args.results_path or f"results/gpt2/positions_{args.causal_model_type}"
    config = arithmetic_positions.PositionSweepConfig(
        model_path=args.model_path, causal_model_type=args.causal_model_type, layers=tuple(args.layers) if args.layers else None,
        causal_models=tuple(args.causal_models) if args.causal_models else None,
        position_sets=tuple(dict.fromkeys(args.position_sets)), k=args.low_rank_dims[0] if args.low_rank_dims else None,
        random_draws=args.random_draws, control=args.control, seed=args.seed, results_path=results_path, n_selection=args.n_selection,
        device=args.device, precision=args.precision, max_cells_per_pass=args.max_cells_per_pass, **sizes,
    )
    summary = arithmetic_positions.run_position_sweep(config, args.executor, args.ray_address, args.ray_cpus, args.workers)
    figures = plot_positions(f"{results_path}/summary.json", results_path)
    print(arithmetic_positions.summary_table(summary))
    print(f"\nwrote {len(summary['cells'])} cells, {results_path}/summary.json, " + ", ".join(map(str, figures)))


if __name__ == "__main__":
    run_main(main)
