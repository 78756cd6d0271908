"""A causal language model read as a classifier over declared answer tokens: class i is the token
`answer_ids[i]` at the prompt's last position.

`AnswerClassifier` wraps a Hugging Face causal LM so that everything written for a sequence
classifier works on it unchanged: `model(input_ids=...).logits` is (N, classes), the logits of the
answer tokens at the last position (prompts unpadded, or padded on the left), so an argmax is a
class index; `model.score(h)` maps the final-normed hidden state of the last token to the same
logits (the answer rows of the LM head, and the soft-capping a config declares), the head a site's
suffix ends with (`class_head`); `config`, `device`, `dtype`, `base_model` and `save_pretrained`
are the wrapped LM's. The LM itself (`.lm`) is what pyvene intervenes on (`pyvene_view`), what
is saved, and what the next-token objective trains over the whole vocabulary
(`vocabulary_logits`). The answer ids are a buffer, so a network's fingerprint covers them.

Nothing here knows a task: the task declares its answers as strings and `answer_token_ids` maps
them through the tokenizer, each one token.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from causal_das.models.lm_structure import text_config


def answer_token_ids(tokenizer, answers: Sequence[str]) -> list[int]:
    """The token id of each answer string as it follows the prompt; ValueError (one line) naming every
    answer that is not exactly one token, or answers that share a token."""
    encoded, bad = [], []
    for answer in answers:
        try:
            ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        except Exception as error:  # noqa: BLE001 -- tokenizers raise a bare Exception for an unknown word (no unk token)
            ids, pieces = [], f"not encodable: {str(error).splitlines()[0]}"
        else:
            pieces = tokenizer.convert_ids_to_tokens(ids)
        encoded.append(ids)
        if len(ids) != 1:
            bad.append((answer, pieces))
    if bad:
        raise ValueError(f"the tokenizer does not encode every answer as one token ({len(bad)} of {len(answers)} are not: "
                         f"{', '.join(repr(answer) for answer, _ in bad)}; e.g. {bad[0][0]!r} -> {bad[0][1]}); "
                         "a next-token head needs one token per answer")
    ids = [int(row[0]) for row in encoded]
    if len(set(ids)) != len(ids):
        raise ValueError(f"answers {list(answers)} do not have distinct token ids ({ids})")
    return ids


@dataclass
class ClassifierOutput:
    logits: torch.Tensor  # (N, classes)


class AnswerClassifier(nn.Module):
    """`lm`, a causal LM, as a classifier over the answer tokens `answer_ids` (class order)."""

    def __init__(self, lm: nn.Module, answer_ids: Sequence[int]):
        super().__init__()
        head = lm.get_output_embeddings()
        if not isinstance(head, nn.Module):
            raise ValueError(f"{type(lm).__name__} has no output embeddings (get_output_embeddings()); it is not a causal LM")
        vocab = head.weight.shape[0] if isinstance(getattr(head, "weight", None), torch.Tensor) else text_config(lm).vocab_size
        answer_ids = [int(a) for a in answer_ids]
        if not answer_ids or len(set(answer_ids)) != len(answer_ids) or not all(0 <= a < vocab for a in answer_ids):
            raise ValueError(f"answer ids {answer_ids} must be distinct token ids in 0..{vocab - 1}")
        self.lm = lm
        self.register_buffer("answer_ids", torch.tensor(answer_ids, dtype=torch.long, device=next(lm.parameters()).device))
        # The LM's forward caps its logits so (Gemma-2's tanh soft-capping); the answer head does the same.
        self.softcap = getattr(text_config(lm), "final_logit_softcapping", None)
        self._keeps_last = "logits_to_keep" in inspect.signature(lm.forward).parameters

    # -- what a sequence classifier has -------------------------------------------------------------

    @property
    def config(self):
        return self.lm.config

    @property
    def device(self) -> torch.device:
        return self.lm.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.dtype

    @property
    def base_model(self) -> nn.Module:
        return self.lm.base_model

    @property
    def n_answers(self) -> int:
        return len(self.answer_ids)

    def save_pretrained(self, directory, **kwargs) -> None:
        """Saves the LM (the answers are the task's and its tokenizer's, not part of the checkpoint)."""
        self.lm.save_pretrained(directory, **kwargs)

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) final-normed hidden states -> (..., classes): the LM head's answer rows only."""
        head = self.lm.get_output_embeddings()
        if isinstance(head, nn.Linear):
            bias = None if head.bias is None else head.bias[self.answer_ids]
            logits = nn.functional.linear(hidden, head.weight[self.answer_ids], bias)
        else:
            logits = head(hidden)[..., self.answer_ids]
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def vocabulary_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """(N, vocabulary) next-token logits at the last position: the LM's own output."""
        if self._keeps_last:
            kwargs.setdefault("logits_to_keep", 1)
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits[:, -1]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> ClassifierOutput:
        return ClassifierOutput(logits=self.vocabulary_logits(input_ids, attention_mask, **kwargs)[:, self.answer_ids])

    def reinitialised(self) -> AnswerClassifier:
        """The same architecture and answers, freshly initialised (from torch's global generator)."""
        return AnswerClassifier(type(self.lm)(self.lm.config), self.answer_ids.tolist())


def class_head(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """What maps the final-normed last token to class logits: a sequence classifier's `score`, the
    answer rows of an `AnswerClassifier`'s LM head."""
    return model.score


def head_kind(model) -> str:
    """"next_token" for an `AnswerClassifier`, "sequence_classification" otherwise."""
    return "next_token" if isinstance(model, AnswerClassifier) else "sequence_classification"


def language_model(model) -> nn.Module:
    """The Hugging Face model itself: the wrapped LM of an `AnswerClassifier`, else `model`."""
    return model.lm if isinstance(model, AnswerClassifier) else model


def pyvene_view(model) -> tuple[nn.Module, Callable]:
    """(the module pyvene intervenes on, its output -> class logits): the LM and its answer logits
    at the last position for an `AnswerClassifier`, else the classifier and its logits."""
    if isinstance(model, AnswerClassifier):
        answers = model.answer_ids
        return model.lm, lambda out: out.logits[:, -1, answers.to(out.logits.device)]
    return model, lambda out: out.logits
