"""How often the position sweep's verdicts call a null cell real, and how often they find a planted
variable: the calibration of `studies.position_verdicts`, measured rather than assumed.

    python benchmarks/calibrate_verdicts.py                       # writes results/calibration/verdicts.json, prints a table
    python benchmarks/calibrate_verdicts.py --planted_seeds 3 --null_seeds 1 --layers 0 11 --skip_shuffled   # a few minutes

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

Reported per case: sweeps, cells, null cells called real (with a Wilson interval), sweeps with any
false "real" (what Holm bounds by 0.05), and for the planted network how often the home is found.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
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


def tally(name: str, sweeps: list[tuple[list, list]], is_null, home=None) -> dict:
    """Counts over the sweeps of one case: null cells called real, sweeps with any, the home found."""
    null_real = null_cells = sweeps_with_false = found = 0
    for keys, verdicts in sweeps:
        false = sum(v["alignment_real"] for key, v in zip(keys, verdicts, strict=True) if is_null(key))
        null_cells += sum(1 for key in keys if is_null(key))
        null_real += false
        sweeps_with_false += false > 0
        if home is not None:
            found += any(v["alignment_real"] for key, v in zip(keys, verdicts, strict=True) if key == home)
    out = {"case": name, "sweeps": len(sweeps), "null_cells": null_cells, "null_cells_real": null_real,
           "null_rate": null_real / null_cells if null_cells else None,
           "null_rate_interval": list(wilson_interval(null_real, null_cells)) if null_cells else None,
           "sweeps_with_a_false_real": sweeps_with_false, "family_wise_rate": sweeps_with_false / len(sweeps),
           "family_wise_interval": list(wilson_interval(sweeps_with_false, len(sweeps)))}
    if home is not None:
        out.update(power=found / len(sweeps), power_interval=list(wilson_interval(found, len(sweeps))))
    return out


def planted_case(seeds: int, tmp: Path) -> dict:
    planted, sweeps = Planted(), []
    for seed in range(seeds):
        keys, verdicts, _ = sweep(planted, ("(X+Y)+Z",), (0, 1), 2, seed, tmp, lr=0.05)
        sweeps.append((keys, verdicts))
        say(f"planted seed {seed}: home real {dict(zip(keys, verdicts, strict=True))[('(X+Y)+Z', *HOME)]['alignment_real']}, "
            f"{sum(v['alignment_real'] for v in verdicts)} of {len(keys)} cells real")
    return tally("planted", sweeps, lambda key: key[2] != "all" and key[1:] != HOME, home=("(X+Y)+Z", *HOME))


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


def null_case(name: str, seeds: int, layers, tmp: Path, shuffled: bool, epochs: int) -> dict:
    sweeps = []
    for seed in range(seeds):
        network = default_network(seed, shuffled, epochs, layers)
        keys, verdicts, _ = sweep(network, ARITHMETIC, layers, gp.default_k(network.model.config.hidden_size), seed, tmp)
        sweeps.append((keys, verdicts))
        say(f"{name} seed {seed}: {sum(v['alignment_real'] for v in verdicts)} of {len(keys)} cells real")
    return tally(name, sweeps, lambda key: True)


def table(report: dict) -> str:
    lines = ["case              sweeps  null cells  called real (95% interval)      sweeps with any  power (95% interval)"]
    for row in report["cases"]:
        low, high = row["null_rate_interval"]
        power = "" if "power" not in row else f"{row['power']:.2f} ({row['power_interval'][0]:.2f}-{row['power_interval'][1]:.2f})"
        lines.append(f"{row['case']:<17} {row['sweeps']:>6} {row['null_cells']:>11}  {row['null_cells_real']:>4} = {row['null_rate']:.4f} "
                     f"({low:.4f}-{high:.4f})  {row['sweeps_with_a_false_real']:>6} of {row['sweeps']:<4}  {power}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--planted_seeds", type=positive_int, default=20, help="sweeps of the planted network (one per seed)")
    parser.add_argument("--null_seeds", type=positive_int, default=2, help="random-init and shuffled-label networks (one sweep each)")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 4, 8, 11], help="layers of the null networks' sweeps")
    parser.add_argument("--shuffled_epochs", type=positive_int, default=200, help="training epochs of the shuffled-label networks")
    parser.add_argument("--skip_shuffled", action="store_true", help="leave out the shuffled-label networks (their training takes minutes)")
    parser.add_argument("--out", default="results/calibration/verdicts.json", help="the JSON report")
    args = parser.parse_args(argv)
    bad = [layer for layer in args.layers if not 0 <= layer < arithmetic_decoder.DEFAULT_LAYERS]
    if bad:
        parser.error(f"--layers {bad}: the default GPT-2 has blocks 0..{arithmetic_decoder.DEFAULT_LAYERS - 1}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    check_results_path(out.parent, "--out")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="calibrate_") as scratch:  # the sweeps' own cell files: not kept
        tmp = Path(scratch)
        cases = [planted_case(args.planted_seeds, tmp / "planted"),
                 null_case("random init", args.null_seeds, args.layers, tmp / "random_init", False, args.shuffled_epochs)]
        if not args.skip_shuffled:
            cases.append(null_case("shuffled labels", args.null_seeds, args.layers, tmp / "shuffled", True, args.shuffled_epochs))
    report = {"experiment": "verdict_calibration", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "config": vars(args), "sizes": SIZES, "level": position_verdicts.LEVEL, "adjustment": position_verdicts.ADJUSTMENT,
              "rule": position_verdicts.RULE, "cases": cases, "seconds": time.perf_counter() - started, **run_metadata()}
    atomic_write_json(out, report)
    print(table(report))
    print(f"wrote {out} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
