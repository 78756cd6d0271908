"""Compare this run's results with the committed reference: per headline number, the reference
value, this run's value and the difference; every number and per-experiment statistics in JSON.

The reference lives in results/reference/ and is never read by a run (another machine's floating
point trains slightly different networks); this script is the only thing that reads it.

    python compare_results.py                                   # results/ against results/reference/
    python compare_results.py --run /tmp/other_run --output /tmp/other_run/comparison.json
    python compare_results.py --every_field                      # every field of every result JSON, not only headlines
    python compare_results.py --update_reference                # then replace the reference with results/
"""

from pathlib import Path

from causal_das.runtime import compare
from causal_das.runtime.cli import ArgumentParser, run_main
from causal_das.runtime.io import atomic_write_json, check_results_path


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="results", help="the results root of the run to compare (what run_pipeline.py wrote)")
    parser.add_argument("--reference", default="results/reference", help="the reference results root")
    parser.add_argument("--output", default=None, help="where the comparison JSON goes (default: RUN/comparison.json)")
    parser.add_argument("--every_field", action="store_true",
                        help="also compare every field of every result JSON (not only the headline numbers), apart from timing, "
                             "command, commit, versions and compute: what a change that must not move any result is checked with")
    parser.add_argument("--update_reference", action="store_true",
                        help="after comparing, replace the reference with the run's result files (JSON, figures, graph arrays; no weights)")
    args = parser.parse_args()
    for flag, path in (("--run", args.run), ("--reference", args.reference)):
        if not Path(path).is_dir():
            raise ValueError(f"{flag} {path} is not a directory; run `python run_pipeline.py` first (or pass another {flag})")
    if Path(args.run).resolve() == Path(args.reference).resolve():
        raise ValueError(f"--run and --reference are the same directory ({args.run}); pass the run's results root as --run")
    output = Path(args.output) if args.output else Path(args.run) / "comparison.json"
    if output.is_dir():
        raise ValueError(f"--output {output} is a directory; pass a file name")
    check_results_path(output.parent, "--output")
    record = compare.compare(args.reference, args.run)
    if not any(g["n"] for g in record["groups"].values()):
        raise ValueError(f"{args.run} and {args.reference} have no result in common; pass the roots run_pipeline.py writes")
    if args.every_field:
        record["every_field"] = compare.field_differences(args.reference, args.run)
    atomic_write_json(output, record)
    print(compare.table(record))
    if args.every_field:
        print(compare.field_table(record["every_field"]))
    print(f"wrote {output}")
    if args.update_reference:
        copied = compare.update_reference(args.run, args.reference)
        print(f"replaced {args.reference} with the {copied} result files of {args.run}")


if __name__ == "__main__":
    run_main(main)
