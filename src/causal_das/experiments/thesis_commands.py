"""The thesis README's command lines on this repository's scripts: what their paths and their
subcommand-less form mean here. Argument handling only; each script then runs its own code, the same
as for our own command lines (docs/differences.md#the-thesiss-command-lines).

The thesis ran `src/run_das.py`, then `evaluate_das.py --results_path results/` (a results root,
not a sweep), `visualizations.py --results_path disentangling_results/` (where the figures go) and
`disentangle_causal_models.py` without a subcommand (graphs with --model_path, the clique analysis
without). Here a sweep lives where run_das.py writes it by default, results/gpt2/das_<type>/."""

from __future__ import annotations

from pathlib import Path

from causal_das.runtime.io import read_json
from causal_das.tasks.arithmetic import FAMILIES

GPT2_RESULTS = Path("results/gpt2")  # where train_gpt2.py, run_das.py and visualizations.py write by default
GPT2_PARTS = ("das_arithmetic", "das_simple", "positions", "model")  # what a GPT-2 results directory holds


def sweeps_under(path: str | Path, families: tuple[str, ...]) -> tuple[list[Path], str | None]:
    """The run_das.py sweeps that an `evaluate_das.py --results_path` names, and a line saying so
    when it is not a sweep itself. A sweep directory (it holds summary.json) is itself; a results
    root is each family's sweep under it as run_pipeline.py lays them out: <path>/gpt2/das_<type>/
    (the thesis's `results/`) or <path>/das_<type>/ (`results/gpt2`). A path that is no directory
    is returned unchanged, so that the evaluation names what it misses."""
    path = Path(path)
    if (path / "summary.json").is_file() or not path.is_dir():
        return [path], None
    found = []
    for family in families:
        for candidate in (path / "gpt2" / f"das_{family}", path / f"das_{family}"):
            if (candidate / "summary.json").is_file():
                recorded = (read_json(candidate / "summary.json").get("config") or {}).get("causal_model_type")
                if recorded != family:
                    raise ValueError(f"{candidate} holds a sweep of the {recorded} causal models, not the {family} ones; "
                                     f"pass the sweep directory itself as --results_path")
                found.append(candidate)
                break
    if not found:
        sweeps = " or ".join(f"das_{family}/" for family in families)
        raise ValueError(f"{path} holds no run_das.py sweep: no summary.json, and no {sweeps} in it or in {path / 'gpt2'}; "
                         f"run run_das.py first")
    return found, f"{path} is a results root: evaluating the sweep{'s' if len(found) > 1 else ''} under it, {', '.join(map(str, found))}"


def holds_gpt2_results(path: Path) -> bool:
    return any((path / part).is_dir() for part in GPT2_PARTS)


def figure_paths(results_path: str | Path, sweeps_path: str | Path | None, family: str | None) -> tuple[Path, Path]:
    """(where visualizations.py writes its figures, where it reads the sweeps and the model's
    training record from). The figures go to --results_path. The results are read from
    --sweeps_path when given, else from --results_path or <results_path>/gpt2, the first that holds
    any (das_arithmetic/, das_simple/, positions/, model/): our layout keeps the figures beside the
    sweeps. Failing both, the thesis's form (--causal_model_type given) reads results/gpt2, where
    its sweep commands wrote: its --results_path disentangling_results/ is only where the figures
    go. Only that form falls back, so that a mistyped --results_path of ours still stops."""
    figures = Path(results_path)
    if figures.exists() and not figures.is_dir():
        raise ValueError(f"--results_path {figures} is not a directory")
    if sweeps_path is not None:
        if not Path(sweeps_path).is_dir():
            raise ValueError(f"--sweeps_path {sweeps_path} is not a directory; pass the directory holding das_arithmetic/ and das_simple/")
        return figures, Path(sweeps_path)
    for candidate in (figures, figures / "gpt2", *((GPT2_RESULTS,) if family else ())):
        if holds_gpt2_results(candidate):
            return figures, candidate
    if not figures.is_dir():
        raise ValueError(f"--results_path {figures} is not a directory; run run_pipeline.py (or run_das.py) first, or give "
                         f"--sweeps_path")
    return figures, figures  # each figure then names the file it misses


def check_graphs_family(results_path: str | Path, family: str) -> None:
    """`cliques --causal_model_type`: the graphs in results_path must be of that family's models
    (the cliques are those of every graph there). Without graphs.json, the analysis says so itself."""
    index = Path(results_path) / "graphs.json"
    if not index.is_file():
        return
    names = {m.name for m in FAMILIES[family]}
    others = [name for name in read_json(index).get("causal_models") or [] if name not in names]
    if others:
        raise ValueError(f"the graphs in {results_path} include {others[0]}, not a {family} causal model; build the {family} graphs "
                         f"(graphs --causal_model_type {family}) into another --results_path, or drop --causal_model_type")


def with_subcommand(argv: list[str], subcommands: tuple[str, ...]) -> tuple[list[str], str | None]:
    """disentangle_causal_models.py's arguments with the thesis's implicit subcommand made explicit,
    and a line saying which: without a subcommand, --model_path builds the graphs (the thesis: "36
    graphs weighted by the IIA") and its absence runs the clique analysis on graphs built before.
    Our own forms (a subcommand first, --help, or nothing at all) are returned unchanged."""
    if not argv or argv[0] in subcommands or argv[0] in ("-h", "--help"):
        return argv, None
    command = "graphs" if any(arg == "--model_path" or arg.startswith("--model_path=") for arg in argv) else "cliques"
    why = "with --model_path" if command == "graphs" else "without --model_path"
    return [command, *argv], f"no subcommand: running `{command}` (the thesis's form {why})"
