"""Teaching a causal language model to answer prompts with one next token; task-agnostic.

A task gives prompts (text) and answers (one token each); the model learns that the next token
after each prompt is its answer. Only the last real token of a prompt carries a loss: the prompts
are given, not predicted, and the answer is what a DAS site's causal-LM head later reads.

Prompts of different lengths are padded into one batch. Every forward pass here passes the
attention mask and explicit position ids `cumsum(mask) - 1` (`lm_site`'s, which the DAS site passes
too), so a token's representation does not depend on how much padding its batch needed, nor on
which side the tokenizer pads: the same prompt gives the same logits alone, right-padded or
left-padded (what DAS relies on when a base and its source are written in templates of different
lengths).

`build_llama` / `tiny_llama` make a tiny `LlamaForCausalLM` (with a word-level tokenizer) to train
from scratch offline; `train_next_token` trains or fine-tunes any Hugging Face causal LM (AdamW,
linear warm-up and decay, gradient clipping, seeded batches through `training.fit`);
`train_and_save` / `load` keep the result with `save_pretrained` next to a JSON record of how it
was trained, and `train_or_load` reuses it when a rerun asks for the same settings.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from causal_das.das.training import DivergenceGuard
from causal_das.models.lm_site import last_real, position_ids
from causal_das.models.training import adam, check_model_directory, fit
from causal_das.runtime.io import atomic_write_json

log = logging.getLogger(__name__)

PAD = "[PAD]"
RECORD = "training.json"  # how the saved model was trained, next to its weights


def word_tokenizer(words: Sequence[str]):
    """A word-level tokenizer: the prompt is split on whitespace, id 0 is the pad token, ids 1.. are
    `words` in order; a `PreTrainedTokenizerFast`, so it saves and loads like a pretrained one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if len(set(words)) != len(words) or PAD in words:
        raise ValueError(f"the words must be distinct and must not include the pad token {PAD}")
    vocab = {PAD: 0, **{word: i for i, word in enumerate(words, 1)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD)


@dataclass(frozen=True)
class LlamaShape:
    """A tiny Llama: `n_layers` decoder layers of width `width`, `n_heads` heads, an MLP of `mlp`."""

    width: int = 64
    n_layers: int = 4
    n_heads: int = 4
    mlp: int = 256
    max_positions: int = 64
    # Hugging Face's default initializer_range, 0.02, is made for widths in the thousands: at width 64
    # it leaves attention nearly uniform, and word hierarchical equality stayed near chance for about
    # 1000 steps (measured); at 0.1 it left chance after about 300.
    init_std: float = 0.1
    seed: int = 0


def build_llama(tokenizer, shape: LlamaShape):
    """A freshly initialised `LlamaForCausalLM` over `tokenizer`'s vocabulary (Hugging Face's init)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if shape.width % shape.n_heads:
        raise ValueError(f"width {shape.width} must be a multiple of n_heads {shape.n_heads}")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=shape.width, intermediate_size=shape.mlp,
        num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads, num_key_value_heads=shape.n_heads,
        max_position_embeddings=shape.max_positions, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, eos_token_id=None, tie_word_embeddings=False, initializer_range=shape.init_std,
    )
    torch.manual_seed(shape.seed)
    return LlamaForCausalLM(config)


def tiny_llama(words: Sequence[str], shape: LlamaShape):
    """(a freshly initialised tiny Llama, its word-level tokenizer) for prompts written in `words`."""
    tokenizer = word_tokenizer(words)
    return build_llama(tokenizer, shape), tokenizer


def encode(tokenizer, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded token ids and attention mask, both (n, longest prompt), on the tokenizer's padding side."""
    if tokenizer.pad_token is None:
        raise ValueError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token) to batch prompts")
    batch = tokenizer(list(prompts), add_special_tokens=False, padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def answer_ids(tokenizer, answers: Sequence[str]) -> torch.Tensor:
    """(n,) the token id of every answer; ValueError naming an answer that is not one token."""
    ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    bad = sorted({a for a, row in zip(answers, ids, strict=True) if len(row) != 1})
    if bad:
        raise ValueError(f"answers must be single tokens; these are not: {bad[:5]}")
    return torch.tensor([row[0] for row in ids], dtype=torch.long)


def next_token_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n, vocab) the logits of the token after each prompt."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits  # (n, T, vocab)
    return logits[torch.arange(len(ids), device=ids.device), last_real(mask)]


@torch.no_grad()
def accuracy(model, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, batch_size: int = 512) -> float:
    """How often the argmax over the whole vocabulary after the prompt is the answer."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(ids), batch_size):
        logits = next_token_logits(model, ids[i : i + batch_size].to(device), mask[i : i + batch_size].to(device))
        correct += int((logits.argmax(-1).cpu() == targets[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(ids), 1)


@dataclass(frozen=True)
class LMTrainConfig:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.1  # against memorising the prompts: a tiny model can learn every one by heart
    warmup_fraction: float = 0.05
    max_grad_norm: float = 1.0
    seed: int = 0


Examples = tuple[Sequence[str], Sequence[str]]  # (prompts, answers), one answer token per prompt


def train_next_token(model, tokenizer, train: Examples, heldout: Examples, config: LMTrainConfig) -> list[dict]:
    """Trains `model` (any Hugging Face causal LM) so that the next token after each training prompt is
    its answer: cross-entropy over the whole vocabulary at the last real token only. Returns one record
    per epoch: loss, and the accuracy on the training and on the held-out examples."""
    from transformers import get_linear_schedule_with_warmup

    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in encode(tokenizer, train[0]))
    targets = answer_ids(tokenizer, train[1])
    heldout_ids, heldout_mask = encode(tokenizer, heldout[0])
    heldout_targets = answer_ids(tokenizer, heldout[1])
    targets_on_device = targets.to(device)
    total = config.epochs * math.ceil(len(ids) / config.batch_size)
    optimizer = adam(model.parameters(), config.lr, config.weight_decay)
    history: list[dict] = []

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        # Every batch is as wide as the longest prompt: trimming it would cost a host sync per step.
        return nn.functional.cross_entropy(next_token_logits(model, ids[idx], mask[idx]), targets_on_device[idx])

    def after_epoch(epoch: int, loss) -> dict:
        history.append({
            "epoch": epoch,
            "loss": loss.per_example,
            "train_accuracy": accuracy(model, ids, mask, targets),
            "heldout_accuracy": accuracy(model, heldout_ids, heldout_mask, heldout_targets) if len(heldout_ids) else None,
        })
        log.info("epoch %d: %s", epoch, history[-1])
        return {"loss": f"{loss.per_example:.3f}", "heldout": f"{history[-1]['heldout_accuracy'] or 0:.3f}"}

    fit(
        model, torch.arange(len(ids)), batch_loss, optimizer,
        epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
        guard=DivergenceGuard("training of the causal language model", "lower the learning rate"),
        desc="train the language model", max_grad_norm=config.max_grad_norm,
        schedule=get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total), total),
        after_epoch=after_epoch, bar="epochs",
    )
    return history


def train_and_save(
    directory: str | os.PathLike,
    build: Callable[[], tuple[object, object]],
    train: Examples,
    heldout: Examples,
    config: LMTrainConfig,
    settings: dict | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Trains the model `build()` returns as (model, tokenizer) on `device` and saves both with
    `save_pretrained` in `directory`, with `training.json`: the config, `settings` (what else defines
    the model, e.g. its shape and data sizes), the history and the final held-out accuracy. Returns
    that record."""
    model, tokenizer = build()
    model = model.to(device)
    history = train_next_token(model, tokenizer, train, heldout, config)
    record = {
        "config": asdict(config),
        "settings": settings or {},
        "n_train": len(train[0]),
        "n_heldout": len(heldout[0]),
        "history": history,
        "heldout_accuracy": history[-1]["heldout_accuracy"] if history else None,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RECORD).unlink(missing_ok=True)  # an old record must never describe new weights
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    atomic_write_json(directory / RECORD, record)  # last: a directory with a record holds a whole model
    return record


def saved_record(directory: str | os.PathLike) -> dict | None:
    """The training record in `directory`, or None when no model was saved there."""
    path = Path(directory) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is corrupt ({error}); delete the directory to retrain") from None


def load(directory: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode on `device`, tokenizer) saved by `train_and_save` or any `save_pretrained`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(check_model_directory(directory, "train_and_save", f"train a model into {directory} first"))
    try:
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} holds no loadable causal language model ({str(error).splitlines()[0]})") from None
    return model.to(device).eval(), tokenizer


def train_or_load(
    directory: str | os.PathLike,
    build: Callable[[], tuple[object, object]],
    examples: Callable[[], tuple[Examples, Examples]],
    config: LMTrainConfig,
    settings: dict | None = None,
    device: str | torch.device = "cpu",
):
    """(model on `device`, tokenizer, record): the model saved in `directory` when it was trained there
    with the same config and settings, else one trained now from `build()` on `examples()` (train,
    heldout), which are only drawn then."""
    record = saved_record(directory)
    wanted = {"config": asdict(config), "settings": json.loads(json.dumps(settings or {}))}
    if record is None or {k: record.get(k) for k in wanted} != wanted:
        if record is not None:
            log.info("retraining: %s was trained with other settings", directory)
        train, heldout = examples()
        record = train_and_save(directory, build, train, heldout, config, settings, device)
    model, tokenizer = load(directory, device)
    return model, tokenizer, record
