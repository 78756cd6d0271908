"""Is this code slower than an earlier commit? The main job's two heaviest kinds of step, run side by
side on the same trained network by the code of `--before` (a git worktree of that commit) and by
this checkout, in ABBA order so that drift of the machine's speed falls on both equally:

    python benchmarks/bench_versions.py --before 408ced8 --model results/gpt2/model

prints each run's seconds, the means and the ratio this / before per step. Both write to temporary
directories; nothing under results/ is touched. The numbers of the two runs are compared too (the
same cells' IIA), since a faster step that computes something else is no gain.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = {
    "sweep (layers 0 and 6)": ["--layers", "0", "6"],
    "position sweep (layer 1, 7 sets)": ["--position_sets", "all", "0", "1", "2", "3", "4", "5", "--layers", "1"],
}


def timed_run(tree: Path, model: str, flags: list[str], out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "TQDM_DISABLE": "1"}  # the tree's own package first
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(tree / "run_das.py"), "--model_path", model, "--results_path", str(out), *flags],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"run_das.py failed in {tree}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return time.perf_counter() - started


def own_iia(out: Path) -> dict:
    return {json.dumps([c.get("causal_model"), c.get("layer"), c.get("k"), c.get("position_set")]): c["iia_own_model"]
            for c in json.loads((out / "summary.json").read_text())["cells"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--model", default="results/gpt2/model", help="a trained X+Y+Z network (train_gpt2.py's output)")
    parser.add_argument("--rounds", type=int, default=1, help="ABBA rounds per step (each runs both versions twice)")
    args = parser.parse_args()
    if not (Path(args.model) / "training.json").is_file():
        sys.exit(f"--model {args.model}: no training.json there; train one with train_gpt2.py or pass --model")
    model = str(Path(args.model).resolve())
    with tempfile.TemporaryDirectory() as scratch:
        before = Path(scratch) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before), args.before], check=True)
        try:
            for step, flags in STEPS.items():
                seconds: dict[str, list[float]] = {"before": [], "this": []}
                results = {}
                for round_ in range(args.rounds):
                    for run, version in enumerate(("before", "this", "this", "before")):
                        out = Path(scratch) / f"{version}_{round_}_{run}"
                        seconds[version].append(timed_run(before if version == "before" else ROOT, model, flags, out))
                        results[version] = own_iia(out)
                        print(f"{step}: {version} {seconds[version][-1]:.1f} s", flush=True)
                mean = {v: sum(s) / len(s) for v, s in seconds.items()}
                same = "the same IIA in every cell" if results["before"] == results["this"] else "DIFFERENT IIA"
                print(f"== {step}: before {mean['before']:.1f} s, this {mean['this']:.1f} s, this / before {mean['this'] / mean['before']:.2f}; {same}")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)


if __name__ == "__main__":
    main()
