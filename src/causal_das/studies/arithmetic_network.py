"""The X+Y+Z study's network: a decoder classifier with its 1000 prompts and each layer's block
output computed once, the counterfactual data of a set of (base, source) pairs of triples, the IIA
of trained interventions against every causal model of a family, and the label rates an IIA stands
beside (copying the base's or the source's label, the unintervened network).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from causal_das.das import engine
from causal_das.metrics import majority_rate
from causal_das.studies import arithmetic_decoder
from causal_das.tasks import arithmetic


def interchange_data(input_ids: torch.Tensor, pair_ids: np.ndarray, model) -> engine.InterchangeData:
    base, source = arithmetic.decode_pairs(pair_ids)
    labels = arithmetic.counterfactual_labels(model, base, source)
    return engine.InterchangeData(input_ids, torch.as_tensor(base), torch.as_tensor(source)[:, None], torch.as_tensor(labels))


@dataclass

class Network:
    """A loaded classifier with its prompts and the block outputs of every layer, computed once."""

    model: object
    input_ids: torch.Tensor
    states: dict[int, torch.Tensor]  # layer -> (1000, 6 * width)
    plain_predictions: np.ndarray  # (1000,) the unintervened network's predicted class per prompt

    @classmethod
    def load(cls, model, input_ids: torch.Tensor, layers) -> Network:
        with engine.frozen(model):
            states = {layer: s.flatten(1) for layer, s in arithmetic_decoder.layer_outputs(model, input_ids, layers).items()}
            plain = arithmetic_decoder.predictions(model, input_ids).numpy()
        return cls(model, input_ids, states, plain)

    def site(self, layer: int, positions: tuple[int, ...]):
        return arithmetic_decoder.site(self.model, layer, positions)

    def site_states(self, site) -> torch.Tensor:
        """The site state of every prompt: the cached block output at the site, or the site's own
        prefix when its state holds more (the untouched tokens' keys, see `models.gpt2_untouched`)."""
        if not getattr(site, "untouched", 0):
            return self.states[site.layer]
        with engine.frozen(self.model):
            return engine.cache_activations(site, self.input_ids)


def correct_per_pair(network: Network, site, trained: list, test_ids: np.ndarray, family, config_engine: str, states=None) -> list[dict]:
    """For each trained intervention at `site`, {causal model of `family`: (N,) bool, right on each
    of the `test_ids` pairs}: what paired comparisons need (the fast engine evaluates them together;
    `states`: the site states, if the caller has them)."""
    base, source = arithmetic.decode_pairs(test_ids)
    data = engine.InterchangeData(network.input_ids, torch.as_tensor(base), torch.as_tensor(source)[:, None], torch.zeros(len(base), dtype=torch.long))
    if config_engine == "fast":
        predictions = engine.predict_cells(site, trained, data, activations=network.site_states(site) if states is None else states)
    else:
        predictions = [engine.predict(site, one, data, config_engine) for one in trained]
    labels = {m.name: arithmetic.counterfactual_labels(m, base, source) for m in family}
    return [{name: p.numpy() == target for name, target in labels.items()} for p in predictions]


def rates(correct: list[dict]) -> list[dict]:
    """The IIA of each alignment against each model: the mean of `correct_per_pair`."""
    return [{name: float(np.mean(right)) for name, right in one.items()} for one in correct]


def evaluate_cells(network: Network, site, trained: list, test_ids: np.ndarray, family, config_engine: str, states=None) -> list[dict]:
    """IIA of each trained intervention at `site` against each causal model of `family` on the `test_ids` pairs."""
    return rates(correct_per_pair(network, site, trained, test_ids, family, config_engine, states))


def label_correct(network: Network, causal_model, test_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per pair, whether the unintervened network's answer to the base, and to the source, is the
    counterfactual label, and whether the pairs' most common counterfactual label is: the chance
    baselines that need no alignment. The last is what a trained intervention gets by steering every
    answer to one class, which it can on any network (an untrained GPT-2 that answers 25 to every
    prompt leaves the first two near 0.01, and DAS over all six tokens learns to answer 13)."""
    base, source = arithmetic.decode_pairs(test_ids)
    labels = arithmetic.counterfactual_labels(causal_model, base, source)
    values, counts = np.unique(labels, return_counts=True)
    return {"network_no_intervention": labels == network.plain_predictions[base], "network_on_source": labels == network.plain_predictions[source],
            "majority": labels == values[np.argmax(counts)]}


def baselines(network: Network, causal_model, test_ids: np.ndarray) -> dict[str, float]:
    base, source = arithmetic.decode_pairs(test_ids)
    labels = arithmetic.counterfactual_labels(causal_model, base, source)
    return {
        "majority": majority_rate(labels),
        "copy_base_label": float(np.mean(labels == arithmetic.LABELS[base])),
        "copy_source_label": float(np.mean(labels == arithmetic.LABELS[source])),
        "network_no_intervention": float(np.mean(labels == network.plain_predictions[base])),
        "network_on_source": float(np.mean(labels == network.plain_predictions[source])),
    }
