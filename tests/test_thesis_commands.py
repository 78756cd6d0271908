"""The thesis README's command lines, as written there with its machine-specific model path replaced
by ours (results/gpt2/model), run from a directory laid out as ours: a tiny GPT-2 at
results/gpt2/model and the two sweeps that the thesis's own `src/run_das.py` commands write.

Each command goes through its script's real parser with the thesis's exact flags and the first step
of its work: the sweep and the evaluation are stopped where they start computing (their full sizes
take hours), and checked to have got there with the thesis's sizes and our paths; the figures and the
clique analysis run whole. The IIA graphs' 999,000 pairs take minutes even on a one-block network,
so their correctness matrices are planted (tests/test_disentangling.py checks the real ones); the
rest of the graphs step, its model loading, selection and files, is real. Scripts run in-process
through `runpy`, exactly as `python script ...` would run them, to pay torch's import once."""

from __future__ import annotations

import contextlib
import io
import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from causal_das.analysis.graphs import same_intermediate
from causal_das.experiments import arithmetic_evaluation, arithmetic_sweep, iia_graphs
from causal_das.studies import arithmetic_cells
from causal_das.tasks.arithmetic import FAMILIES, N_TRIPLES, intermediate_values

ROOT = Path(__file__).resolve().parents[1]
MODEL = "results/gpt2/model"  # the thesis's /home/mpislar/LLM_causal_model_learning/models/trained_gpt2forseq
THESIS = {  # the thesis README's GPT-2 command lines (docs/differences.md#the-thesiss-command-lines)
    f"run_das_{family}": f"python3 src/run_das.py --model_path {MODEL} --causal_model_type {family} "
                         f"--n_training 256000 --n_testing 256 --batch_size 1280 --epochs 4"
    for family in ("arithmetic", "simple")
} | {
    f"evaluate_{family}": f"python3 evaluate_das.py --model_path {MODEL} --results_path results/ --n_testing 25600 "
                          f"--batch_size 256 --causal_model_type {family}"
    for family in ("simple", "arithmetic")
} | {
    "sanity_check": f"python3 visualizations.py --model_path {MODEL} --causal_model_type arithmetic "
                    f"--results_path disentangling_results/ --experiment sanity_check",
    "empirical": f"python3 visualizations.py --model_path {MODEL} --causal_model_type simple "
                 f"--results_path disentangling_results/ --experiment empirical",
    "graphs": f"python3 disentangle_causal_models.py --model_path {MODEL} --results_path disentangling_results/ "
              f"--causal_model_type arithmetic",
    "cliques": "python3 disentangle_causal_models.py --results_path disentangling_results/ --causal_model_type arithmetic",
}
TINY_GPT2 = ["--width", "16", "--n_layers", "1", "--n_heads", "2", "--epochs", "1"]
# Appended to the thesis's sweep command where it must finish (argparse: the last value wins).
SMALL_SWEEP = ["--layers", "0", "--low_rank_dims", "4", "--n_training", "64", "--n_testing", "32", "--batch_size", "32",
               "--epochs", "1", "--control", "none"]


class Started(Exception):
    """Raised where a command's computation starts: it got that far with these arguments."""


def argv(name: str) -> tuple[str, list[str]]:
    _, script, *args = shlex.split(THESIS[name])
    return script, args


def run_cli(script: str, args: list[str]) -> tuple[int, str, str]:
    """`python <script> <args>` in this process and the current directory; (exit code, stdout,
    stderr). Started propagates."""
    saved, out, err = sys.argv, io.StringIO(), io.StringIO()
    sys.argv = [str(ROOT / script), *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = saved
    return code, out.getvalue(), err.getvalue()


def run_ok(script: str, args: list[str]) -> str:
    code, out, err = run_cli(script, args)
    assert code == 0, err
    return out


def one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A directory laid out as ours: the tiny GPT-2, then each family's sweep made by the thesis's
    sweep command line (at small sizes) into its default place, results/gpt2/das_<type>/. Through
    the top-level run_das.py, which src/run_das.py runs (tested below), so that each later test
    fails for its own reason if src/run_das.py does not."""
    root = tmp_path_factory.mktemp("thesis")
    with contextlib.chdir(root):
        run_ok("train_gpt2.py", ["--output_dir", MODEL, *TINY_GPT2])
        for family in ("arithmetic", "simple"):
            _, args = argv(f"run_das_{family}")
            run_ok("run_das.py", [*args, *SMALL_SWEEP])
    return root


def beside(root: Path, tmp_path: Path) -> None:
    """tmp_path laid out as ours with root's network and nothing else, as the current directory."""
    (tmp_path / "results" / "gpt2").mkdir(parents=True)
    (tmp_path / MODEL).symlink_to(root / MODEL)


@pytest.fixture(scope="module")
def graphs(root) -> tuple[list, str]:
    """The thesis's graphs command run in `root` with planted correctness matrices (each graph as a
    network whose intervention changes nothing would give it); (the calls, stdout)."""
    calls = []

    def planted(network, site, trained, causal_models, **_):
        calls.append((str(site.name), [m.name for m in causal_models], len(trained)))
        return [same_intermediate(intermediate_values(m)) | np.eye(N_TRIPLES, dtype=bool) for m in causal_models]

    with contextlib.chdir(root), pytest.MonkeyPatch.context() as patch:
        patch.setattr(iia_graphs, "correct_matrices", planted)
        out = run_ok(*argv("graphs"))
    return calls, out


@pytest.mark.parametrize("family", ["arithmetic", "simple"])
def test_src_run_das_is_run_das_with_the_thesis_sizes(root, tmp_path, monkeypatch, family):
    """`python3 src/run_das.py ...` exists and runs the top-level script: the same config, and the
    sweep starts training with the thesis's 256,000 pairs at batch 1280 for 4 epochs."""
    beside(root, tmp_path)
    monkeypatch.chdir(tmp_path)
    started = {}

    def first_layer(network, control, group, train_ids, test_ids, config, *rest):
        started[config.results_path] = (config, len(train_ids), len(test_ids), sorted({key[0] for key in group}))
        raise Started

    monkeypatch.setattr(arithmetic_sweep, "run_group", first_layer)
    script, args = argv(f"run_das_{family}")
    runs = {}
    for path in (script, "run_das.py"):
        with pytest.raises(Started):
            run_cli(path, args)
        runs[path] = started.pop(f"results/gpt2/das_{family}")
    assert runs[script][0] == runs["run_das.py"][0]
    config, n_train, n_test, models = runs[script]
    assert (config.model_path, config.causal_model_type) == (MODEL, family)
    assert (config.n_training, config.n_testing, config.batch_size, config.epochs) == (256_000, 256, 1280, 4)
    assert (n_train, n_test) == (256_000, 256)
    assert models == sorted(m.name for m in FAMILIES[family])


def test_src_run_das_writes_the_sweep_run_das_writes(root, tmp_path, monkeypatch):
    """To the end, at small sizes: the same cells, IIA and W as the top-level script's, in the place
    the thesis's evaluation reads."""
    beside(root, tmp_path)
    monkeypatch.chdir(tmp_path)
    script, args = argv("run_das_arithmetic")
    run_ok(script, [*args, *SMALL_SWEEP])
    ours, theirs = (json.loads((where / "results/gpt2/das_arithmetic/summary.json").read_text()) for where in (tmp_path, root))
    assert ours["config"] == theirs["config"] and ours["config"]["model_path"] == MODEL
    assert [(c["causal_model"], c["layer"], c["k"], c["iia_own_model"]) for c in ours["cells"]] == \
           [(c["causal_model"], c["layer"], c["k"], c["iia_own_model"]) for c in theirs["cells"]]
    weights = "results/gpt2/das_arithmetic/interventions/{}/weights.safetensors".format(arithmetic_cells.cell_name("(X+Y)+Z", 0, 4))
    assert (tmp_path / weights).read_bytes() == (root / weights).read_bytes()


@pytest.mark.parametrize("family", ["simple", "arithmetic"])
def test_evaluate_das_results_root_means_the_sweep_of_that_type(root, monkeypatch, family):
    """`--results_path results/` evaluates results/gpt2/das_<type>/ against that family, with the
    thesis's 25,600 pairs at batch 256; at 64 pairs it writes the sweep's evaluation.json."""
    monkeypatch.chdir(root)
    seen = {}

    def first_layer(network, model, results_path, positions, group, test_ids, models, engine_name, batch_size):
        seen.update(path=str(results_path), pairs=len(test_ids), models=[m.name for m in models], batch_size=batch_size)
        raise Started

    script, args = argv(f"evaluate_{family}")
    with monkeypatch.context() as patch:
        patch.setattr(arithmetic_evaluation, "_evaluate_group", first_layer)
        with pytest.raises(Started):
            run_cli(script, args)
    assert seen == {"path": f"results/gpt2/das_{family}", "pairs": 25_600, "models": [m.name for m in FAMILIES[family]], "batch_size": 256}
    out = run_ok(script, [*args, "--n_testing", "64"])
    assert f"evaluating the sweep under it, results/gpt2/das_{family}" in out
    record = json.loads((root / "results" / "gpt2" / f"das_{family}" / "evaluation.json").read_text())
    assert record["test_models"] == [m.name for m in FAMILIES[family]] and record["pairs"]["n"] == 64


def test_a_results_root_or_a_sweep_names_its_sweeps(root, monkeypatch):
    from causal_das.experiments import thesis_commands

    monkeypatch.chdir(root)
    both = ("arithmetic", "simple")
    assert thesis_commands.sweeps_under("results/", both)[0] == [Path("results/gpt2/das_arithmetic"), Path("results/gpt2/das_simple")]
    assert thesis_commands.sweeps_under("results/gpt2", ("simple",))[0] == [Path("results/gpt2/das_simple")]
    assert thesis_commands.sweeps_under("results/gpt2/das_simple", both) == ([Path("results/gpt2/das_simple")], None)
    assert thesis_commands.sweeps_under("nowhere", both) == ([Path("nowhere")], None)  # the evaluation names it
    with pytest.raises(ValueError, match="holds no run_das.py sweep"):
        thesis_commands.sweeps_under("results/gpt2/model", both)


@pytest.mark.parametrize(("name", "figure"), [("sanity_check", "sanity_check.png"), ("empirical", "empirical.png")])
def test_visualizations_draws_the_sweeps_into_the_thesis_results_path(root, monkeypatch, name, figure):
    monkeypatch.chdir(root)
    before = sorted(p.name for p in (root / "results" / "gpt2").iterdir())
    out = run_ok(*argv(name))
    assert (root / "disentangling_results" / figure).stat().st_size > 1000
    assert sorted(p.name for p in (root / "results" / "gpt2").iterdir()) == before  # the sweeps are only read
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "--model_path" in notes[0] and "changes nothing" in notes[0], out
    assert "reading the results in results/gpt2; the figures go to disentangling_results" in out


def test_visualizations_refuses_a_family_its_figure_does_not_draw(root, monkeypatch):
    monkeypatch.chdir(root)
    code, _, err = run_cli("visualizations.py", ["--causal_model_type", "simple", "--results_path", "figures", "--experiment", "sanity_check"])
    one_line_error(code, err, "draws the arithmetic sweep")
    # Only the thesis's form reads results/gpt2 for a --results_path without results: ours stops.
    code, _, err = run_cli("visualizations.py", ["--results_path", "figures", "--experiment", "sanity_check"])
    one_line_error(code, err, "--results_path figures is not a directory")
    assert not (root / "figures").exists()


def test_disentangle_without_subcommand_and_with_model_path_builds_the_graphs(root, graphs):
    calls, out = graphs
    assert "running `graphs`" in out
    arithmetic = [m.name for m in FAMILIES["arithmetic"]]
    assert [(models, n) for _, models, n in calls] == [(arithmetic, 3)] and ".L0" in calls[0][0], calls
    index = json.loads((root / "disentangling_results" / "graphs.json").read_text())
    assert (index["sweep"], index["causal_models"], index["layers"], index["k"]) == ("results/gpt2/das_arithmetic", arithmetic, [0], 4)


def test_disentangle_without_subcommand_or_model_path_analyses_the_cliques(root, graphs, monkeypatch):
    monkeypatch.chdir(root)
    out = run_ok(*argv("cliques"))
    assert "running `cliques`" in out
    record = json.loads((root / "disentangling_results" / "cliques.json").read_text())
    assert sorted(row["causal_model"] for row in record["graphs"]) == sorted(m.name for m in FAMILIES["arithmetic"])
    code, _, err = run_cli("disentangle_causal_models.py", ["--results_path", "disentangling_results/", "--causal_model_type", "simple"])
    one_line_error(code, err, "not a simple causal model")


def test_the_thesis_form_is_our_subcommand():
    from causal_das.experiments import thesis_commands

    subcommands = ("graphs", "cliques")
    assert thesis_commands.with_subcommand(["--model_path", "m", "--results_path", "r"], subcommands)[0] == ["graphs", "--model_path", "m",
                                                                                                        "--results_path", "r"]
    assert thesis_commands.with_subcommand(["--results_path", "r"], subcommands)[0] == ["cliques", "--results_path", "r"]
    for ours in (["graphs", "--model_path", "m"], ["--help"], []):
        assert thesis_commands.with_subcommand(ours, subcommands) == (ours, None)


def test_run_pipeline_help_lists_each_step_once_grouped():
    code, out, _ = run_cli("run_pipeline.py", ["--help"])
    assert code == 0
    from importlib import util

    spec = util.spec_from_file_location("pipeline", ROOT / "run_pipeline.py")
    pipeline = util.module_from_spec(spec)
    spec.loader.exec_module(pipeline)
    names = [name for name, *_ in pipeline.steps(Path("results"), False)]
    for name in names:
        shown = re.sub(r"_\d$", "_S", name) if name in pipeline.SEED_STEPS else name
        assert len(re.findall(rf"(?<![\w-]){re.escape(shown)}(?!\w)", out)) == 1, (shown, out)
    for name in names:  # every step in exactly one group
        assert sum(member(name) for _, member in pipeline.STEP_GROUPS) == 1, name


def test_the_docs_table_lists_every_thesis_command():
    table = (ROOT / "docs" / "differences.md").read_text()
    for command in THESIS.values():
        assert f"`{command}`" in table, command
