"""Multi-site DAS on the word hierarchical-equality language model: WX and YZ each at its own layer
and token, aligned together.

The tiny Llama of examples/word_equality_das.py (trained here, or reused with --model_dir) answers
"yes" when W = X and Y = Z agree. One alignment puts WX at layer --wx_layer on the token of
--wx_position (default: layer 0, X's token) and YZ at layer --yz_layer on the token of
--yz_position (default: layer 1, the last token), each with its own
k-dimensional rotation and its own source; both rotations train together on counterfactuals of
every intervened set. The IIA is reported with both variables intervened at once (a source each)
and with one at a time, beside the full patch of both sites, random rotations of the same sizes
and the network without intervention; and beside the same alignment with the two tokens swapped
(WX on YZ's token and YZ on WX's), a control for where the variables are.

    python examples/word_equality_multi_site.py                               # -> results/word_equality_multi_site/
    python examples/word_equality_multi_site.py --model_dir results/word_equality/model   # reuse word_equality_das.py's model
    python examples/word_equality_multi_site.py --quick --output_dir /tmp/wems   # a smoke run

Writes <output_dir>/results.json (the config, the language model's record, every evaluation).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from causal_das.causal_model import sample_counterfactuals
from causal_das.das import counterfactuals, multi_site, multi_site_evaluation
from causal_das.models import causal_lm_training, lm_multi_site, lm_site, prompts
from causal_das.runtime.cli import ArgumentParser, positive_float, positive_int, run_main
from causal_das.runtime.io import atomic_write_json, check_results_path, run_metadata
from causal_das.tasks import word_equality

POSITION_NAMES = ("W", "X", "Y", "Z", "last")


@dataclass(frozen=True)
class Config:
    output_dir: str = "results/word_equality_multi_site"
    model_dir: str = ""  # "" means <output_dir>/model
    # The language model: word_equality_das.py's defaults, so that its saved model is reused as is.
    width: int = 64
    n_layers: int = 4
    n_heads: int = 4
    lm_train: int = 8000
    lm_heldout: int = 1000
    lm_epochs: int = 15
    lm_lr: float = 3e-3
    wx_layer: int = 0
    wx_position: str = "X"
    yz_layer: int = 1
    yz_position: str = "last"
    k: int = 8
    n_train: int = 2000
    n_test: int = 1000
    das_epochs: int = 3
    das_lr: float = 0.01
    batch_size: int = 64
    seed: int = 0
    threads: int = 1
    quick: bool = False


# --quick: word_equality_das.py's --quick network (two layers) and less DAS data. Its layer 1 is its
# last, where only the last token reaches the head and carries the answer rather than YZ (measured:
# YZ there 0.59 against 0.87 at Z's token in layer 0), so YZ sits at Z's token in layer 0 there.
QUICK = dict(n_layers=2, lm_heldout=500, lm_epochs=10, n_train=1000, n_test=400, das_epochs=2, yz_layer=0, yz_position="Z")


def parse_args(argv=None) -> Config:
    d = Config()
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=d.output_dir, help="directory results.json and (by default) the model go to")
    parser.add_argument("--model_dir", default=d.model_dir, help="where the language model is saved and reused (default <output_dir>/model)")
    parser.add_argument("--width", type=positive_int, default=d.width, help="hidden size of the tiny Llama")
    parser.add_argument("--n_layers", type=positive_int, default=d.n_layers, help="decoder layers of the tiny Llama")
    parser.add_argument("--n_heads", type=positive_int, default=d.n_heads, help="attention heads (must divide --width)")
    parser.add_argument("--lm_train", type=positive_int, default=d.lm_train, help="training prompts drawn for the language model")
    parser.add_argument("--lm_heldout", type=positive_int, default=d.lm_heldout, help="held-out prompts (settings never trained on)")
    parser.add_argument("--lm_epochs", type=positive_int, default=d.lm_epochs, help="epochs of language-model training")
    parser.add_argument("--lm_lr", type=positive_float, default=d.lm_lr, help="peak learning rate of language-model training (AdamW)")
    parser.add_argument("--wx_layer", type=int, default=d.wx_layer, help="decoder layer of WX's site")
    parser.add_argument("--wx_position", choices=POSITION_NAMES, default=d.wx_position, help="token of WX's site")
    parser.add_argument("--yz_layer", type=int, default=d.yz_layer, help="decoder layer of YZ's site")
    parser.add_argument("--yz_position", choices=POSITION_NAMES, default=d.yz_position, help="token of YZ's site")
    parser.add_argument("--k", type=positive_int, default=d.k, help="dimensions of each variable's subspace")
    parser.add_argument("--n_train", type=positive_int, default=d.n_train, help="counterfactual training examples (all intervened sets)")
    parser.add_argument("--n_test", type=positive_int, default=d.n_test, help="counterfactual test examples of each test set")
    parser.add_argument("--das_epochs", type=positive_int, default=d.das_epochs, help="DAS training epochs")
    parser.add_argument("--das_lr", type=positive_float, default=d.das_lr, help="DAS learning rate (Adam)")
    parser.add_argument("--batch_size", type=positive_int, default=d.batch_size, help="batch size of DAS and language-model training")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the data, the language model and DAS")
    parser.add_argument("--threads", type=positive_int, default=d.threads, help="torch CPU threads (the model is tiny: one is fastest on a busy machine)")
    parser.add_argument("--quick", action="store_true", help=f"small sizes for a smoke test: {QUICK}; flags given explicitly still win")
    args = parser.parse_args(argv)
    given = {key: value for key, value in vars(args).items() if value != getattr(d, key)}
    config = Config(**{**asdict(d), **(QUICK if args.quick else {}), **given})
    if config.width % config.n_heads:
        raise ValueError(f"--n_heads {config.n_heads} must divide --width {config.width}")
    for flag in ("wx_layer", "yz_layer"):
        if not 0 <= getattr(config, flag) < config.n_layers:
            raise ValueError(f"--{flag} {getattr(config, flag)} is not a decoder layer of the {config.n_layers}-layer model (0..{config.n_layers - 1})")
    return config


def language_model(config: Config, model_dir: Path):
    """(model, tokenizer, training record): trained as word_equality_das.py trains it, or reused."""
    shape = causal_lm_training.LlamaShape(config.width, config.n_layers, config.n_heads, mlp=4 * config.width, seed=config.seed)
    training = causal_lm_training.LMTrainConfig(epochs=config.lm_epochs, batch_size=config.batch_size, lr=config.lm_lr, seed=config.seed)
    return causal_lm_training.train_or_load(
        model_dir,
        lambda: causal_lm_training.tiny_llama(word_equality.vocabulary(), shape),
        lambda: word_equality.language_examples(np.random.default_rng(config.seed), config.lm_train, config.lm_heldout),
        training, settings={"shape": asdict(shape), "lm_train": config.lm_train, "lm_heldout": config.lm_heldout},
    )


def main() -> None:
    import torch

    config = parse_args()
    torch.set_num_threads(config.threads)
    output_dir = check_results_path(config.output_dir, "--output_dir")
    model_dir = Path(config.model_dir) if config.model_dir else output_dir / "model"
    start = time.perf_counter()
    _, _, record = language_model(config, model_dir)
    print(f"language model: held-out accuracy {record['heldout_accuracy']:.3f} on {record['n_heldout']} unseen prompts ({model_dir})")

    model, tokenizer = causal_lm_training.load(model_dir)
    positions = {name: prompts.token_of(name) for name in "WXYZ"} | {"last": prompts.last_token()}
    encoder = prompts.PromptEncoder(tokenizer, word_equality.render, positions)
    answers = lm_site.answer_ids(tokenizer, word_equality.ANSWERS)
    causal = word_equality.causal_model()
    rng = np.random.default_rng(config.seed)
    # ---- multi-site DAS, through the public API --------------------------------------------------------
    network = lm_multi_site.LanguageModelMultiSite(model, encoder, answers=answers)
    sites = [multi_site.VariableSite("WX", config.wx_layer, (config.wx_position,), config.k),  # each variable: its layer, its token
             multi_site.VariableSite("YZ", config.yz_layer, (config.yz_position,), config.k)]
    train, both, each = counterfactuals.build_many([  # one table of prompts; one source per variable
        sample_counterfactuals(causal, word_equality.sampler(), config.n_train, rng),  # every intervened set
        sample_counterfactuals(causal, word_equality.sampler(), config.n_test, rng, subsets=[("WX", "YZ")]),  # both at once
        sample_counterfactuals(causal, word_equality.sampler(), config.n_test, rng, subsets=[("WX",), ("YZ",)]),  # one at a time
    ], encoder)
    das = multi_site.MultiSiteConfig(epochs=config.das_epochs, batch_size=config.batch_size, lr=config.das_lr, seed=config.seed)
    trained = multi_site.train_multi(network, sites, train, das)
    results = {name: multi_site_evaluation.evaluate_multi(network, trained, data, seed=config.seed) for name, data in (("both", both), ("each", each))}
    # ---- end of the block ---------------------------------------------------------------------------------

    # The control: the same alignment with the two tokens swapped (a different site for each variable).
    swapped = [replace(sites[0], positions=sites[1].positions), replace(sites[1], positions=sites[0].positions)]
    control = multi_site.train_multi(network, swapped, train, das, desc="multi-site DAS, tokens swapped")
    results["both_tokens_swapped"] = multi_site_evaluation.evaluate_multi(network, control, both, seed=config.seed)
    atomic_write_json(output_dir / "results.json", {
        "config": asdict(config), **run_metadata(),
        "language_model": {k: record[k] for k in ("heldout_accuracy", "n_train", "n_heldout", "settings")} | {"model_dir": str(model_dir)},
        "causal_model": {"name": causal.name, "variables": list(causal.intermediate), "answers": list(word_equality.ANSWERS)},
        "sites": trained.describe(), "history": trained.history, "seconds": time.perf_counter() - start, "evaluations": results,
    })
    print(f"{'test set':>20} {'DAS':>6} {'interval':>13} {'random':>6} {'full':>6} {'none':>6}  beats")
    for name, r in results.items():
        b = r["baselines"]
        print(f"{name:>20} {r['iia']:6.3f} [{r['interval']['low']:.3f}, {r['interval']['high']:.3f}] {b['random_subspace']['mean']:6.3f} "
              f"{b['full_patch']:6.3f} {b['network_no_intervention']:6.3f}  {r['verdict']['das_beats_baselines']}")
    print("one at a time:", {s: round(v, 3) for s, v in results["each"]["by_subset"].items()})
    print(f"wrote {output_dir / 'results.json'}")


if __name__ == "__main__":
    run_main(main)
