"""IIA with what it must be read against, for any task: `evaluate` and `train_and_evaluate`.

Interchange intervention accuracy (IIA) is the share of counterfactual examples on which the
intervened network predicts the causal model's counterfactual label. Alone it means little, so
`evaluate` reports, on the same examples:

- a 95% Wilson interval for the IIA (scipy's `binomtest(...).proportion_ci`);
- IIA per intervened set ("{A}", "{B}", "{A,B}") when the data says which variables it intervenes on;
- same-site baselines (`das.baselines`), evaluated in the same suffix passes as the trained W
  (`engine.predict_cells`): the full patch (the whole site from the source: from the first
  intervened source when there are several) and random subspaces of the trained W's sizes;
- the network without intervention and on the (first intervened) source, as full patches from the
  base itself and from that source (no extra forward code: the same suffix passes);
- label rates that need no network: the majority label and how often the counterfactual label
  equals the base's (copy base) and the source's (copy source);
- a verdict by margins: DAS beats its best chance baseline (no intervention, on the source, random
  subspace, and any `extra_baselines` such as a random-init control) by more than two standard
  errors of the difference of two rates, `margin_standard_error` (the examples' quick rule; the
  position sweep judges by paired tests adjusted over its cells: `studies.position_verdicts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from causal_das.das import baselines as same_site
from causal_das.das import engine as engines
from causal_das.das.data import DASConfig, InterchangeData, TrainedIntervention

__all__ = ["BASELINES", "CONFIDENCE", "evaluate", "first_source", "margin_standard_error", "train_and_evaluate", "verdict",
           "wilson_interval"]

BASELINES = ("full_patch", "random", "network")  # what `evaluate(baselines=...)` may ask for
CONFIDENCE = 0.95
CHANCE = ("network_no_intervention", "network_on_source", "random_subspace")  # the verdict's candidates, with extra_baselines


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval for a rate of `successes` in `n` trials (scipy; imported here only)."""
    from scipy.stats import binomtest

    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def rate_interval(rate: float, n: int, confidence: float = CONFIDENCE) -> list[float]:
    """The Wilson interval of a rate measured on `n` examples (the count recovered from the rate)."""
    return list(wilson_interval(round(rate * n), n, confidence))


def margin_standard_error(p: float, q: float, n: int) -> float:
    """The standard error of the difference of two rates p and q, each measured on n examples (as
    independent): the margin error of every judgement (the position sweep's included)."""
    return float(np.sqrt((p * (1 - p) + q * (1 - q)) / n))


def verdict(iia: float, candidates: Mapping[str, float], n: int) -> dict:
    """Whether `iia` beats the best of `candidates` ({name: rate on the same n examples}) by more
    than two standard errors (`margin_standard_error`); with no candidate there is no verdict."""
    if not candidates:
        return {"best_baseline": None, "margin": None, "standard_error": None, "das_beats_baselines": None}
    best = max(candidates, key=candidates.get)
    margin, error = iia - candidates[best], margin_standard_error(iia, candidates[best], n)
    return {"best_baseline": {"name": best, "iia": candidates[best]}, "margin": margin, "standard_error": error,
            "das_beats_baselines": bool(margin > 2 * error)}


def first_source(data: InterchangeData) -> torch.Tensor:
    """(N,) each example's source of its first intervened variable (its base when none is). Without
    `data.intervened`, the first source that differs from the base stands for it."""
    intervened = data.intervened if data.intervened is not None else data.sources != data.base[:, None]
    has_one = intervened.any(1)
    first = intervened.long().argmax(1)  # the first True per row (0 for a row of False)
    chosen = data.sources.gather(1, first[:, None])[:, 0]
    return torch.where(has_one, chosen, data.base)


def evaluate(
    site,
    trained: TrainedIntervention,
    data: InterchangeData,
    *,
    baselines: Sequence[str] = BASELINES,
    random_draws: int = 3,
    seed: int = 0,
    base_predictions: np.ndarray | torch.Tensor | None = None,
    engine: str = "fast",
    extra_baselines: Mapping[str, float] | None = None,
    activations: torch.Tensor | None = None,
) -> dict:
    """The IIA of `trained` at `site` on `data` with its interval, per intervened set, baselines and
    verdict (see the module docstring); a JSON-ready dict.

    Args:
        site: where `trained` intervenes (its name must match `trained.site`).
        trained: the intervention to evaluate.
        data: the test examples; its optional fields (base and source labels, intervened) add the
            label rates and the per-set IIA.
        baselines: which network baselines to run, of `BASELINES`: "full_patch", "random" (random
            subspaces of `trained`'s sizes) and "network" (no intervention and on the source).
        random_draws: how many random subspaces (mean, std and each draw are reported).
        seed: the random subspaces' seed.
        base_predictions: (N,) the unintervened network's class per example, if the caller has it;
            then "network_no_intervention" comes from it instead of a full patch from the base.
        engine: "fast", or "pyvene" to evaluate `trained` through pyvene (the baselines always run
            on the fast engine).
        extra_baselines: {name: IIA on the same examples} the caller measured elsewhere (a
            random-init control): reported with the others and candidates of the verdict.
        activations: the site state of every row of `data.inputs`, if the caller has it.
    """
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {BASELINES}")
    if engine not in engines.ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {engines.ENGINES}")
    labels = data.labels.cpu()
    # Each extra run is a fixed W (n, k) at the same site with its own view of the data: the full
    # patch needs one source per example, hence the first intervened source when there are several.
    one_source = InterchangeData(data.inputs, data.base, first_source(data)[:, None], data.labels)
    runs: dict[str, tuple[TrainedIntervention, InterchangeData]] = {}
    if "full_patch" in baselines:
        runs["full_patch"] = (same_site.full_patch(site), one_source)
    if "network" in baselines:
        if base_predictions is None:
            itself = InterchangeData(data.inputs, data.base, data.base[:, None], data.labels)
            runs["network_no_intervention"] = (same_site.full_patch(site), itself)
        on_source = InterchangeData(data.inputs, first_source(data), first_source(data)[:, None], data.labels)
        runs["network_on_source"] = (same_site.full_patch(site), on_source)
    randoms = same_site.random_subspaces(site, trained.subspace_sizes, random_draws, seed) if "random" in baselines else []
    cells = ([] if engine == "pyvene" else [(trained, data)]) + list(runs.values()) + [(one, data) for one in randoms]
    if activations is None and cells:
        with engines.frozen(site.model):
            activations = engines.cache_activations(site, data.inputs)
    predicted = engines.predict_cells(site, [one for one, _ in cells], [d for _, d in cells], activations=activations)
    if engine == "pyvene":
        predicted.insert(0, engines.predict(site, trained, data, "pyvene"))
    predictions, run_predictions, random_predictions = predicted[0], predicted[1 : 1 + len(runs)], predicted[1 + len(runs) :]

    hits = predictions == labels
    n, correct = len(labels), int(hits.sum())
    low, high = wilson_interval(correct, n)
    out = {
        "site": trained.site, "k": sum(trained.subspace_sizes), "subspace_sizes": list(trained.subspace_sizes), "engine": engine,
        "iia": correct / n, "n": n,
        "interval": {"low": low, "high": high, "confidence": CONFIDENCE, "method": "wilson"},
    }
    names = data.subset_names()
    if names is not None:
        subsets = sorted(set(names.tolist()), key=lambda s: (s.count(","), s))
        out["by_subset"] = {s: _rate(hits[torch.as_tensor(names == s)]) for s in subsets}
        out["n_by_subset"] = {s: int((names == s).sum()) for s in subsets}

    rates = _label_rates(data)
    for name, p in zip(runs, run_predictions, strict=True):
        rates[name] = _rate(p == labels)
    if base_predictions is not None:
        rates["network_no_intervention"] = _rate(torch.as_tensor(np.asarray(base_predictions)).reshape(-1) == labels)
    if randoms:
        draws = [_rate(p == labels) for p in random_predictions]
        rates["random_subspace"] = {"mean": float(np.mean(draws)), "std": float(np.std(draws)), "draws": draws}
    rates.update(extra_baselines or {})
    out["baselines"] = rates
    candidates = {name: (value["mean"] if isinstance(value, dict) else value) for name, value in rates.items()
                  if name in CHANCE or name in (extra_baselines or {})}
    out["verdict"] = {"rule": "IIA minus the best chance baseline > 2 standard errors", **verdict(out["iia"], candidates, n)}
    return out


def train_and_evaluate(site, train: InterchangeData, test: InterchangeData, config: DASConfig, *, engine: str = "fast",
                       desc: str = "DAS", **kwargs) -> tuple[TrainedIntervention, dict]:
    """Trains W on `train` (`engine.train`) and `evaluate`s it on `test` (keyword arguments as there).
    When both index the same inputs, their site states are computed once."""
    activations = kwargs.pop("activations", None)
    if activations is None and engine == "fast" and (train.inputs is test.inputs or torch.equal(train.inputs, test.inputs)):
        with engines.frozen(site.model):
            activations = engines.cache_activations(site, train.inputs)
    trained = engines.train(site, train, config, engine, desc, activations if engine == "fast" else None)
    same_inputs = activations is not None and (test.inputs is train.inputs or torch.equal(train.inputs, test.inputs))
    return trained, evaluate(site, trained, test, engine=engine, activations=activations if same_inputs else None, **kwargs)


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
    """The share of True in `hits`, as an exact ratio of counts (no float32 mean)."""
    return int(hits.sum()) / len(hits)
