"""IIA of a multi-site alignment (`das.multi_site`) with what it must be read against, like
`das.evaluation.evaluate` for one site: its 95% Wilson interval, IIA per intervened set, and on the
same examples:

- `full_patch`: every variable's whole site (all its positions at its layer) from its source;
- `random_subspace`: untrained random rotations of the trained sizes at the same sites (a few draws);
- `network_no_intervention` and `network_on_source`: the network on the base and on the first
  intervened source, unintervened;
- the label rates that need no network (majority, copy base, copy source);
- the verdict of `evaluation.verdict`: DAS above its best chance baseline by two standard errors.

Every network baseline is a set of fixed rotations at the same sites, run through the same cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch

from causal_das.das.data import InterchangeData
from causal_das.das.engine import frozen
from causal_das.das.evaluation import CHANCE, CONFIDENCE, first_source, verdict, wilson_interval
from causal_das.das.multi_site import (
    MultiSiteCache,
    MultiSiteNetwork,
    TrainedMultiSite,
    predict_multi,
    random_rotations,
)

__all__ = ["BASELINES", "evaluate_multi"]

BASELINES = ("full_patch", "random", "network")


def evaluate_multi(network: MultiSiteNetwork, trained: TrainedMultiSite, data: InterchangeData, *, baselines: Sequence[str] = BASELINES,
                   random_draws: int = 3, seed: int = 0, extra_baselines: Mapping[str, float] | None = None,
                   cache: MultiSiteCache | None = None) -> dict:
    """The IIA of `trained` on `data` with its interval, per intervened set, baselines and verdict
    (see the module docstring); a JSON-ready dict. `baselines` of "full_patch", "random" and
    "network"; `extra_baselines` ({name: IIA on the same examples}) join the verdict's candidates;
    `cache`: `network.cache(data.inputs, trained.sites)`, if the caller has it."""
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {BASELINES}")
    sites, widths = trained.sites, trained.widths
    if cache is None:
        with frozen(network.model):
            cache = network.cache(data.inputs, sites)
    labels = data.labels.cpu()

    def iia_of(weights, at_sites=sites, on=data) -> float:
        return _rate(predict_multi(network, weights, on, at_sites, cache) == labels)

    hits = predict_multi(network, trained, data, cache=cache) == labels
    n, correct = len(labels), int(hits.sum())
    low, high = wilson_interval(correct, n)
    out = {"sites": trained.describe(), "iia": correct / n, "n": n,
           "interval": {"low": low, "high": high, "confidence": CONFIDENCE, "method": "wilson"}}
    names = data.subset_names()
    if names is not None:
        subsets = sorted(set(names.tolist()), key=lambda s: (s.count(","), s))
        out["by_subset"] = {s: _rate(hits[torch.as_tensor(names == s)]) for s in subsets}
        out["n_by_subset"] = {s: int((names == s).sum()) for s in subsets}

    rates = _label_rates(data)
    if "full_patch" in baselines:
        whole = tuple(replace(site, k=width) for site, width in zip(sites, widths, strict=True))
        rates["full_patch"] = iia_of([torch.eye(width) for width in widths], whole)
    if "network" in baselines:
        # No edit at all (k = 0 everywhere): the network on the base, and on the first intervened source.
        nothing = tuple(replace(site, k=0) for site in sites)
        empty = [torch.zeros(width, 0) for width in widths]
        rates["network_no_intervention"] = iia_of(empty, nothing)
        rates["network_on_source"] = iia_of(empty, nothing, replace(data, base=first_source(data)))
    if "random" in baselines:
        draws = [iia_of(weights) for weights in random_rotations(widths, [site.k for site in sites], random_draws, seed)]
        rates["random_subspace"] = {"mean": float(np.mean(draws)), "std": float(np.std(draws)), "draws": draws}
    rates.update(extra_baselines or {})
    out["baselines"] = rates
    candidates = {name: (value["mean"] if isinstance(value, dict) else value) for name, value in rates.items()
                  if name in CHANCE or name in (extra_baselines or {})}
    out["verdict"] = {"rule": "IIA minus the best chance baseline > 2 standard errors", **verdict(out["iia"], candidates, n)}
    return out


def _label_rates(data: InterchangeData) -> dict:
    """The rates that need no network: the majority label, copy base, copy source."""
    labels = data.labels.cpu()
    rates = {"majority": int(torch.unique(labels, return_counts=True)[1].max()) / len(labels)}
    if data.base_labels is not None:
        rates["copy_base_label"] = _rate(labels == data.base_labels.cpu())
    if data.source_labels is not None:
        rates["copy_source_label"] = _rate(labels == data.source_labels.cpu())
    return rates


def _rate(hits: torch.Tensor) -> float:
    return int(hits.sum()) / len(hits)
