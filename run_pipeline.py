"""The main job: every experiment on the default models, writing results/.

Runs each step as its own script (exactly what you would type); on the CPU, steps that do not read
each other's results run side by side, sharing the cores (--jobs):
  1. reproduce_das_experiment.py              -> results/hierarchical_equality/
  2. mlp/pattern_matching_das.py              -> results/pattern_matching/
  3. mlp/wrong_causal_graph_ablation_study.py -> results/wrong_causal_graph_ablation/
  4. train_gpt2.py                            -> results/gpt2/model/
  5. run_das.py --causal_model_type arithmetic -> results/gpt2/das_arithmetic/
  6. run_das.py --causal_model_type simple     -> results/gpt2/das_simple/
  7. run_das.py --position_sets all 0 1 2 3 4 5 (six causal models, every baseline)
                                              -> results/gpt2/positions/
  8. evaluate_das.py (both sweeps, every causal model) -> results/gpt2/das_*/evaluation.json
  9. visualizations.py --experiment all       -> results/gpt2/{sanity_check,empirical,overview}.png
 10. disentangle_causal_models.py graphs / cliques / divide / classify / predict, on the arithmetic
     sweep's cells at layers 1, 6, 11         -> results/gpt2/disentangling/
     and on the position sweep's, each arithmetic model at its best site
                                              -> results/gpt2/disentangling_best_sites/
 11. cnn/train_cnn.py                         -> results/cnn/model/
 12. cnn/ellipse_das.py: circularity+colour at conv1 single-source (rows and flat views) and
     multi-source; each variable alone at conv1, conv2, conv3 and fc1 -> results/cnn/das/

 13. compare_results.py                      -> results/comparison.json: this run beside results/reference/

Not in the default run, `--only known_answer`: a GPT-2 trained with interchange intervention training
to implement (X+Y)+Z at block 2, token 3 where X <= 5 and X+(Y+Z) at block 4, token 4 where X > 5
(train_gpt2.py --induce), its position sweep, its graphs at the best sites and their division and
classification, which must find what was induced -> results/gpt2_known_answer/

Not in the default run either, `--only seeds`: the W-seed variation of the disentangling. For seeds
0, 1 and 2, the position sweep's arithmetic cells at all six tokens and every layer
(run_das.py --seed S), the graphs at each model's best site, cliques, division and classifier; then
disentangle_causal_models.py seeds compares them (sets, cliques, accuracy) -> results/gpt2/seeds/

    python run_pipeline.py                 # default sizes (about 19 minutes on 2 CPU cores)
    python run_pipeline.py --quick         # smoke test (about a minute); numbers are not meaningful
    python run_pipeline.py --engine pyvene # every DAS run through pyvene but the position sweep (much slower)
    python run_pipeline.py --base_model ~/models/tiny-llama --results_path results_llama   # your own decoder

Every result records the flags and the inputs it was made from, so a rerun reuses what is up to date
(a second run takes seconds), recomputes what an input change made stale (saying so, one line per
step) and resumes after an interruption. The committed reference (results/reference/) is never read
as a cache: the last step only compares with it.
"""

import argparse
import os
import runpy
import sys
import textwrap
import time
from pathlib import Path

# Before transformers is imported: its weight-loading bars for these tiny local models are noise.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from causal_das.runtime.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from causal_das.runtime.devices import add_device_flags  # noqa: E402
from causal_das.runtime.io import check_results_path  # noqa: E402
from causal_das.runtime.progress import INNER_BARS  # noqa: E402
from causal_das.runtime.scheduler import Step, available_cores, run_side_by_side  # noqa: E402

ROOT = Path(__file__).resolve().parent
TINY_GPT2 = ["--epochs", "3", "--width", "16", "--n_layers", "3", "--n_heads", "2"]
TINY_SWEEP = ["--layers", "0", "2", "--n_training", "512", "--n_testing", "400", "--batch_size", "128", "--epochs", "1"]
GRAPH_LAYERS = ["1", "6", "11"]  # early (best arithmetic IIA), middle, last: about 3 minutes of the budget
FAITHFULNESS = "0.8"
RESAMPLES = ["--resamples", "20"]  # how much each division set moves over 80% subsets of the triples (seconds)
# The position sweep: the arithmetic family and the three single-input models at every layer and
# token, at sizes that fit the main job (docs/experiments.md#where-each-variable-lives; flags give more).
POSITION_SETS = ["all", "0", "1", "2", "3", "4", "5"]
POSITION_MODELS = ["(X+Y)+Z", "(X+Z)+Y", "X+(Y+Z)", "(X)+Y+Z", "X+(Y)+Z", "X+Y+(Z)"]
POSITION_SIZES = ["--n_training", "1000", "--epochs", "2", "--n_testing", "1000"]
TINY_POSITIONS = ["--layers", "0", "2", "--n_training", "256", "--n_testing", "200", "--epochs", "1"]
EXAMPLE_TRIPLES = ["3,7,2", "10,1,4", "5,5,5"]
CONV_LAYERS = ["conv1", "conv2", "conv3"]  # fc1 has 3 units: its own step with 1 dimension
# Steps that spread their cells over one-thread worker processes (`--executor processes`) when they
# have more than one core to themselves on the CPU (measured faster on 2 cores:
# docs/engines.md#many-cells-in-one-pass).
SPREADS = {"gpt2_das_arithmetic", "gpt2_das_simple", "gpt2_positions", "graphs", "graphs_best_sites", "known_answer_positions", "known_answer_graphs",
           *(f"seeds_{step}_{seed}" for seed in (0, 1, 2) for step in ("sweep", "graphs"))}
ANALYSES = ("cliques", "divide", "classify", "predict")  # what follows each run of the graphs
NO_NETWORK = {"gpt2_figures", *ANALYSES, *(f"{name}_best_sites" for name in ANALYSES), "known_answer_divide", "known_answer_classify",
              "compare", *(f"seeds_{step}_{seed}" for seed in (0, 1, 2) for step in ("cliques", "divide", "classify")), "seeds_compare"}  # steps that read results only: no --device
ARITHMETIC = ["(X+Y)+Z", "(X+Z)+Y", "X+(Y+Z)"]
# The network with a known answer (--only known_answer): the inductions of train_gpt2.py --induce.
INDUCE = ["--induce", "(X+Y)+Z", "X+(Y+Z)", "--induce_where", "X<=5", "X>5"]
INDUCE_SITES, TINY_INDUCE_SITES = ["--induce_site", "L2:3", "L4:4"], ["--induce_site", "L0:3", "L1:4"]
KNOWN_ANSWER = ("known_answer_model", "known_answer_positions", "known_answer_graphs", "known_answer_divide", "known_answer_classify")
# The W-seed variation (--only seeds): each seed's sweep, graphs and analyses, then their comparison.
SEEDS = (0, 1, 2)
SEED_STEPS = tuple(f"seeds_{step}_{seed}" for seed in SEEDS for step in ("sweep", "graphs", "cliques", "divide", "classify")) + ("seeds_compare",)
CLIQUE_RESAMPLES = ["--resamples", "5"]  # how much the cliques move over 80% subsets of the triples (about 2 s a graph)
REFERENCE = ROOT / "results" / "reference"
# How --help lists the steps: by experiment, in the order of the list above (a test checks that
# every step is in exactly one group).
STEP_GROUPS = (
    ("MLP", lambda name: name in ("hierarchical_equality", "pattern_matching", "wrong_causal_graph_ablation")),
    ("GPT-2 network", lambda name: name == "gpt2_model"),
    ("GPT-2 sweeps", lambda name: name in ("gpt2_das_arithmetic", "gpt2_das_simple", "gpt2_evaluate", "gpt2_figures")),
    ("where each variable lives", lambda name: name == "gpt2_positions"),
    ("disentangling, arithmetic sweep", lambda name: name in ("graphs", *ANALYSES)),
    ("disentangling, best sites", lambda name: name.endswith("_best_sites")),
    ("ellipse CNN", lambda name: name.startswith("cnn_")),
    ("comparison with the reference", lambda name: name == "compare"),
    ("known answer (not in the default run; --only known_answer runs them all)", lambda name: name in KNOWN_ANSWER),
    ("seed variation (not in the default run; --only seeds runs them all)", lambda name: name in SEED_STEPS),
)


# What each step reads that another step writes: a step starts once these have finished.
NEEDS = {
    "gpt2_das_arithmetic": ("gpt2_model",),
    "gpt2_das_simple": ("gpt2_model",),
    "gpt2_positions": ("gpt2_model",),
    "gpt2_evaluate": ("gpt2_das_arithmetic", "gpt2_das_simple"),
    "gpt2_figures": ("gpt2_evaluate",),
    **{f"graphs{where}": (sweep,) for where, sweep in (("", "gpt2_das_arithmetic"), ("_best_sites", "gpt2_positions"))},
    **{f"{name}{where}": (f"{after}{where}",) for where in ("", "_best_sites")
       for name, after in (("cliques", "graphs"), ("divide", "graphs"), ("classify", "divide"), ("predict", "classify"))},
    **{name: ("cnn_model",) for name in ("cnn_single", "cnn_flat", "cnn_multi", "cnn_layers", "cnn_layers_fc1")},
    **dict(zip(KNOWN_ANSWER[1:], ((name,) for name in KNOWN_ANSWER), strict=False)),
    **{f"seeds_{step}_{seed}": (f"seeds_{after}_{seed}",) for seed in SEEDS
       for step, after in (("graphs", "sweep"), ("cliques", "graphs"), ("divide", "graphs"), ("classify", "divide"))},
    **{f"seeds_sweep_{seed}": ("gpt2_model",) for seed in SEEDS},
    "seeds_compare": tuple(f"seeds_{step}_{seed}" for seed in SEEDS for step in ("cliques", "classify")),
}
# The order in which steps that are ready start side by side: the longest chain (the GPT-2 network,
# its arithmetic sweep, the graphs) first, the short independent steps last, to fill the cores.
PRIORITY = ("gpt2_model", "gpt2_das_arithmetic", "graphs", "cliques", "divide", "classify", "predict", "cnn_model", "cnn_layers",
            "gpt2_positions", "graphs_best_sites", "cliques_best_sites", "divide_best_sites", "classify_best_sites", "predict_best_sites",
            "gpt2_das_simple", "gpt2_evaluate", "gpt2_figures", "cnn_multi", "cnn_flat", "cnn_single", "cnn_layers_fc1",
            "hierarchical_equality", "pattern_matching", "wrong_causal_graph_ablation", *KNOWN_ANSWER, *SEED_STEPS, "compare")


def steps(root: Path, quick: bool):
    """(name, script, arguments, takes --engine) for every step of the main job, in the order above."""
    mlp_quick = ["--quick"] if quick else []
    gpt2 = root / "gpt2"
    model = ["--model_path", str(gpt2 / "model")]
    analysis, best_sites = gpt2 / "disentangling", gpt2 / "disentangling_best_sites"
    sweep_quick = TINY_SWEEP if quick else []
    cnn = root / "cnn"
    cnn_quick = ["--quick"] if quick else []
    cnn_das = ["--model_path", str(cnn / "model"), "--results_path", str(cnn / "das"), *cnn_quick]
    ellipse_vars = ["circularity", "colour", "area"]
    return [
        ("hierarchical_equality", "reproduce_das_experiment.py", ["--results_path", str(root / "hierarchical_equality"), *mlp_quick], True),
        ("pattern_matching", "mlp/pattern_matching_das.py", ["--results_path", str(root / "pattern_matching"), *mlp_quick], True),
        ("wrong_causal_graph_ablation", "mlp/wrong_causal_graph_ablation_study.py",
         ["--results_path", str(root / "wrong_causal_graph_ablation"), *mlp_quick], True),
        ("gpt2_model", "train_gpt2.py", ["--output_dir", str(gpt2 / "model"), *(TINY_GPT2 if quick else [])], False),
        ("gpt2_das_arithmetic", "run_das.py",
         [*model, "--causal_model_type", "arithmetic", "--results_path", str(gpt2 / "das_arithmetic"), *sweep_quick], True),
        ("gpt2_das_simple", "run_das.py", [*model, "--causal_model_type", "simple", "--results_path", str(gpt2 / "das_simple"), *sweep_quick], True),
        ("gpt2_positions", "run_das.py",
         [*model, "--position_sets", *(POSITION_SETS[:3] if quick else POSITION_SETS), "--causal_models", *POSITION_MODELS,
          "--results_path", str(gpt2 / "positions"), *(TINY_POSITIONS if quick else POSITION_SIZES)], False),
        ("gpt2_evaluate", "evaluate_das.py",
         ["--results_path", str(gpt2 / "das_arithmetic"), str(gpt2 / "das_simple"), *(["--n_testing", "500"] if quick else [])], True),
        ("gpt2_figures", "visualizations.py", ["--experiment", "all", "--results_path", str(gpt2)], False),
        # --quick: the graphs of the last layer only (its suffix is the head), a third of the step's time.
        ("graphs", "disentangle_causal_models.py",
         ["graphs", "--sweep_path", str(gpt2 / "das_arithmetic"), "--results_path", str(analysis), "--layers", *(["2"] if quick else GRAPH_LAYERS)],
         False),
        *analyses("", analysis),
        ("graphs_best_sites", "disentangle_causal_models.py",
         ["graphs", "--sweep_path", str(gpt2 / "positions"), "--site", "best", "--causal_models", *ARITHMETIC,
          "--results_path", str(best_sites)], False),
        *analyses("_best_sites", best_sites),
        ("cnn_model", "cnn/train_cnn.py", ["--output_dir", str(cnn / "model"), *cnn_quick], False),
        ("cnn_single", "cnn/ellipse_das.py", [*cnn_das], True),
        ("cnn_flat", "cnn/ellipse_das.py", [*cnn_das, "--site_view", "flat"], True),
        ("cnn_multi", "cnn/ellipse_das.py", [*cnn_das, "--mode", "multi"], True),
        ("cnn_layers", "cnn/ellipse_das.py", [*cnn_das, "--variables", *ellipse_vars, "--layer", *(["conv1", "conv3"] if quick else CONV_LAYERS)], True),
        ("cnn_layers_fc1", "cnn/ellipse_das.py", [*cnn_das, "--variables", *ellipse_vars, "--layer", "fc1", "--intervention_size", "1"], True),
        ("compare", "compare_results.py", ["--run", str(root), "--reference", str(REFERENCE)], False),
        *known_answer(root / "gpt2_known_answer", quick),
        *seed_variation(gpt2, quick),
    ]


def known_answer(root: Path, quick: bool) -> list:
    """The steps of `--only known_answer` (see the module docstring)."""
    model = root / "model"
    return [
        ("known_answer_model", "train_gpt2.py",
         ["--output_dir", str(model), *INDUCE, *(TINY_INDUCE_SITES if quick else INDUCE_SITES), *(TINY_GPT2 if quick else [])], False),
        ("known_answer_positions", "run_das.py",
         ["--model_path", str(model), "--position_sets", *(POSITION_SETS[:3] if quick else POSITION_SETS), "--causal_models", *ARITHMETIC,
          "--results_path", str(root / "positions"), *(TINY_POSITIONS if quick else POSITION_SIZES)], False),
        ("known_answer_graphs", "disentangle_causal_models.py",
         ["graphs", "--sweep_path", str(root / "positions"), "--site", "best", "--results_path", str(root / "disentangling")], False),
        ("known_answer_divide", "disentangle_causal_models.py",
         ["divide", "--faithfulness", FAITHFULNESS, *RESAMPLES, "--results_path", str(root / "disentangling")], False),
        ("known_answer_classify", "disentangle_causal_models.py", ["classify", "--results_path", str(root / "disentangling")], False),
    ]


def seed_variation(gpt2: Path, quick: bool) -> list:
    """The steps of `--only seeds` (see the module docstring)."""
    root = gpt2 / "seeds"
    steps = []
    for seed in SEEDS:
        sweep, analysis = root / f"seed{seed}" / "positions", root / f"seed{seed}" / "disentangling"
        at = ["--results_path", str(analysis)]
        steps += [
            (f"seeds_sweep_{seed}", "run_das.py",
             ["--model_path", str(gpt2 / "model"), "--position_sets", "all", "--causal_models", *ARITHMETIC, "--seed", str(seed),
              "--results_path", str(sweep), *(TINY_POSITIONS if quick else POSITION_SIZES)], False),
            (f"seeds_graphs_{seed}", "disentangle_causal_models.py", ["graphs", "--sweep_path", str(sweep), "--site", "best", *at], False),
            (f"seeds_cliques_{seed}", "disentangle_causal_models.py", ["cliques", *CLIQUE_RESAMPLES, *at], False),
            (f"seeds_divide_{seed}", "disentangle_causal_models.py", ["divide", "--faithfulness", FAITHFULNESS, *RESAMPLES, *at], False),
            (f"seeds_classify_{seed}", "disentangle_causal_models.py", ["classify", *at], False),
        ]
    paths = [str(root / f"seed{seed}" / "disentangling") for seed in SEEDS]
    return [*steps, ("seeds_compare", "disentangle_causal_models.py", ["seeds", "--results_paths", *paths, "--output", str(root / "seeds.json")], False)]


def analyses(suffix: str, results: Path) -> list:
    """The steps after a run of the graphs, on its results directory."""
    commands = {"cliques": CLIQUE_RESAMPLES, "divide": ["--faithfulness", FAITHFULNESS, *RESAMPLES], "classify": [], "predict": EXAMPLE_TRIPLES}
    return [(f"{name}{suffix}", "disentangle_causal_models.py", [name, *commands[name], "--results_path", str(results)], False) for name in ANALYSES]


def steps_help(names: list[str]) -> str:
    """The --help epilog: the steps `--only` takes, once each, one group of them per paragraph."""
    lines = ["steps (--only STEP ...), by experiment:"]
    for title, member in STEP_GROUPS:
        group = [name for name in names if member(name)]
        if all(name in SEED_STEPS for name in group):  # 16 names: one pattern per step instead
            group = [*dict.fromkeys(name[:-1] + "S" if name[-1].isdigit() else name for name in group)]
            title += f"; S = {', '.join(map(str, SEEDS))}"
        lines += [f"  {title}:", textwrap.fill(", ".join(group), width=100, initial_indent=" " * 4, subsequent_indent=" " * 4)]
    return "\n".join(lines)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_step(script: str, arguments: list[str]) -> int:
    """Runs `python script arguments` in this process (as the bad-input tests do): the same argv,
    the same `__main__`, without paying torch's and transformers' import once per step. Returns
    its exit code."""
    argv = sys.argv
    sys.argv = [str(ROOT / script), *arguments]
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = argv
    return 0


def main():
    names = [name for name, *_ in steps(Path("results"), False)]
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], epilog=steps_help(names), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results_path", default="results", help="directory each experiment writes its subdirectory into")
    parser.add_argument("--engine", choices=("fast", "pyvene"), default="fast", help="DAS engine for every experiment")
    parser.add_argument("--seed", type=int, default=None, help="seed passed to every experiment (default: each script's own default)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    parser.add_argument("--base_model", default=None, metavar="PATH",
                        help="fine-tune this Hugging Face decoder (a directory saved with save_pretrained; any family "
                             "whose layers, final norm and head are found) instead of training the default GPT-2 from scratch; every GPT-2 step "
                             "then runs on it (the comparison with the reference, which is the default network's, is skipped)")
    parser.add_argument("--only", nargs="+", choices=[*names, "known_answer", "seeds"], metavar="STEP",
                        help="run only these steps (listed below); known_answer: the steps of the network with a known answer; "
                             "seeds: the W-seed variation of the best-site disentangling (both not in the default run)")
    add_device_flags(parser)
    parser.add_argument("--jobs", type=positive_int, default=None,
                        help="steps that run at once, side by side in child processes sharing the cores (default: as many as "
                             "the CPU has cores; 1 on a GPU); each step gets cores/jobs threads whatever runs beside it, because "
                             "another thread count gives other numbers in the last digits; 1 runs them one after another in this "
                             "process, with live progress bars and every core")
    args = parser.parse_args()
    root = check_results_path(args.results_path)
    os.environ[INNER_BARS] = "0"  # one progress bar per step
    on_cpu = args.device == "cpu" or (args.device == "auto" and not cuda_available())
    jobs = args.jobs or (available_cores() if on_cpu else 1)
    chosen = []
    for name, script, arguments, takes_engine in steps(root, args.quick):
        groups = {"known_answer": KNOWN_ANSWER, "seeds": ("gpt2_model", *SEED_STEPS)}  # seeds: the network is reused when trained
        wanted = set(args.only or ()).union(*(groups[g] for g in groups if g in (args.only or ())))
        if (args.only and name not in wanted) or (not args.only and name in (*KNOWN_ANSWER, *SEED_STEPS)):
            continue
        if name == "compare" and (args.quick or args.base_model or not REFERENCE.is_dir() or root.resolve() == REFERENCE.resolve()):
            why = ("--quick sizes are not comparable" if args.quick else "it is the default network's, not --base_model's" if args.base_model
                   else "it is this run" if REFERENCE.is_dir() else "it does not exist")
            print(f"== compare: skipped ({REFERENCE}: {why})", flush=True)
            continue
        if name == "gpt2_model" and args.base_model:  # the from-scratch sizes do not apply; --quick: one epoch
            arguments = [*arguments[:2], "--base_model", args.base_model, *(["--epochs", "1"] if args.quick else [])]
        if takes_engine:
            arguments = [*arguments, "--engine", args.engine]
        if args.seed is not None and name != "compare" and not name.startswith("seeds_"):  # the seed steps set their own
            arguments = [*arguments, "--seed", str(args.seed)]
        if name not in NO_NETWORK:
            arguments = [*arguments, "--device", args.device, "--precision", args.precision]
        chosen.append((name, script, arguments))
    started = time.perf_counter()
    if jobs > 1:
        names = [name for name, *_ in chosen]
        side_by_side = [Step(name, ROOT / script, tuple(arguments), tuple(n for n in names if n != name) if name == "compare" else NEEDS.get(name, ()), name in SPREADS)
                        for name, script, arguments in sorted(chosen, key=lambda step: PRIORITY.index(step[0]))]
        print(f"running up to {jobs} steps side by side on {available_cores()} cores; each step's progress is in {root / 'logs'}/",
              flush=True)
        run_side_by_side(side_by_side, available_cores(), root / "logs", ROOT, jobs)
    else:
        for name, script, arguments in chosen:
            if name in SPREADS and on_cpu:
                arguments = [*arguments, "--executor", "processes"]
            print(f"== {name}: {script} {' '.join(arguments)}", flush=True)
            start = time.perf_counter()
            if run_step(script, arguments) != 0:
                raise ValueError(f"step {name} failed (its error is above); finished steps keep their results")
            print(f"== {name} done in {time.perf_counter() - start:.0f} s\n", flush=True)
    print(f"main job finished in {(time.perf_counter() - started) / 60:.1f} minutes; results in {root}/")


if __name__ == "__main__":
    run_main(main)
