"""Re-evaluate saved DAS interventions: every trained cell of one or more run_das.py sweeps, against
every causal model of the chosen families (a W trained on one model tested on the others: the
sanity check), on fresh pairs disjoint from the sweep's training pairs or on all 999,000 ordered
pairs. Writes the JSON the figures read.

    python evaluate_das.py                                     # both default sweeps, both families
    python evaluate_das.py --results_path results/gpt2/das_arithmetic --causal_model_type arithmetic
    python evaluate_das.py --all_pairs --layers 0 --low_rank_dims 16     # every ordered pair
    python evaluate_das.py --results_path results/ --causal_model_type simple   # a results root: results/gpt2/das_simple
"""

from pathlib import Path

from causal_das.experiments import arithmetic_evaluation, thesis_commands
from causal_das.runtime.cli import ArgumentParser, positive_int, run_main, setup_logging
from causal_das.runtime.devices import add_device_flags
from causal_das.runtime.executors import add_executor_flags
from causal_das.runtime.io import atomic_write_json, check_results_path
from causal_das.tasks.arithmetic import FAMILIES, MODELS


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results_path", nargs="+", default=["results/gpt2/das_arithmetic", "results/gpt2/das_simple"],
                        help="sweep directories written by run_das.py, each getting its own evaluation.json; a results root (the "
                             "thesis's `results/`) stands for the sweeps of --causal_model_type under it, <root>/gpt2/das_<type>/")
    parser.add_argument("--model_path", default=None, help="the network (default: the one recorded in each sweep's summary.json)")
    parser.add_argument("--causal_model_type", choices=(*sorted(FAMILIES), "all"), default="all",
                        help="families of causal models to test every cell against (default: all)")
    parser.add_argument("--n_testing", type=positive_int, default=5_000, help="fresh test pairs, disjoint from the sweep's training pairs")
    parser.add_argument("--all_pairs", action="store_true", help="evaluate on all 999,000 ordered pairs instead (includes training pairs)")
    parser.add_argument("--trained_on", nargs="+", choices=list(MODELS), default=None, help="only cells trained on these causal models")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="only cells at these layers")
    parser.add_argument("--low_rank_dims", type=positive_int, nargs="+", default=None, help="only cells with these k")
    parser.add_argument("--batch_size", type=positive_int, default=8192, help="evaluation batch size")
    parser.add_argument("--engine", choices=("fast", "pyvene"), default="fast", help="engine that runs the interventions")
    parser.add_argument("--seed", type=int, default=0, help="seed for the fresh test pairs")
    parser.add_argument("--output_name", default="evaluation.json", help="file name written into each sweep directory")
    parser.add_argument("--verbose", action="store_true", help="more logging")
    add_executor_flags(parser)
    add_device_flags(parser)
    args = parser.parse_args()
    setup_logging(args.verbose)
    families = tuple(sorted(FAMILIES)) if args.causal_model_type == "all" else (args.causal_model_type,)

    def selected(cell):
        return ((args.trained_on is None or cell["causal_model"] in args.trained_on)
                and (args.layers is None or cell["layer"] in args.layers)
                and (args.low_rank_dims is None or cell["k"] in args.low_rank_dims))

    sweeps = []
    for given in args.results_path:
        found, note = thesis_commands.sweeps_under(given, families)
        sweeps += [path for path in found if path not in sweeps]
        if note:
            print(note, flush=True)
    for results_path in sweeps:  # every output place is checked before anything is evaluated
        if Path(results_path).is_file():
            parser.error(f"--results_path {results_path} is a file; pass a sweep directory written by run_das.py")
        out = Path(results_path) / args.output_name
        if out.is_dir():
            parser.error(f"--output_name {args.output_name}: {out} is a directory; pass a file name")
        if out.parent != Path(results_path):  # an --output_name with directories: they must be creatable
            check_results_path(out.parent, "--output_name")
    for results_path in sweeps:
        record = arithmetic_evaluation.evaluate_saved(results_path, families, args.n_testing, args.all_pairs, args.seed, args.engine,
                                   args.model_path, selected, args.batch_size, args.executor, args.ray_address, args.ray_cpus,
                                   args.device, args.precision, workers=args.workers)
        out = Path(results_path) / args.output_name
        atomic_write_json(out, record)
        print(arithmetic_evaluation.evaluation_table(record))
        print(f"wrote {out}")


if __name__ == "__main__":
    run_main(main)
