"""Disentangling which causal model the GPT-2 follows on which inputs, from trained DAS cells.

Subcommands, in the order they build on each other (each writes JSON and a figure into
--results_path):
  graphs    IIA graph over the 1000 triples for each trained cell: every one of the 999,000 ordered
            pairs evaluated; edge {i,j} = mean IIA of (base i <- source j) and (base j <- source i)
  cliques   maximum cliques of weight-1 edges, removed one by one while they have >= 5 triples
  divide    assign triples to causal models in an order while each member's mean IIA with the rest
            of its set stays >= --faithfulness (--rule mean: the set's mean, as the thesis); the rest
            is "unexplained"
  classify  a decision tree over features of a triple predicting its causal model; held-out accuracy
  predict   the tree's prediction for triples given on the command line, beside their measured IIA
  seeds     how much the cliques, division sets and classifier move between results directories made
            from sweeps with other --seed values

    python disentangle_causal_models.py graphs --layers 1 6 11      # default: every layer of the sweep
    python disentangle_causal_models.py graphs --sweep_path results/gpt2/positions --site best \
        --causal_models "(X+Y)+Z" "(X+Z)+Y" "X+(Y+Z)" --results_path results/gpt2/disentangling_best_sites
    python disentangle_causal_models.py cliques
    python disentangle_causal_models.py divide --faithfulness 0.8
    python disentangle_causal_models.py classify
    python disentangle_causal_models.py predict 3,7,2 10,1,4 5+5+5
    python disentangle_causal_models.py seeds --results_paths run_seed0 run_seed1 run_seed2 --output seeds.json

The thesis's forms, without a subcommand, run the same code: with --model_path, `graphs`; without,
`cliques` on the graphs built before:
    python disentangle_causal_models.py --model_path results/gpt2/model --results_path disentangling_results/ --causal_model_type arithmetic
    python disentangle_causal_models.py --results_path disentangling_results/ --causal_model_type arithmetic
"""

import sys
from pathlib import Path

from causal_das.experiments import disentangling, iia_graphs, thesis_commands
from causal_das.plots import disentangling as figures
from causal_das.runtime.cli import (
    ArgumentParser,
    non_negative_int,
    positive_int,
    run_main,
    setup_logging,
)
from causal_das.runtime.devices import add_device_flags
from causal_das.runtime.executors import add_executor_flags
from causal_das.tasks.arithmetic import FAMILIES, MODELS, parse_triple

RESULTS = "results/gpt2/disentangling"
SUBCOMMANDS = ("graphs", "cliques", "divide", "classify", "predict", "seeds")


def unit_interval(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (a mean pairwise IIA), got {text}")
    return value


def open_fraction(text: str) -> float:
    import argparse

    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def triple(text: str):
    import argparse

    try:
        return parse_triple(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def group(text: str) -> int | str:
    """A layer number, or a site group of graphs built with --site ('best sites', 'L2:3')."""
    try:
        return int(text)
    except ValueError:
        return text


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                            formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")

    def sub(name, help_text):
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--results_path", default=RESULTS, help=f"directory of the graphs and every analysis file (default {RESULTS})")
        p.add_argument("--verbose", action="store_true", help="more logging")
        return p

    graphs = sub("graphs", "IIA graphs over all 999,000 ordered pairs, one per trained DAS cell")
    graphs.add_argument("--sweep_path", default=None,
                        help="a run_das.py sweep directory with trained cells (default results/gpt2/das_<--causal_model_type>, "
                             "results/gpt2/das_arithmetic without it)")
    graphs.add_argument("--causal_models", nargs="+", choices=list(MODELS), default=None, help="causal models (default: every model of the sweep)")
    graphs.add_argument("--causal_model_type", choices=sorted(FAMILIES), default=None,
                        help="the thesis's flag: every causal model of this family (instead of --causal_models), from its sweep")
    graphs.add_argument("--layers", type=int, nargs="+", default=None, help="a thesis sweep's layers (default: every layer of the sweep)")
    graphs.add_argument("--site", nargs="+", default=None, metavar="LAYER:POSITIONS",
                        help="a position sweep's sites (run_das.py --position_sets), e.g. 2:3 1:all 0:4-5, or 'best' (the default): each "
                             "causal model at the site where DAS beats its best same-k baseline by the widest margin and its variable "
                             "can exist. The analyses after the graphs divide the triples among the models of one site (or of 'best sites')")
    graphs.add_argument("--low_rank_dim", type=positive_int, default=None, help="k of the cells (default: the sweep's smallest k below the full swap)")
    graphs.add_argument("--model_path", default=None, help="the network (default: the one recorded in the sweep)")
    add_executor_flags(graphs)
    add_device_flags(graphs)

    found = sub("cliques", "maximum cliques of weight-1 edges, removed one by one")
    found.add_argument("--causal_model_type", choices=sorted(FAMILIES), default=None,
                       help="the thesis's flag: the family the graphs in --results_path must be of (checked; the cliques are "
                            "those of every graph there)")
    found.add_argument("--min_size", type=positive_int, default=5, help="stop when the largest clique left is smaller (default 5)")
    found.add_argument("--exact_nodes", type=non_negative_int, default=disentangling.EXACT_NODES,
                       help="nodes of search tree allowed for each exact maximum clique before the greedy approximation is used "
                            f"(default {disentangling.EXACT_NODES:,}; 0: always greedy). A bound on work, not time: the same graphs give the "
                            "same cliques on a busy machine"),
    found.add_argument("--resamples", type=non_negative_int, default=0,
                       help="also peel the cliques of this many random 80%% subsets of the triples and report how much the largest "
                            "clique and the covered triples move (Jaccard index; below 0.8 on average: unstable). Default 0: not measured")

    divide = sub("divide", "assign triples to causal models, greedily, at a faithfulness threshold")
    divide.add_argument("--faithfulness", type=unit_interval, required=True, help="the threshold in [0, 1]: each member's mean IIA with the rest of its set (--rule mean: the set's mean pairwise IIA)")
    divide.add_argument("--order", nargs="+", choices=list(MODELS), default=None, help="order the causal models are given triples in (default: the graphs' order)")
    divide.add_argument("--layers", type=int, nargs="+", default=None, help="layers to divide at (default: every layer with graphs)")
    divide.add_argument("--resamples", type=non_negative_int, default=0,
                        help="also divide this many random 80%% subsets of the triples and report how much each set moves "
                             "(Jaccard index with the full division's set; below 0.8 on average: unstable). Default 0: not measured")
    divide.add_argument("--rule", choices=("member", "mean"), default="member",
                        help="member (default): every member's mean IIA with the rest of its set >= --faithfulness; mean (the thesis's): "
                             "the set's mean pairwise IIA >= --faithfulness. Both are computed and reported; this one is used downstream")

    classify = sub("classify", "decision tree predicting a triple's causal model from its features")
    classify.add_argument("--layer", type=group, default=None,
                          help="layer (or site group, e.g. 'best sites') of the division to learn (default: the one explaining the most "
                               "triples in sets that span more than one intermediate value)")
    classify.add_argument("--test_fraction", type=open_fraction, default=0.2, help="share of triples held out from fitting and CV (default 0.2)")
    classify.add_argument("--max_depth", type=positive_int, default=8, help="depths 1..max_depth are cross-validated (default 8)")
    classify.add_argument("--folds", type=positive_int, default=5, help="cross-validation folds (default 5)")
    classify.add_argument("--seed", type=int, default=0, help="seed of the held-out split, the folds and the tree")
    classify.add_argument("--splits", type=non_negative_int, default=10,
                          help="redo the fit on this many other random held-out splits and report how much the held-out accuracy and the "
                               "first rule move (default 10, about a second; 0: not measured)")

    predict = sub("predict", "predicted causal model of triples given as X,Y,Z, beside the IIA measured for them")
    predict.add_argument("triples", nargs="+", type=triple, help="triples such as 3,7,2 or 3+7+2 (numbers 1..10)")
    seeds = commands.add_parser("seeds", help="compare the analyses of runs made with other seeds",
                                description="how much the cliques, division sets and classifier move between results directories of the "
                                            "same analysis made from sweeps with other --seed values (run_pipeline.py --only seeds)")
    seeds.add_argument("--results_paths", nargs="+", required=True, help="two or more results directories, each with its division.json")
    seeds.add_argument("--output", required=True, help="the JSON file to write")
    seeds.add_argument("--verbose", action="store_true", help="more logging")
    return parser


def main():
    argv, note = thesis_commands.with_subcommand(sys.argv[1:], SUBCOMMANDS)
    args = build_parser().parse_args(argv)
    if note:
        print(note, flush=True)
    setup_logging(args.verbose)
    reason = disentangling.stopped(args.results_path) if args.command in ("cliques", "divide", "classify", "predict") else None
    if reason:  # the graphs step found nothing real to disentangle: each later step says so instead of running
        written = "" if args.command == "predict" else f"; wrote {disentangling.write_stopped(args.results_path, args.command, reason)}"
        print(f"stopped: {reason}{written}")
        return
    if args.command == "graphs":
        if args.causal_model_type and args.causal_models:
            raise ValueError("give --causal_model_type (a whole family) or --causal_models, not both")
        models = [m.name for m in FAMILIES[args.causal_model_type]] if args.causal_model_type else args.causal_models
        sweep_path = args.sweep_path or f"results/gpt2/das_{args.causal_model_type or 'arithmetic'}"
        config = iia_graphs.GraphsConfig(sweep_path, args.results_path, tuple(models) if models else None,
                                         tuple(args.layers) if args.layers else None, args.low_rank_dim, args.model_path,
                                         executor=args.executor, ray_address=args.ray_address, ray_cpus=args.ray_cpus,
                                         workers=args.workers, device=args.device, precision=args.precision,
                                         sites=tuple(args.site) if args.site else None)
        index = iia_graphs.run_graphs(config)
        if "stopped" in index:
            Path(args.results_path, "graphs.png").unlink(missing_ok=True)
            print(f"stopped: {index['stopped']}; wrote {args.results_path}/graphs.json")
            return
        figures.plot_graphs(f"{args.results_path}/graphs.json", f"{args.results_path}/graphs.png")
        print(iia_graphs.graphs_table(index))
        print(f"wrote {args.results_path}/graphs.json, graphs/ and graphs.png")
    elif args.command == "cliques":
        from causal_das.analysis.cliques import cliques_table
        from causal_das.analysis.stability import clique_stability_table

        if args.causal_model_type:
            thesis_commands.check_graphs_family(args.results_path, args.causal_model_type)
        record = disentangling.run_cliques(args.results_path, args.min_size, args.exact_nodes, args.resamples)
        print(cliques_table(record))
        if args.resamples:
            print(clique_stability_table(record))
        print(f"wrote {args.results_path}/cliques.json and cliques.png")
    elif args.command == "divide":
        from causal_das.analysis.division import division_table
        from causal_das.analysis.stability import stability_table

        record = disentangling.run_division(args.results_path, args.faithfulness, args.order, args.layers, args.rule, args.resamples)
        print(division_table(record))
        for row in record["layers"]:
            if "stability" in row:
                print(stability_table(row))
        print(f"wrote {args.results_path}/division.json and division.png")
    elif args.command == "classify":
        record = disentangling.run_classification(args.results_path, args.layer, args.test_fraction, args.max_depth, args.folds, args.seed,
                                                   args.splits)
        print(disentangling.classification_summary(record))
        print(f"rules:\n{record['rules']}")
        print(f"wrote {args.results_path}/classification.json and classification_tree.png")
    elif args.command == "seeds":
        from causal_das.analysis.seed_variation import comparison_table

        record = disentangling.run_seed_comparison(args.results_paths, args.output)
        figure = Path(args.output).with_suffix(".png")
        if "stopped" in record:
            figure.unlink(missing_ok=True)
            print(f"stopped: {record['stopped']}; wrote {args.output}")
            return
        print(comparison_table(record))
        figure = figures.plot_seed_variation(args.output, str(figure))
        print(f"wrote {args.output} and {figure}")
    else:
        print(disentangling.prediction_table(disentangling.predict(args.results_path, args.triples)))


if __name__ == "__main__":
    run_main(main)
