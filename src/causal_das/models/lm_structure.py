"""Where the parts of a Hugging Face decoder language model are, found from its structure.

A DAS site in a decoder needs four parts: the base model (the transformer body the model's head
sits on), its list of decoder layers, its final norm and the head. Families name them differently
(`model.layers` in Llama, `transformer.h` in GPT-2, `gpt_neox.layers`, `embed_out` as GPT-NeoX's
head), so they are found from what they are rather than from a table of model types:

- the base model is `model.base_model` (Hugging Face's own pointer, `base_model_prefix`);
- the layer list is the shallowest `nn.ModuleList` in the base model holding `num_hidden_layers`
  modules of one class (a mixture-of-experts layer's expert list sits deeper, so it loses);
- the final norm is the base model's child called like one (`norm`, `ln_f`, `final_layer_norm`,
  ...), else the norm-like child registered after the layer list; None where the model has none
  (OPT-350m): the site runs the model's own forward, which applies it, so nothing depends on it;
- the head is `score` for a sequence classifier and `get_output_embeddings()` for a causal LM.

A model whose layers or head cannot be found stops with one ValueError line naming what was missing
and where it was looked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

HeadKind = Literal["sequence_classification", "next_token"]
HEAD_KINDS: tuple[str, ...] = ("sequence_classification", "next_token")
_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "final_norm", "norm_f", "ln_final")


@dataclass(frozen=True)
class LMStructure:
    """The parts of one decoder language model (the modules themselves, not copies)."""

    base: nn.Module  # the transformer body: embeddings, layers, final norm
    layers: nn.ModuleList  # the decoder layers, in order
    layers_path: str  # where the list sits in the base model, e.g. "layers" or "h"
    final_norm: nn.Module | None  # None when the model has none
    head: nn.Module  # `score` (sequence classification) or the output embeddings (next token)
    head_kind: HeadKind

    def describe(self) -> str:
        norm = type(self.final_norm).__name__ if self.final_norm is not None else "none"
        return (f"{type(self.base).__name__}.{self.layers_path} ({len(self.layers)} x {type(self.layers[0]).__name__}), "
                f"final norm {norm}, {self.head_kind} head {type(self.head).__name__}")


def text_config(model: nn.Module):
    """The config that describes the decoder (a multimodal config's text part), or None."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def find_structure(model: nn.Module, head: str = "auto") -> LMStructure:
    """The parts of `model`; `head` is "auto" (a `score` head if it has one, else its output
    embeddings), "sequence_classification" or "next_token". ValueError (one line) when a part
    the site needs is missing."""
    if head not in ("auto", *HEAD_KINDS):
        raise ValueError(f"unknown head {head!r}; choose auto, {' or '.join(HEAD_KINDS)}")
    base = getattr(model, "base_model", None)
    base = base if isinstance(base, nn.Module) else model
    layers_path, layers = find_layers(model, base)
    return LMStructure(base, layers, layers_path, find_final_norm(base, layers_path), *find_head(model, head))


def find_layers(model: nn.Module, base: nn.Module) -> tuple[str, nn.ModuleList]:
    """(path in `base`, the list) of the decoder layers; see the module docstring."""
    config = text_config(model)
    n_layers = getattr(config, "num_hidden_layers", None)
    candidates = []
    for path, module in base.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0 or path == "":
            continue
        if len({type(layer) for layer in module}) != 1 or (n_layers is not None and len(module) != n_layers):
            continue
        candidates.append((path.count("."), -len(module), path, module))
    if not candidates:
        wanted = f"{n_layers} (num_hidden_layers)" if n_layers is not None else "any number of"
        raise ValueError(f"{type(model).__name__}: no list of decoder layers found (looked in its base model {type(base).__name__} "
                         f"for an nn.ModuleList of {wanted} modules of one class)")
    _, _, path, layers = min(candidates, key=lambda c: c[:3])
    return path, layers


def _is_norm(module) -> bool:
    return isinstance(module, nn.Module) and "norm" in type(module).__name__.lower()


def find_final_norm(base: nn.Module, layers_path: str) -> nn.Module | None:
    """The norm the base model applies after its last layer, or None when it has none."""
    # The norm sits beside the layer list (GPT-2's `transformer.ln_f`, OPT's `decoder.final_layer_norm`).
    parent_path = layers_path.rpartition(".")[0]
    parent = base.get_submodule(parent_path) if parent_path else base
    for name in _NORM_NAMES:
        if _is_norm(getattr(parent, name, None)):
            return getattr(parent, name)
    # Else the first norm registered after the layers (Bloom registers an embedding norm before them).
    names = list(parent._modules)
    layers_name = layers_path.rpartition(".")[2]
    after = names[names.index(layers_name) + 1 :] if layers_name in names else []
    return next((parent._modules[name] for name in after if _is_norm(parent._modules[name])), None)


def find_head(model: nn.Module, head: str = "auto") -> tuple[nn.Module, HeadKind]:
    """(head module, kind): `score` for sequence classification, the output embeddings for next token."""
    score = getattr(model, "score", None)
    getter = getattr(model, "get_output_embeddings", None)
    embeddings = getter() if callable(getter) else getattr(model, "lm_head", None)
    if head in ("auto", "sequence_classification") and isinstance(score, nn.Module):
        return score, "sequence_classification"
    if head in ("auto", "next_token") and isinstance(embeddings, nn.Module):
        return embeddings, "next_token"
    looked = {"auto": "`score` and get_output_embeddings()/`lm_head`", "sequence_classification": "`score`",
              "next_token": "get_output_embeddings()/`lm_head`"}[head]
    raise ValueError(f"{type(model).__name__}: no {'' if head == 'auto' else head + ' '}head found (looked for {looked})")
