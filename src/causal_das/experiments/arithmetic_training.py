"""Training the decoder classifier of X+Y+Z (`train_gpt2.py`): the offline default GPT-2 from
scratch, or a pretrained decoder of any family fine-tuned the thesis way. Triples are split into
training and held-out sets, and held-out accuracy is what is reported (the thesis measured accuracy on the triples it trained on).

`head="next_token"` trains a causal LM instead, whose answer is the next token (the sum's decimal
string), on the LM's own objective; its record gives the held-out accuracy over the answer tokens
(what every downstream step reads) and over the whole vocabulary."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from causal_das.models import checkpoint_dtype
from causal_das.models.answer_head import AnswerClassifier, answer_token_ids, head_kind
from causal_das.models.lm_structure import HEAD_KINDS, find_structure
from causal_das.runtime import devices
from causal_das.runtime.io import atomic_write_json, check_results_path, run_metadata
from causal_das.runtime.provenance import model_fingerprint, trained_earlier
from causal_das.runtime.settings import settings_of
from causal_das.studies import arithmetic_decoder, arithmetic_iit
from causal_das.tasks import arithmetic

log = logging.getLogger(__name__)

REQUIRED_HELDOUT_ACCURACY = 0.99

# Defaults that differ between the two modes (None on the command line means "the mode's default").
SCRATCH = {"epochs": 200, "lr": 1e-3, "warmup_fraction": 0.05}
THESIS_FINETUNE = {"epochs": 50, "lr": 2e-5, "warmup_fraction": 0.0}  # AdamW, linear schedule, clip 1.0, batch 32


@dataclass(frozen=True)
class TrainingRunConfig:
    output_dir: str = "results/gpt2/model"
    base_model: str | None = None
    width: int = arithmetic_decoder.DEFAULT_WIDTH
    n_layers: int = arithmetic_decoder.DEFAULT_LAYERS
    n_heads: int = arithmetic_decoder.DEFAULT_HEADS
    epochs: int = SCRATCH["epochs"]
    batch_size: int = 32
    lr: float = SCRATCH["lr"]
    weight_decay: float = 0.01
    warmup_fraction: float = SCRATCH["warmup_fraction"]
    heldout_fraction: float = 0.2
    seed: int = 123
    device: str = "auto"  # see `devices`
    precision: str = "auto"
    retrain: bool = False  # train even when output_dir holds a network trained with these flags
    head: str = "sequence_classification"  # or "next_token": a causal LM whose answer is the next token
    # Interchange intervention training (`studies.arithmetic_iit`): (causal model, site, region) triples.
    inductions: tuple[tuple[str, str, str], ...] = ()

    def settings(self) -> dict:
        """The flags that determine the trained network (not where it is written or run)."""
        settings = settings_of(self)
        if self.inductions:
            settings["inductions"] = [list(induction) for induction in self.inductions]
        else:
            settings.pop("inductions")  # a network trained before inductions existed keeps its settings
        if self.head == "sequence_classification":
            settings.pop("head")  # and one trained before the next-token head existed
        return settings

    def train_config(self) -> arithmetic_decoder.TrainingSchedule:
        return arithmetic_decoder.TrainingSchedule(self.epochs, self.batch_size, self.lr, self.weight_decay, self.warmup_fraction, 1.0, self.seed)


def _load_base(name: str, head: str = "sequence_classification"):
    """(model with a fresh 28-class head, or its language-model head read at the answer tokens,
    tokenizer, how its dtype was chosen: None for an fp32 checkpoint)."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    if Path(name).exists() and not Path(name).is_dir():
        # transformers reads a config.json given as a file, then fails with a traceback on the tokenizer.
        raise ValueError(f"--base_model {name} is a file, not a model directory; pass a hub name or the directory "
                         "a decoder was saved to with save_pretrained")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ValueError(f"--base_model {name} could not be found or read ({str(error).splitlines()[0]}); "
                         "pass a local directory holding a decoder saved with save_pretrained") from None
    tokenizer = AutoTokenizer.from_pretrained(name)
    answers = None
    if head == "next_token":
        try:
            answers = answer_token_ids(tokenizer, arithmetic_decoder.ANSWERS)
        except ValueError as error:
            raise ValueError(f"--base_model {name}: {error}") from None
    # A fresh 28-class score head on the pretrained decoder, as *ForSequenceClassification does.
    # transformers prints a load report of the head it replaces (and the new one); that is the point here.
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    dtype, how = checkpoint_dtype.choose(name, config, "--base_model", finetune=True)  # always fp32 master weights
    try:
        if head == "next_token":
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=arithmetic.N_CLASSES, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    try:  # a decoder whose layers, final norm and head are found, and whose site recomposes its logits
        find_structure(model, head)
        if answers is not None:
            model = AnswerClassifier(model, answers)
        if model.config.model_type != "gpt2":
            arithmetic_decoder.site(model, 0)
    except ValueError as error:
        raise ValueError(f"--base_model {name}: {error}") from None
    checkpoint_dtype.announce(how)
    arithmetic_decoder.prepare_pretrained(model, tokenizer)
    return model, tokenizer, how


def _save_atomically(model, tokenizer, output_dir: Path, extra: dict) -> None:
    """Writes everything into a temporary sibling directory, then swaps it in: an interrupted run
    leaves the previous model (if any) intact, never a half-written one."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for name, payload in extra.items():
            atomic_write_json(staging / name, payload)
        old = None
        if output_dir.exists():
            old = output_dir.with_name(f".{output_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            output_dir.rename(old)
        staging.rename(output_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _vocabulary_accuracies(model, input_ids, train_idx, heldout_idx) -> dict:
    """A next-token head's accuracies over the whole vocabulary (the argmax over every token is the
    answer), beside the ones over the answer tokens; nothing for a sequence classifier."""
    if not isinstance(model, AnswerClassifier):
        return {}
    correct = arithmetic_decoder.vocabulary_correct(model, input_ids)
    return {"answer_tokens": list(arithmetic_decoder.ANSWERS), "answer_token_ids": model.answer_ids.tolist(),
            "train_accuracy_vocabulary": float(correct[train_idx].mean()), "heldout_accuracy_vocabulary": float(correct[heldout_idx].mean())}


def train_and_save(config: TrainingRunConfig) -> dict:
    """Trains, writes the model, tokenizer, `training.json` and `training_curves.png` to
    `config.output_dir`, and returns the training record. A network already trained there with the
    same flags (and whose weights are the ones its record names) is reused, not retrained."""
    output_dir = Path(config.output_dir)
    if config.head not in HEAD_KINDS:
        raise ValueError(f"--head {config.head!r}: choose {' or '.join(HEAD_KINDS)}")
    if config.inductions and config.head != "sequence_classification":
        raise ValueError("--induce trains a sequence classifier; it does not take --head next_token")
    if config.base_model is None:  # bad inductions fail before anything is written (a pretrained model's depth: once loaded)
        arithmetic_iit.check_disjoint([arithmetic_iit.Induction.parse(*spec, config.n_layers) for spec in config.inductions])
    device = devices.setup(config.device, config.precision)
    check_results_path(output_dir, "--output_dir")
    earlier = trained_earlier(output_dir, config.settings(), lambda: arithmetic_decoder.load_classifier(output_dir)[0], config.retrain)
    if earlier is not None:
        return earlier
    started = time.perf_counter()
    loaded_as = None  # how a --base_model stored in bf16/fp16 was loaded (None: as stored, in fp32)
    if config.base_model is None and config.head == "next_token":
        tokenizer = arithmetic_decoder.build_answer_tokenizer()
        model = arithmetic_decoder.build_default_model(tokenizer, config.width, config.n_layers, config.n_heads, config.seed, head=config.head)
    elif config.base_model is None:
        tokenizer = arithmetic_decoder.build_tokenizer()
        model = arithmetic_decoder.build_default_model(tokenizer, config.width, config.n_layers, config.n_heads, config.seed)
    else:
        model, tokenizer, loaded_as = _load_base(config.base_model, config.head)
    model = model.to(device)  # initialised on the CPU: the same start on every device
    # num_hidden_layers: every decoder type's depth (n_layer is GPT-2's own name for it).
    inductions = [arithmetic_iit.Induction.parse(*spec, model.config.num_hidden_layers) for spec in config.inductions]
    arithmetic_iit.check_disjoint(inductions)
    input_ids = arithmetic_decoder.encode_prompts(tokenizer)
    train_idx, heldout_idx = arithmetic.heldout_split(np.random.default_rng(config.seed), config.heldout_fraction)
    torch.manual_seed(config.seed)
    interchange = arithmetic_iit.InterchangeLoss(inductions, train_idx, config.batch_size, config.seed, device) if inductions else None
    history = arithmetic_decoder.train_classifier(model, input_ids, train_idx, heldout_idx, config.train_config(), interchange)
    predicted = arithmetic_decoder.predictions(model, input_ids).numpy()
    correct = predicted == arithmetic.LABELS
    wrong = np.flatnonzero(~correct)
    record = {
        "experiment": "train_gpt2",
        "config": asdict(config),
        **run_metadata(),
        "mode": "scratch" if config.base_model is None else "finetune",
        "head": head_kind(model),
        "model": {"type": model.config.model_type, "n_layer": model.config.num_hidden_layers, "n_embd": model.config.hidden_size,
                  "n_head": model.config.num_attention_heads, "parameters": sum(p.numel() for p in model.parameters()),
                  **({"checkpoint_dtype": loaded_as} if loaded_as else {})},
        "n_train_triples": len(train_idx),
        "n_heldout_triples": len(heldout_idx),
        "heldout_triples": heldout_idx.tolist(),
        "train_accuracy": float(correct[train_idx].mean()),
        "heldout_accuracy": float(correct[heldout_idx].mean()),
        "accuracy_all_triples": float(correct.mean()),
        **_vocabulary_accuracies(model, input_ids, train_idx, heldout_idx),
        "misclassified": [
            {"triple": arithmetic.TRIPLES[i].tolist(), "predicted_sum": int(predicted[i]) + arithmetic.OFFSET,
             "split": "heldout" if i in set(heldout_idx.tolist()) else "train"}
            for i in wrong
        ],
        "history": history,
        # The known answer: each induced mechanism's site and region, and how often the network obeys
        # it on interchanges whose base it never trained on (and on ones it did).
        "inductions": [{**induction.describe(),
                        "heldout_interchange_accuracy": arithmetic_iit.interchange_accuracy(model, input_ids, induction, heldout_idx),
                        "train_interchange_accuracy": arithmetic_iit.interchange_accuracy(model, input_ids, induction, train_idx)}
                       for induction in inductions],
        "seconds": time.perf_counter() - started,
        "model_fingerprint": model_fingerprint(model),
        "settings": config.settings(),
        "inputs": {},
        "status": "done",
    }
    _save_atomically(model, tokenizer, output_dir, {"training.json": record})
    from causal_das.plots.arithmetic import plot_training_curves

    plot_training_curves(output_dir / "training.json", output_dir / "training_curves.png")
    return record
