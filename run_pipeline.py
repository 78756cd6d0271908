"""The main job: every experiment on the default models, writing results/.

Runs, in order, each as its own script (exactly what you would type):
  1. reproduce_das_experiment.py             -> results/hierarchical_equality/
  2. mlp/pattern_matching_das.py             -> results/pattern_matching/
  3. mlp/wrong_causal_graph_ablation_study.py -> results/wrong_causal_graph_ablation/

    python run_pipeline.py                 # default sizes (about 2 minutes on 2 CPU cores)
    python run_pipeline.py --quick         # smoke test (seconds)
    python run_pipeline.py --engine pyvene # every DAS run through pyvene
"""

import subprocess
import sys
import time
from pathlib import Path

from causal_das.cli import ArgumentParser, run_main
from causal_das.io import check_results_path

ROOT = Path(__file__).resolve().parent
STEPS = (
    ("hierarchical_equality", "reproduce_das_experiment.py"),
    ("pattern_matching", "mlp/pattern_matching_das.py"),
    ("wrong_causal_graph_ablation", "mlp/wrong_causal_graph_ablation_study.py"),
)


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results_path", default="results", help="directory each experiment writes its subdirectory into")
    parser.add_argument("--engine", choices=("fast", "pyvene"), default="fast", help="DAS engine for every experiment")
    parser.add_argument("--seed", type=int, default=0, help="seed passed to every experiment")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    parser.add_argument("--only", nargs="+", choices=[name for name, _ in STEPS], help="run only these experiments")
    args = parser.parse_args()
    root = check_results_path(args.results_path)
    for name, script in STEPS:
        if args.only and name not in args.only:
            continue
        command = [sys.executable, str(ROOT / script), "--results_path", str(root / name), "--engine", args.engine, "--seed", str(args.seed)]
        if args.quick:
            command.append("--quick")
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        if subprocess.run(command, check=False).returncode != 0:
            raise ValueError(f"step {name} failed (its error is above); finished steps keep their results")
        print(f"== {name} done in {time.perf_counter() - start:.0f} s\n", flush=True)


if __name__ == "__main__":
    run_main(main)
