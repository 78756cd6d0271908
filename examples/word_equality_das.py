"""DAS on a small language model that answers hierarchical-equality questions written in words.

Four words W, X, Y, Z (colours) are written in one of four templates of different token lengths
("red red blue gray ?", "is red like red as blue is like gray ?", ...); a tiny Llama, trained here
in a few minutes on a CPU, answers "yes" when the two comparisons W = X and Y = Z agree, as the next
token. The causal model has two intermediate booleans, WX and YZ. At every decoder layer and at
each named position (the token holding W, X, Y or Z, and the last token), wherever it sits in the
prompt's template, DAS looks for a k-dimensional subspace per variable; each variable's IIA stands
beside the full patch, random subspaces of the same sizes and the network without intervention.

    python examples/word_equality_das.py                          # -> results/word_equality/
    python examples/word_equality_das.py --quick --output_dir /tmp/we   # a smoke run (about a minute)

Writes <output_dir>/results.json (the config, the language model's training record, every cell's
evaluation) and <output_dir>/iia_heatmap.png (layer x position, one panel per variable); the
language model is saved in <output_dir>/model (or --model_dir) and reused by a rerun.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from causal_das.causal_model import sample_counterfactuals
from causal_das.das import counterfactuals, engine, evaluation
from causal_das.models import causal_lm_training, lm_site, prompts
from causal_das.runtime.cli import ArgumentParser, positive_float, positive_int, run_main
from causal_das.runtime.io import atomic_write_json, check_results_path, run_metadata
from causal_das.tasks import word_equality

POSITION_NAMES = ("W", "X", "Y", "Z", "last")  # the token of each word, and the last token (defined in the DAS block)


@dataclass(frozen=True)
class Config:
    output_dir: str = "results/word_equality"
    model_dir: str = ""  # "" means <output_dir>/model
    width: int = 64
    n_layers: int = 4
    n_heads: int = 4
    lm_train: int = 8000
    lm_heldout: int = 1000
    lm_epochs: int = 15
    lm_lr: float = 3e-3
    positions: tuple[str, ...] = POSITION_NAMES
    k: int = 8
    n_train: int = 2000
    n_test: int = 1000
    das_epochs: int = 3
    das_lr: float = 0.01
    batch_size: int = 64
    seed: int = 0
    threads: int = 1
    quick: bool = False


# --quick: two layers, fewer steps, less DAS data; the network still answers >0.9 of unseen prompts.
QUICK = dict(n_layers=2, lm_heldout=500, lm_epochs=10, n_train=1000, n_test=400, das_epochs=2)


def parse_args() -> Config:
    d = Config()
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=d.output_dir, help="directory results.json, the heatmap and (by default) the model go to")
    parser.add_argument("--model_dir", default=d.model_dir, help="where the language model is saved and reused (default <output_dir>/model)")
    parser.add_argument("--width", type=positive_int, default=d.width, help="hidden size of the tiny Llama")
    parser.add_argument("--n_layers", type=positive_int, default=d.n_layers, help="decoder layers of the tiny Llama")
    parser.add_argument("--n_heads", type=positive_int, default=d.n_heads, help="attention heads (must divide --width)")
    parser.add_argument("--lm_train", type=positive_int, default=d.lm_train, help="training prompts drawn for the language model")
    parser.add_argument("--lm_heldout", type=positive_int, default=d.lm_heldout, help="held-out prompts (settings never trained on)")
    parser.add_argument("--lm_epochs", type=positive_int, default=d.lm_epochs, help="epochs of language-model training")
    parser.add_argument("--lm_lr", type=positive_float, default=d.lm_lr, help="peak learning rate of language-model training (AdamW)")
    parser.add_argument("--positions", nargs="+", choices=POSITION_NAMES, default=list(d.positions),
                        help="named positions to intervene at, one site each: the token of W, X, Y, Z, or the last token")
    parser.add_argument("--k", type=positive_int, default=d.k, help="dimensions of each variable's subspace")
    parser.add_argument("--n_train", type=positive_int, default=d.n_train, help="counterfactual training examples (all intervened sets)")
    parser.add_argument("--n_test", type=positive_int, default=d.n_test, help="counterfactual test examples per variable")
    parser.add_argument("--das_epochs", type=positive_int, default=d.das_epochs, help="DAS training epochs per cell")
    parser.add_argument("--das_lr", type=positive_float, default=d.das_lr, help="DAS learning rate (Adam)")
    parser.add_argument("--batch_size", type=positive_int, default=d.batch_size, help="batch size of DAS and language-model training")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the data, the language model and DAS")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help="torch CPU threads (0: torch's default); the model is tiny: on 2 idle cores 2 threads were 1.4x faster "
                             "per step, on busy ones 1 thread was about 10x faster (measured)")
    parser.add_argument("--quick", action="store_true", help=f"small sizes for a smoke test: {QUICK}")
    args = vars(parser.parse_args())
    config = Config(**{**args, "positions": tuple(dict.fromkeys(args["positions"]))})
    config = replace(config, **QUICK) if config.quick else config
    if config.threads < 0:
        raise ValueError(f"--threads {config.threads} must be 0 (torch's default) or a positive number")
    if config.width % config.n_heads:
        raise ValueError(f"--n_heads {config.n_heads} must divide --width {config.width}")
    if config.k > config.width // 2:
        raise ValueError(f"--k {config.k} is more than half the width {config.width}: two subspaces of k must fit in one token's vector")
    return config


def language_model(config: Config, model_dir: Path):
    """(model, tokenizer, training record): the tiny Llama saved in `model_dir`, trained there now
    unless it was with these settings."""
    shape = causal_lm_training.LlamaShape(config.width, config.n_layers, config.n_heads, mlp=4 * config.width, seed=config.seed)
    training = causal_lm_training.LMTrainConfig(epochs=config.lm_epochs, batch_size=config.batch_size, lr=config.lm_lr, seed=config.seed)
    return causal_lm_training.train_or_load(
        model_dir,
        lambda: causal_lm_training.tiny_llama(word_equality.vocabulary(), shape),
        lambda: word_equality.language_examples(np.random.default_rng(config.seed), config.lm_train, config.lm_heldout),
        training, settings={"shape": asdict(shape), "lm_train": config.lm_train, "lm_heldout": config.lm_heldout},
    )


def plot_heatmap(results: dict, path: Path) -> None:
    """Layer x position IIA, one panel per variable, each cell annotated with DAS / random subspace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, positions, variables = results["layers"], results["config"]["positions"], ("WX", "YZ")
    fig, axes = plt.subplots(1, len(variables), figsize=(1.3 * len(positions) * len(variables) + 1.5, 0.7 * len(layers) + 1.8))
    for axis, variable in zip(np.atleast_1d(axes), variables, strict=True):
        cells = [[results["cells"][f"L{layer}.{position}"][variable] for position in positions] for layer in layers]
        iia = np.array([[cell["iia"] for cell in row] for row in cells])
        image = axis.imshow(iia, vmin=0.5, vmax=1.0, cmap="viridis", origin="lower", aspect="auto")
        for i, row in enumerate(cells):
            for j, cell in enumerate(row):
                axis.text(j, i, f"{cell['iia']:.2f}\n({cell['baselines']['random_subspace']['mean']:.2f})", ha="center", va="center",
                          fontsize=7, color="white" if cell["iia"] < 0.8 else "black")
        axis.set(xticks=range(len(positions)), xticklabels=positions, yticks=range(len(layers)), yticklabels=layers,
                 xlabel="position", ylabel="layer", title=f"{variable}: DAS IIA (random subspace)")
    fig.colorbar(image, ax=axes, shrink=0.8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    config = parse_args()
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    output_dir = check_results_path(config.output_dir, "--output_dir")
    model_dir = Path(config.model_dir) if config.model_dir else output_dir / "model"
    start = time.perf_counter()
    _, _, record = language_model(config, model_dir)
    lm_seconds = time.perf_counter() - start
    print(f"language model: held-out accuracy {record['heldout_accuracy']:.3f} on {record['n_heldout']} unseen prompts ({model_dir})")

    # ---- DAS, through the public API: model + causal model + data + DAS + result -----------------
    model, tokenizer = causal_lm_training.load(model_dir)
    # Positions are functions of the prompt: token_of("X") is the token of X's word, in whichever template.
    positions = {name: prompts.token_of(name) for name in "WXYZ"} | {"last": prompts.last_token()}
    encoder = prompts.PromptEncoder(tokenizer, word_equality.render, positions)
    answers = lm_site.answer_ids(tokenizer, word_equality.ANSWERS)  # class i is the next token ANSWERS[i]
    causal = word_equality.causal_model()  # WX = (W == X), YZ = (Y == Z), O = (WX == YZ); T: the template
    rng = np.random.default_rng(config.seed)
    # Train on every intervened set; test each variable alone, so each has its own baselines.
    train, test_wx, test_yz = counterfactuals.build_many([  # one table of prompts; the bool O is the class
        sample_counterfactuals(causal, word_equality.sampler(), config.n_train, rng),
        sample_counterfactuals(causal, word_equality.sampler(), config.n_test, rng, subsets=[("WX",)]),
        sample_counterfactuals(causal, word_equality.sampler(), config.n_test, rng, subsets=[("YZ",)]),
    ], encoder)
    das = engine.DASConfig((config.k, config.k), epochs=config.das_epochs, batch_size=config.batch_size, lr=config.das_lr, seed=config.seed)
    cells = {}
    for layer in range(model.config.num_hidden_layers):
        for position in config.positions:
            site = lm_site.site(model, layer, encoder, position, answers=answers)
            trained = engine.train(site, train, das)
            cells[f"L{layer}.{position}"] = {
                "site": str(site.name), "layer": layer, "position": position,
                "WX": evaluation.evaluate(site, trained, test_wx, seed=config.seed),
                "YZ": evaluation.evaluate(site, trained, test_yz, seed=config.seed),
            }
    # ---- end of the DAS block -----------------------------------------------------------------------

    results = {
        "config": asdict(config), **run_metadata(), "layers": list(range(model.config.num_hidden_layers)),
        "language_model": {k: record[k] for k in ("heldout_accuracy", "n_train", "n_heldout", "config", "settings")}
        | {"final_train_accuracy": record["history"][-1]["train_accuracy"], "model_dir": str(model_dir)},
        "causal_model": {"name": causal.name, "variables": list(causal.intermediate), "answers": list(word_equality.ANSWERS)},
        "templates": list(word_equality.TEMPLATES),
        "seconds": {"language_model": lm_seconds, "das": time.perf_counter() - start - lm_seconds},
        "cells": cells,
    }
    atomic_write_json(output_dir / "results.json", results)
    print(f"{'cell':>10} {'var':>3} {'DAS':>6} {'random':>6} {'full':>6} {'none':>6}  beats")
    for name, cell in cells.items():
        for variable in ("WX", "YZ"):
            r, b = cell[variable], cell[variable]["baselines"]
            print(f"{name:>10} {variable:>3} {r['iia']:6.3f} {b['random_subspace']['mean']:6.3f} {b['full_patch']:6.3f} "
                  f"{b['network_no_intervention']:6.3f}  {r['verdict']['das_beats_baselines']}")
    plot_heatmap(json.loads((output_dir / "results.json").read_text()), output_dir / "iia_heatmap.png")
    print(f"wrote {output_dir / 'results.json'} and {output_dir / 'iia_heatmap.png'}")


if __name__ == "__main__":
    run_main(main)
