"""How often the position sweep's verdicts call a null cell real, and how often they find a planted
variable: the calibration of `studies.position_verdicts`, measured rather than assumed.

    python benchmarks/calibrate_verdicts.py                       # writes results/calibration/verdicts.json, prints a table
    python benchmarks/calibrate_verdicts.py --planted_seeds 3 --null_seeds 1 --layers 0 11 --cases planted "random init"   # minutes
    python benchmarks/calibrate_verdicts.py --planted_seeds 100 --null_seeds 8 --jobs 16   # a 16-core machine

Every sweep runs `arithmetic_positions.run_group` at the main job's sizes (1,000 training pairs x 2
epochs, 1,000 selection and 1,000 report pairs, 3 random draws) and judges its cells with
`position_verdicts.judge_cells` (paired McNemar tests, Holm over the sweep's cells at 0.05):

1. **planted** (`studies.planted_positions`): X+Y lives at layer 1, token 3 only; the (X+Y)+Z cells
   at 2 layers x 7 position sets, one sweep per seed (the seed draws the pairs and DAS's start).
   The home cell measures power; every single-token cell but the home is a null (11 per sweep).
2. **random init**: an untrained GPT-2 of the default shape (12 blocks x 48); nothing in it
   computes a sum, so every cell of the three arithmetic models is a null.
3. **shuffled labels**: the default GPT-2 trained on a random permutation of the 1000 triples'
   labels (no sum, partial sum or input variable exists in its answers); every cell a null.

Reported per case, on the report pairs (the verdict the summaries state) and on the selection pairs
(the verdict `graph_sites --site best` acts on): null cells called real (with a Wilson interval),
sweeps with any false "real" (what Holm bounds by 0.05), and for the planted network how often the
home is found. Each sweep is saved as it finishes (`<stem>_sweeps/` beside --out): an interrupted run
keeps what finished, a rerun with the same inputs reuses it, and more seeds add to it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

# One line per sweep says where it is; the bars of hundreds of tiny trainings would bury them.
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402

from causal_das.das import engine  # noqa: E402
from causal_das.das.evaluation import wilson_interval  # noqa: E402
from causal_das.experiments import arithmetic_positions as gp  # noqa: E402
from causal_das.runtime.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from causal_das.runtime.io import atomic_write_json, check_results_path, run_metadata  # noqa: E402
from causal_das.studies import arithmetic_decoder, position_verdicts  # noqa: E402
from causal_das.studies.arithmetic_network import Network  # noqa: E402
from causal_das.studies.planted_positions import HOME, Planted  # noqa: E402
from causal_das.tasks import arithmetic  # noqa: E402

SETS = ("all", "0", "1", "2", "3", "4", "5")
ARITHMETIC = ("(X+Y)+Z", "(X+Z)+Y", "X+(Y+Z)")
SIZES = dict(n_training=1000, n_selection=1000, n_testing=1000, epochs=2)  # the main job's position sweep


def say(message: str) -> None:
    print(f"[calibrate {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sweep(network, models: tuple[str, ...], layers, k: int, seed: int, tmp: Path, lr: float = 0.01) -> tuple[list, list, dict]:
    """(cell keys, records, claims) of one position sweep on `network`, judged as the main job judges."""
    config = gp.PositionSweepConfig(causal_models=models, control="none", seed=seed, lr=lr, results_path=str(tmp), **SIZES)
    keys, records = [], []
    with engine.frozen(network.model):
        for layer in layers:
            for position_set in SETS:
                group = [(m, layer, position_set) for m in models]
                out = gp.run_group(network, None, group, k, config, tmp, {key: {} for key in group}, {})
                keys += group
                records += [out[key] for key in group]
    verdicts, claims = position_verdicts.judge_cells(records)
    return keys, verdicts, claims


def default_network(seed: int, shuffled: bool, epochs: int, layers):
    """The default-shaped GPT-2: untrained, or trained on a permutation of the labels."""
    tokenizer = arithmetic_decoder.build_tokenizer()
    model = arithmetic_decoder.build_default_model(tokenizer, seed=seed)
    input_ids = arithmetic_decoder.encode_prompts(tokenizer)
    if shuffled:
        labels = np.random.default_rng(seed).permutation(arithmetic.LABELS)
        order = np.random.default_rng(seed + 1).permutation(arithmetic.N_TRIPLES)
        schedule = arithmetic_decoder.TrainingSchedule(epochs=epochs, seed=seed)
        history = arithmetic_decoder.train_classifier(model, input_ids, order[100:], order[:100], schedule, labels=labels)
        say(f"shuffled-label network seed {seed}: accuracy on its own (permuted) labels {history[-1]['train_accuracy']:.3f} on the "
            f"900 training triples, {history[-1]['heldout_accuracy']:.3f} on 100 held out")
    return Network.load(model.eval(), input_ids, list(layers))


CASES = ("planted", "random init", "shuffled labels")
SLUG = {"planted": "planted", "random init": "random_init", "shuffled labels": "shuffled"}


def sweep_inputs(case: str, args) -> dict:
    """What a sweep's verdicts depend on besides its seed: a saved sweep is reused only when these match."""
    inputs = {"case": case, "sizes": SIZES, "rule": position_verdicts.RULE, "level": position_verdicts.LEVEL,
              "adjustment": position_verdicts.ADJUSTMENT}
    if case != "planted":
        inputs["layers"] = list(args.layers)
    if case == "shuffled labels":
        inputs["shuffled_epochs"] = args.shuffled_epochs
    return inputs


def run_sweep(case: str, seed: int, args, scratch: str, threads: int | None = None) -> dict:
    """One sweep of one case, reduced to what the tallies need: each cell's key and its verdicts on the
    report and the selection pairs. `threads`: torch's threads in a worker process (None: as they are)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    tmp = Path(scratch) / f"{SLUG[case]}_{seed}"
    if case == "planted":
        keys, verdicts, _ = sweep(Planted(), ("(X+Y)+Z",), (0, 1), 2, seed, tmp, lr=0.05)
    else:
        network = default_network(seed, case == "shuffled labels", args.shuffled_epochs, args.layers)
        keys, verdicts, _ = sweep(network, ARITHMETIC, args.layers, gp.default_k(network.model.config.hidden_size), seed, tmp)
    # The threads are recorded, not an input: another count rounds differently, and either sweep is a fair sample.
    return {"seed": seed, "inputs": sweep_inputs(case, args), "threads": torch.get_num_threads(), "seconds": time.perf_counter() - started,
            "cells": [{"key": list(key), "real": v["alignment_real"], "real_on_selection": v["selection"]["alignment_real"],
                       "p_chance_adjusted": v["p_chance_adjusted"]} for key, v in zip(keys, verdicts, strict=True)]}


def is_null(case: str, key) -> bool:
    """Null cells: every cell of an untrained or permuted-label network; in the planted network every
    single-token cell but the home (its all-token cells contain the variable partly: neither)."""
    return case != "planted" or (key[2] != "all" and tuple(key[1:]) != HOME)


def tally(case: str, sweeps: list[dict]) -> dict:
    """Counts over the sweeps of one case, on the report pairs (the reported verdict) and on the
    selection pairs (the verdict `graph_sites --site best` acts on)."""
    out = {"case": case, "sweeps": len(sweeps), "seeds": [s["seed"] for s in sweeps]}
    for split, field in (("", "real"), ("selection_", "real_on_selection")):
        false = [sum(c[field] for c in s["cells"] if is_null(case, c["key"])) for s in sweeps]
        null_cells = sum(1 for s in sweeps for c in s["cells"] if is_null(case, c["key"]))
        with_false = sum(n > 0 for n in false)
        out |= {f"{split}null_cells": null_cells, f"{split}null_cells_real": sum(false),
                f"{split}null_rate": sum(false) / null_cells if null_cells else None,
                f"{split}null_rate_interval": list(wilson_interval(sum(false), null_cells)) if null_cells else None,
                f"{split}sweeps_with_a_false_real": with_false, f"{split}family_wise_rate": with_false / len(sweeps),
                f"{split}family_wise_interval": list(wilson_interval(with_false, len(sweeps)))}
        if case == "planted":
            home = ["(X+Y)+Z", *HOME]
            found = sum(any(c[field] for c in s["cells"] if c["key"] == home) for s in sweeps)
            out |= {f"{split}power": found / len(sweeps), f"{split}power_interval": list(wilson_interval(found, len(sweeps)))}
    return out


def saved_sweep(path: Path, inputs: dict) -> dict | None:
    """A sweep saved by an earlier run with the same inputs, or None (missing, unreadable or stale)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if saved.get("inputs") == inputs else None


def run_all(args, sweeps_dir: Path, scratch: str) -> dict[str, list[dict]]:
    """Every wanted sweep, each saved as it finishes (an interrupted run keeps the finished ones, and a
    rerun reuses them); `--jobs` runs them in that many processes."""
    wanted = [(case, seed) for case in CASES if case in args.cases
              for seed in range(args.planted_seeds if case == "planted" else args.null_seeds)]
    done, todo = {}, []
    for case, seed in wanted:
        path = sweeps_dir / f"{SLUG[case]}_{seed}.json"
        saved = saved_sweep(path, sweep_inputs(case, args))
        if saved is None:
            todo.append((case, seed))
        else:
            done[case, seed] = saved
    stale = sum((sweeps_dir / f"{SLUG[case]}_{seed}.json").exists() for case, seed in todo)
    say(f"{len(wanted)} sweeps: {len(done)} reused from {sweeps_dir}, {len(todo)} to run in {args.jobs} process(es)"
        + (f" ({stale} of them saved with other inputs: the rule, the sizes or the layers changed)" if stale else ""))
    todo.sort(key=lambda task: CASES.index(task[0]), reverse=True)  # the slow null networks first
    threads = max(1, (os.cpu_count() or 1) // args.jobs)  # each worker's share of the cores

    def finished(case: str, seed: int, record: dict) -> None:
        atomic_write_json(sweeps_dir / f"{SLUG[case]}_{seed}.json", record)
        done[case, seed] = record
        real = [c["key"] for c in record["cells"] if c["real"]]
        say(f"{case} seed {seed}: {len(real)} of {len(record['cells'])} cells real in {record['seconds']:.0f} s"
            + (f" ({', '.join(f'{m} L{layer}:{s}' for m, layer, s in real)})" if 0 < len(real) <= 4 else ""))

    if args.jobs == 1:
        for case, seed in todo:
            finished(case, seed, run_sweep(case, seed, args, scratch))
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_sweep, case, seed, args, scratch, threads): (case, seed) for case, seed in todo}
            for future in as_completed(futures):
                finished(*futures[future], future.result())
    return {case: [done[case, seed] for c, seed in wanted if c == case] for case in CASES if case in args.cases}


def table(report: dict) -> str:
    lines = ["case (split)                 sweeps  null cells  called real (95% interval)      sweeps with any  planted site found (95%)"]
    for row in report["cases"]:
        for split, name in (("", "report"), ("selection_", "selection")):
            low, high = row[f"{split}null_rate_interval"]
            power = row.get(f"{split}power")
            found = "" if power is None else f"{power:.2f} ({row[f'{split}power_interval'][0]:.2f}-{row[f'{split}power_interval'][1]:.2f})"
            lines.append(f"{row['case'] + ' (' + name + ')':<28} {row['sweeps']:>6} {row[f'{split}null_cells']:>11}  "
                         f"{row[f'{split}null_cells_real']:>4} = {row[f'{split}null_rate']:.4f} ({low:.4f}-{high:.4f})  "
                         f"{row[f'{split}sweeps_with_a_false_real']:>6} of {row['sweeps']:<4}  {found}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--planted_seeds", type=positive_int, default=20, help="sweeps of the planted network (seeds 0, 1, ...)")
    parser.add_argument("--null_seeds", type=positive_int, default=2, help="random-init and shuffled-label networks (one sweep each)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), metavar="CASE",
                        help=f"the cases measured (default all: {', '.join(repr(c) for c in CASES)})")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 4, 8, 11], help="layers of the null networks' sweeps")
    parser.add_argument("--shuffled_epochs", type=positive_int, default=200, help="training epochs of the shuffled-label networks")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="sweeps run side by side in as many processes, the cores shared among them (for a many-core machine)")
    parser.add_argument("--out", default="results/calibration/verdicts.json",
                        help="the JSON report; each sweep is saved beside it in <stem>_sweeps/ as it finishes, and reused by a rerun "
                             "with the same inputs")
    args = parser.parse_args(argv)
    bad = [layer for layer in args.layers if not 0 <= layer < arithmetic_decoder.DEFAULT_LAYERS]
    if bad:
        parser.error(f"--layers {bad}: the default GPT-2 has blocks 0..{arithmetic_decoder.DEFAULT_LAYERS - 1}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    check_results_path(out.parent, "--out")
    sweeps_dir = check_results_path(out.parent / f"{out.stem}_sweeps", "--out")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="calibrate_") as scratch:  # the sweeps' own cell files: not kept
        sweeps = run_all(args, sweeps_dir, scratch)
    report = {"experiment": "verdict_calibration", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "config": vars(args), "sizes": SIZES, "level": position_verdicts.LEVEL, "adjustment": position_verdicts.ADJUSTMENT,
              "rule": position_verdicts.RULE, "cases": [tally(case, runs) for case, runs in sweeps.items()],
              "sweep_seconds": sum(s["seconds"] for runs in sweeps.values() for s in runs), "seconds": time.perf_counter() - started,
              **run_metadata()}
    atomic_write_json(out, report)
    print(table(report))
    print(f"wrote {out} in {report['seconds']:.0f} s ({report['sweep_seconds']:.0f} s of sweeps, some reused or side by side)")
    return 0


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
