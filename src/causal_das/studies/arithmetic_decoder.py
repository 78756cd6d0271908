"""The X+Y+Z study's decoder classifiers: the offline default network, its tokenizer and prompts,
loading a saved or pretrained classifier with checks, the site at a layer's output (GPT-2's own
fast site, or the generic decoder site of any other decoder type), and training.

The default network is a `GPT2ForSequenceClassification` with GPT-2 small's depth (12 blocks) and
width 48: 768 / 48 = 16, so the thesis's k values {64, 128, 256, 768, 4608} scale exactly to
{4, 8, 16, 48, 288}, and a DAS step through its suffix costs milliseconds on a laptop CPU. Its
tokenizer is word-level (`1`..`10`, `+`, `=`, and a pad token), built with `tokenizers` and wrapped
as a `PreTrainedTokenizerFast`, so both save and load with `save_pretrained`/`from_pretrained`
exactly like a pretrained GPT-2 does.

Any other Hugging Face decoder (Llama, Qwen2, Gemma-2, GPT-NeoX, Mistral, ...; whatever the
structure of `models.lm_structure` is found in) loads, trains and is cut the same way: `load_classifier`,
`site` and `layer_outputs` pick GPT-2's own fast site (`models.gpt2.GPT2Site`) or the generic
`models.decoder.DecoderSite` from the model's config.

Two heads read the answer. A sequence classifier's 28-class `score` head (the default), or a causal
LM's next token (`head="next_token"`): the token of the sum's decimal string ("17"), read as a
28-class classifier at those answer tokens (`models.answer_head.AnswerClassifier`), trained on the
LM's own objective (cross-entropy over the whole vocabulary). Everything downstream sees class
logits either way. The from-scratch next-token network has its own word-level tokenizer, the
default's plus the sums 11..30 (`build_answer_tokenizer`); the default's is untouched.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from causal_das.das.training import DivergenceGuard
from causal_das.models import checkpoint_dtype, decoder
from causal_das.models.answer_head import AnswerClassifier, answer_token_ids
from causal_das.models.gpt2 import GPT2Site, block_outputs
from causal_das.models.lm_structure import HEAD_KINDS, find_structure
from causal_das.models.training import adam, check_model_directory, fit
from causal_das.tasks import arithmetic

log = logging.getLogger(__name__)

SEQ_LEN = 6  # X + Y + Z =
PAD = "[PAD]"
DEFAULT_WIDTH, DEFAULT_LAYERS, DEFAULT_HEADS = 48, 12, 4
# A next-token head's answers, in class order: the decimal string of each sum (class i: sum i + 3).
ANSWERS = tuple(str(label + arithmetic.OFFSET) for label in range(arithmetic.N_CLASSES))


def build_tokenizer():
    """The word-level tokenizer of the default model: ids 1..10 are the numbers, 11 '+', 12 '='."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, **{str(i): i for i in arithmetic.NUMBERS}, "+": 11, "=": 12}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"\d+|[+=]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD)


def build_answer_tokenizer():
    """The from-scratch next-token network's tokenizer: `build_tokenizer`'s ids, then the sums
    11..30 as ids 13..32, so that every answer is one token."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, **{str(i): i for i in arithmetic.NUMBERS}, "+": 11, "=": 12}
    vocab.update({answer: len(vocab) + i for i, answer in enumerate(a for a in ANSWERS if a not in vocab)})
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"\d+|[+=]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD)


def build_default_model(tokenizer, width: int = DEFAULT_WIDTH, n_layers: int = DEFAULT_LAYERS, n_heads: int = DEFAULT_HEADS, seed: int = 0,
                        head: str = "sequence_classification"):
    """A freshly initialised GPT-2 for the task (Hugging Face's GPT-2 initialisation): a 28-class
    sequence classifier, or with `head="next_token"` a GPT-2 language model read at the answer tokens."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    if head not in HEAD_KINDS:
        raise ValueError(f"unknown head {head!r}; choose {' or '.join(HEAD_KINDS)}")

    if width % n_heads:
        raise ValueError(f"--width {width} must be a multiple of --n_heads {n_heads}")
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=SEQ_LEN + 2, n_embd=width, n_layer=n_layers, n_head=n_heads,
        # No dropout: the 800 training prompts are learned in minutes without it, and held-out
        # accuracy (reported) shows it generalises. DAS always runs the network in eval mode anyway.
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        # GPT-2's tanh-approximated GELU as one fused kernel: the same function as its `gelu_new`, which
        # spells it out in five element-wise ops that took 60% of a suffix forward at this width.
        activation_function="gelu_pytorch_tanh",
        num_labels=arithmetic.N_CLASSES, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, eos_token_id=None,
    )
    torch.manual_seed(seed)
    if head == "next_token":
        return AnswerClassifier(GPT2LMHeadModel(config), answer_token_ids(tokenizer, ANSWERS))
    return GPT2ForSequenceClassification(config)


def random_init_copy(model, seed: int):
    """The control network: the same configuration, freshly initialised, never trained."""
    torch.manual_seed(seed + 7919)  # built on the CPU, so the copy is the same on every device
    # In the network's dtype: from a bf16 config transformers builds some modules in bf16, some in fp32.
    fresh = model.reinitialised() if isinstance(model, AnswerClassifier) else type(model)(model.config)
    return fresh.to(model.device, model.dtype).eval()


def encode_prompts(tokenizer) -> torch.Tensor:
    """input_ids (1000, 6) of every prompt, in triple order; ValueError if the tokenizer does not give
    each prompt exactly six tokens (X + Y + Z =), which every site here assumes."""
    ids = tokenizer(list(arithmetic.PROMPTS), add_special_tokens=False)["input_ids"]
    bad = [p for p, row in zip(arithmetic.PROMPTS, ids, strict=True) if len(row) != SEQ_LEN]
    if bad:
        # Name what is not one token: a number (in the position it has in a prompt) or a sign.
        pieces = [str(n) for n in arithmetic.NUMBERS if len(tokenizer(f"{n}+1+1=", add_special_tokens=False)["input_ids"]) != SEQ_LEN]
        raise ValueError(
            f"the tokenizer splits {len(bad)} prompts into other than {SEQ_LEN} tokens (e.g. {bad[0]!r} -> "
            f"{tokenizer.convert_ids_to_tokens(tokenizer(bad[0], add_special_tokens=False)['input_ids'])}"
            f"{'; not one token: ' + ', '.join(repr(x) for x in pieces) if pieces else ''}); "
            "the task needs one token per number, '+' and '='"
        )
    ids = torch.tensor(ids, dtype=torch.long)
    if tokenizer.pad_token_id is not None and (ids == tokenizer.pad_token_id).any():
        raise ValueError("the tokenizer's pad token occurs inside the prompts; give it a pad token of its own")
    return ids


def prepare_pretrained(model, tokenizer) -> None:
    """GPT-2 has no pad token; like the thesis, use its end-of-text token (never inside a prompt)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an end-of-text token; add a pad token")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model on `device`, tokenizer) saved by `train_gpt2.py`: a decoder sequence classifier with 28
    classes, or a causal LM whose tokenizer encodes each answer (`ANSWERS`) as one token, read at
    those tokens (`AnswerClassifier`). One-line ValueErrors that say what to do when the path is not
    such a model, or when the decoder's layers, final norm or head cannot be found."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    path = str(check_model_directory(path, "train_gpt2.py", f"train the model first: python train_gpt2.py --output_dir {path}"))
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"--model_path {path} holds no readable model config ({str(error).splitlines()[0]})") from None
    head = _saved_head(config, path)
    if head == "sequence_classification" and config.num_labels != arithmetic.N_CLASSES:
        raise ValueError(f"--model_path {path} classifies into {config.num_labels} classes, not the task's {arithmetic.N_CLASSES}")
    from safetensors import SafetensorError

    dtype, how = checkpoint_dtype.choose(path, config, "--model_path", finetune=False)  # bf16/fp16: fp32 on purpose
    auto = AutoModelForSequenceClassification if head == "sequence_classification" else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise ValueError(f"--model_path {path} could not be loaded ({str(error).splitlines()[0]})") from None
    try:
        find_structure(model, head)
    except ValueError as error:
        raise ValueError(f"--model_path {path}: {error}") from None
    if head == "next_token":
        try:
            model = AnswerClassifier(model, answer_token_ids(tokenizer, ANSWERS))
        except ValueError as error:
            raise ValueError(f"--model_path {path} is a causal LM, not a sequence classifier, and {error}; "
                             f"fine-tune it first: python train_gpt2.py --base_model {path}") from None
    checkpoint_dtype.announce(how)
    return model.to(device).eval(), tokenizer


load_network = load_classifier  # either head: the name says what it returns


def _saved_head(config, path: str) -> str:
    """"sequence_classification" or "next_token", from the saved architecture; else one line."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "sequence_classification"
    causal = {name for names in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for name in ((names,) if isinstance(names, str) else names)}
    if any(a in causal for a in architectures):
        return "next_token"
    raise ValueError(
        f"--model_path {path} is neither a sequence classifier nor a causal LM (it is {', '.join(architectures) or 'an unknown architecture'}); "
        f"fine-tune it first: python train_gpt2.py --base_model {path}"
    )


def site(model, layer: int, positions: tuple[int, ...] | None = None):
    """The DAS site at the output of block (decoder layer) `layer`: GPT-2's own fast site, or the
    generic decoder site of any other decoder; either head."""
    if model.config.model_type == "gpt2":
        return GPT2Site(model, layer, positions, SEQ_LEN)
    return decoder.DecoderSite(model, layer, positions, SEQ_LEN)


def layer_outputs(model, input_ids: torch.Tensor, layers) -> dict[int, torch.Tensor]:
    """{layer: output of that block (N, T, d)}, for any decoder (`block_outputs` on GPT-2),
    in fp32 like every activation cache of the engine (a bf16 network's outputs upcast)."""
    if model.config.model_type == "gpt2":
        outputs = block_outputs(model, input_ids, layers)
    else:
        outputs = decoder.layer_outputs(model, input_ids.to(model.device), layers)
    return {layer: output.float() for layer, output in outputs.items()}


def parse_positions(text: str, flag: str) -> tuple[int, ...]:
    """Token positions of the prompt: 'all' -> 0..5, '3' -> (3,), '2-3' -> (2, 3), '0,2' -> (0, 2);
    ValueError naming `flag` otherwise."""
    if text == "all":
        return tuple(range(SEQ_LEN))
    try:
        if "-" in text:
            first, last = (int(part) for part in text.split("-"))
            positions = tuple(range(first, last + 1))
        else:
            positions = tuple(sorted(int(part) for part in text.split(",")))
    except ValueError:
        positions = ()
    if not positions or len(set(positions)) != len(positions) or not all(0 <= p < SEQ_LEN for p in positions):
        raise ValueError(f"{flag} {text!r} is not a set of token positions in 0..{SEQ_LEN - 1}: "
                         "write all, one position (3), a range (2-3) or a list (0,2)")
    return positions


@dataclass(frozen=True)
class TrainingSchedule:
    epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    max_grad_norm: float = 1.0
    seed: int = 123

@torch.no_grad()
def predictions(model, input_ids: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """(N,) the predicted class of each prompt (a next-token head: the argmax over the answer tokens)."""
    model.eval()
    return torch.cat([model(input_ids=input_ids[i : i + batch_size].to(model.device)).logits.argmax(-1).cpu()
                      for i in range(0, len(input_ids), batch_size)])


@torch.no_grad()
def vocabulary_correct(model: AnswerClassifier, input_ids: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """(N,) whether the argmax over the whole vocabulary is each prompt's answer token."""
    model.eval()
    best = torch.cat([model.vocabulary_logits(input_ids[i : i + batch_size].to(model.device)).argmax(-1).cpu()
                      for i in range(0, len(input_ids), batch_size)])
    return (best == model.answer_ids.cpu()[torch.as_tensor(arithmetic.LABELS)]).numpy()


def train_classifier(model, input_ids: torch.Tensor, train_idx: np.ndarray, heldout_idx: np.ndarray, config: TrainingSchedule,
                     extra_loss=None, labels: np.ndarray | None = None) -> list[dict]:
    """AdamW with a linear schedule (after `warmup_fraction` of linear warm-up) and gradient clipping,
    on the training triples only; returns one record per epoch with loss and both accuracies
    (ValueError if training diverges, see `DivergenceGuard`). `extra_loss(model, input_ids)`, if
    given, is added to every step's loss (the interchange loss of `arithmetic_iit`). `labels`: the
    class of each triple, X+Y+Z unless given (a null network learns shuffled ones)."""
    from transformers import get_linear_schedule_with_warmup

    labels = torch.as_tensor(arithmetic.LABELS if labels is None else labels)
    train_idx = torch.as_tensor(train_idx)
    total = config.epochs * math.ceil(len(train_idx) / config.batch_size)
    optimizer = adam(model.parameters(), config.lr, config.weight_decay)
    ids_on_device, labels_on_device = input_ids.to(model.device), labels.to(model.device)
    history = []

    def after_epoch(epoch: int, loss) -> dict:
        correct = (predictions(model, input_ids) == labels).numpy()
        history.append({
            "epoch": epoch,
            "loss": loss.per_example,
            "train_accuracy": float(correct[train_idx.numpy()].mean()),
            "heldout_accuracy": float(correct[heldout_idx].mean()) if len(heldout_idx) else None,
        })
        log.info("epoch %d: %s", epoch, history[-1])
        return {"loss": f"{loss.per_example:.3f}", "heldout": f"{history[-1]['heldout_accuracy']:.3f}"}

    def batch_loss(idx):
        if isinstance(model, AnswerClassifier):  # the LM's own objective: the answer token among the whole vocabulary
            loss = nn.functional.cross_entropy(model.vocabulary_logits(ids_on_device[idx]), model.answer_ids[labels_on_device[idx]])
        else:
            loss = nn.functional.cross_entropy(model(input_ids=ids_on_device[idx]).logits, labels_on_device[idx])
        return loss if extra_loss is None else loss + extra_loss(model, ids_on_device)

    fit(
        model, train_idx, batch_loss,
        optimizer, epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
        guard=DivergenceGuard("training of the GPT-2 classifier", "lower the learning rate (--lr)"), desc="train GPT-2",
        max_grad_norm=config.max_grad_norm, schedule=get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total), total),
        after_epoch=after_epoch, bar="epochs",
    )
    return history
