"""Counterfactual data for any task (`das.counterfactuals`) and IIA with its baselines
(`das.evaluation`), on a hand-built causal model with two intermediate variables and tiny MLPs.

The causal model: four bits x0..x3, A = x0 + x1, B = x2 + x3, O = A > B. The planted MLP computes
it literally: hidden unit 0 of layer 0 is A, unit 1 is B (units 2-4 carry inputs nobody reads), and
layer 1 and the head turn (A, B) into O exactly, so DAS with one dimension per variable can align
perfectly while a random subspace cannot."""

import dataclasses

import numpy as np
import pytest
import torch

from causal_das.causal_model import CausalModel, Mechanism, sample_counterfactuals
from causal_das.das import baselines as same_site
from causal_das.das import counterfactuals, engine, evaluation
from causal_das.models.mlp import MLPClassifier, MLPSite

WIDTH = 8
BITS = ("x0", "x1", "x2", "x3")


def causal_model() -> CausalModel:
    return CausalModel(
        name="A>B",
        inputs=BITS,
        mechanisms={
            "A": Mechanism(("x0", "x1"), lambda a, b: a + b),
            "B": Mechanism(("x2", "x3"), lambda a, b: a + b),
            "O": Mechanism(("A", "B"), lambda a, b: (a > b).astype(np.int64)),
        },
        output="O",
    )


def sampler(rng: np.random.Generator, n: int) -> dict:
    return {name: rng.integers(0, 2, size=n) for name in BITS}


def features(setting: dict) -> torch.Tensor:
    """(n, WIDTH) float: the four bits, zero padded to the MLP's width."""
    bits = torch.as_tensor(np.stack([setting[name] for name in BITS], axis=1), dtype=torch.float32)
    return torch.cat([bits, torch.zeros(len(bits), WIDTH - len(BITS))], dim=1)


def tokens(setting: dict) -> torch.Tensor:
    """(n, 6) long: a prompt-like encoding, BOS then one token per bit then EOS."""
    bits = torch.as_tensor(np.stack([setting[name] for name in BITS], axis=1), dtype=torch.long)
    return torch.cat([torch.full((len(bits), 1), 9), bits + 2, torch.full((len(bits), 1), 8)], dim=1)


class Counting:
    """Wraps a function and records the row count of every call."""

    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, argument):
        self.calls.append(len(next(iter(argument.values()))) if isinstance(argument, dict) else len(argument))
        return self.function(argument)


def planted_mlp() -> MLPClassifier:
    model = MLPClassifier(WIDTH, n_layers=2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        first = model.mlp.h[0].ff1.weight  # hidden layer 0 (the site): row i is unit i
        first[0, 0] = first[0, 1] = 1.0  # A = x0 + x1
        first[1, 2] = first[1, 3] = 1.0  # B = x2 + x3
        first[2, 0], first[3, 3], first[4, 1] = 1.0, 1.0, 1.0  # the inputs again, read by nothing
        second = model.mlp.h[1].ff1
        second.weight[0, 0], second.weight[0, 1] = 1.0, -1.0  # relu(A - B)
        second.weight[1, 0], second.weight[1, 1], second.bias[1] = 1.0, -1.0, -1.0  # relu(A - B - 1)
        # O = relu(A - B) - relu(A - B - 1) for integer A, B: logit of class 1 minus class 0 is 10 (O - 1/2).
        model.score.weight[1, 0], model.score.weight[1, 1], model.score.bias[1] = 10.0, -10.0, -5.0
    return model.eval()


@pytest.fixture(scope="module")
def cf():
    return sample_counterfactuals(causal_model(), sampler, 400, np.random.default_rng(0))


@pytest.mark.parametrize("encode", [features, tokens])
def test_build_dedups_and_decodes(cf, encode):
    counting = Counting(encode)
    data = counterfactuals.build(cf, counting)
    assert counting.calls == [3 * len(cf)]  # once, on the base and both sources together
    assert data.inputs.dtype == encode(cf.base).dtype
    # 16 possible inputs: duplicates collapse, and the table holds each row once.
    assert len(data.inputs) <= 16 and len(torch.unique(data.inputs, dim=0)) == len(data.inputs)
    assert torch.equal(data.inputs[data.base], encode(cf.base))
    assert data.variables == ("A", "B") and tuple(data.sources.shape) == (len(cf), 2)
    for column, v in enumerate(cf.variables):
        on = torch.as_tensor(cf.intervened[v])
        assert torch.equal(data.intervened[:, column], on)
        assert torch.equal(data.inputs[data.sources[on, column]], encode(cf.sources[v])[on])
        assert torch.equal(data.sources[~on, column], data.base[~on])
        assert 0 < int(on.sum()) < len(cf)  # both cases occur, so neither check is vacuous
    assert torch.equal(data.labels, torch.as_tensor(cf.labels))
    assert torch.equal(data.base_labels, torch.as_tensor(cf.base_labels))
    assert torch.equal(data.source_labels, torch.as_tensor(cf.source_labels))
    assert list(data.subset_names()) == list(cf.subset_names())


def test_table_order_does_not_depend_on_example_order(cf):
    order = np.random.default_rng(1).permutation(len(cf))
    shuffled = dataclasses.replace(
        cf, base={k: a[order] for k, a in cf.base.items()}, sources={v: {k: a[order] for k, a in s.items()} for v, s in cf.sources.items()},
        intervened={v: m[order] for v, m in cf.intervened.items()}, labels=cf.labels[order], base_labels=cf.base_labels[order],
        source_labels=cf.source_labels[order])
    data, again = counterfactuals.build(cf, features), counterfactuals.build(shuffled, features)
    assert torch.equal(data.inputs, again.inputs)
    assert torch.equal(data.base[order], again.base) and torch.equal(data.sources[order], again.sources)


def test_non_intervened_source_is_the_base_even_if_encoded_apart(cf):
    # Hand-built data whose non-intervened "sources" are not copies of the base: still a no-op swap.
    other = sampler(np.random.default_rng(5), len(cf))
    messy = dataclasses.replace(cf, sources={v: other for v in cf.variables})
    data = counterfactuals.build(messy, features)
    off = ~torch.as_tensor(cf.intervened["A"])
    assert torch.equal(data.sources[off, 0], data.base[off])
    assert not torch.equal(data.inputs[data.base[off]], features(other)[off])  # the raw rows did differ


def test_label_of_maps_every_label_once(cf):
    label_of = Counting(lambda values: torch.as_tensor(values * 10 + 3))
    data = counterfactuals.build(cf, features, label_of)
    assert label_of.calls == [3 * len(cf)]
    assert torch.equal(data.labels, torch.as_tensor(cf.labels * 10 + 3))
    assert torch.equal(data.base_labels, torch.as_tensor(cf.base_labels * 10 + 3))
    assert torch.equal(data.source_labels, torch.as_tensor(cf.source_labels * 10 + 3))
    assert data.labels.dtype == torch.int64


def test_build_many_shares_one_table():
    rng = np.random.default_rng(2)
    train_cf, test_cf = (sample_counterfactuals(causal_model(), sampler, n, rng) for n in (50, 30))
    counting = Counting(features)
    train, test = counterfactuals.build_many([train_cf, test_cf], counting)
    assert counting.calls == [3 * 80]
    assert train.inputs is test.inputs
    for data, one in ((train, train_cf), (test, test_cf)):
        assert len(data) == len(one) and torch.equal(data.inputs[data.base], features(one.base))
        assert torch.equal(data.labels, torch.as_tensor(one.labels))
    # sample_many draws the same examples from the same generator, into one table.
    drawn = counterfactuals.sample_many(causal_model(), sampler, (50, 30), np.random.default_rng(2), features)
    assert drawn[0].inputs is drawn[1].inputs
    assert torch.equal(drawn[1].labels, test.labels) and torch.equal(drawn[1].inputs[drawn[1].sources], test.inputs[test.sources])
    one = counterfactuals.sample(causal_model(), sampler, 50, np.random.default_rng(2), features)
    assert torch.equal(one.labels, train.labels)


def test_build_errors(cf):
    with pytest.raises(ValueError, match="base has 400 examples but labels has 399"):
        counterfactuals.build(dataclasses.replace(cf, labels=cf.labels[:-1]), features)
    with pytest.raises(ValueError, match="first axis must be one row per setting"):
        counterfactuals.build(cf, lambda setting: features(setting)[:-1])
    floats = dataclasses.replace(cf, labels=cf.labels * 1.0, base_labels=cf.base_labels * 1.0, source_labels=cf.source_labels * 1.0)
    with pytest.raises(ValueError, match="not integer class ids: pass label_of") as error:
        counterfactuals.build(floats, features)
    assert "\n" not in str(error.value)
    assert torch.equal(counterfactuals.build(floats, features, lambda v: v.astype(np.int64)).labels, torch.as_tensor(cf.labels))
    with pytest.raises(ValueError, match="label_of returned shape"):
        counterfactuals.build(cf, features, lambda v: v[:-1])
    with pytest.raises(ValueError, match="no counterfactual data"):
        counterfactuals.build_many([], features)


def test_interchange_data_optional_fields(cf):
    data = counterfactuals.build(cf, features)
    plain = engine.InterchangeData(data.inputs, data.base, data.sources, data.labels)  # the old four fields
    assert plain.base_labels is None and plain.intervened is None and plain.subset_names() is None
    assert plain.to(torch.device("cpu")).base_labels is None
    moved = data.to(torch.device("cpu"))
    assert torch.equal(moved.intervened, data.intervened) and torch.equal(moved.source_labels, data.source_labels)
    assert moved.variables == data.variables
    with pytest.raises(ValueError, match="base_labels has shape"):
        dataclasses.replace(data, base_labels=data.base_labels[:-1])
    with pytest.raises(ValueError, match="intervened has shape"):
        dataclasses.replace(data, intervened=data.intervened[:, :1])
    with pytest.raises(ValueError, match="variable names"):
        dataclasses.replace(data, variables=("A",))


def test_wilson_interval_matches_statsmodels():
    low, high = evaluation.wilson_interval(37, 50)
    # The closed form (Wilson 1927), z the 97.5% normal quantile.
    z, n, p = 1.959963984540054, 50, 37 / 50
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert abs(low - (centre - half)) < 1e-9 and abs(high - (centre + half)) < 1e-9
    proportion = pytest.importorskip("statsmodels.stats.proportion", reason="statsmodels is an optional cross-check")
    expected = proportion.proportion_confint(37, 50, alpha=0.05, method="wilson")
    assert abs(low - expected[0]) < 1e-9 and abs(high - expected[1]) < 1e-9


def test_verdict_rule():
    assert abs(evaluation.margin_standard_error(0.9, 0.8, 100) - 0.05) < 1e-12
    beats = evaluation.verdict(0.9, {"random_subspace": 0.5, "network_no_intervention": 0.8}, 400)  # 2 SE = 0.05 < 0.1
    assert beats["best_baseline"] == {"name": "network_no_intervention", "iia": 0.8} and beats["das_beats_baselines"] is True
    assert evaluation.verdict(0.9, {"random_subspace": 0.8}, 25)["das_beats_baselines"] is False  # 2 SE = 0.2 > 0.1
    assert evaluation.verdict(0.9, {}, 25)["das_beats_baselines"] is None


@pytest.fixture(scope="module")
def planted():
    model = planted_mlp()
    rng = np.random.default_rng(3)
    train, test = counterfactuals.sample_many(causal_model(), sampler, (1024, 600), rng, features)
    return MLPSite(model, 0), train, test


def test_planted_network_is_exact(planted):
    # The identity rotation with one axis per variable (units 0 and 1) reproduces every label.
    site, _, test = planted
    axes = same_site.fixed(site, torch.eye(WIDTH)[:, :2], "axes", (1, 1))
    predicted = engine.predict(site, axes, test)
    assert torch.equal(predicted, test.labels)


def test_evaluate_fields_and_label_rates(planted):
    site, _, test = planted
    rotated = same_site.random_subspaces(site, (1, 1), 1, seed=11)[0]  # a fixed W that gets some right, not all
    result = evaluation.evaluate(site, rotated, test, random_draws=2)
    predictions = engine.predict(site, rotated, test)
    hits = (predictions == test.labels).numpy()
    assert result["n"] == len(test) and result["iia"] == hits.mean() and 0.2 < result["iia"] < 0.95
    interval = result["interval"]
    assert (interval["low"], interval["high"]) == evaluation.wilson_interval(int(hits.sum()), len(test))
    assert interval["low"] < result["iia"] < interval["high"]
    names = test.subset_names()
    assert set(result["by_subset"]) == {"{A}", "{B}", "{A,B}"} and sum(result["n_by_subset"].values()) == len(test)
    for name, value in result["by_subset"].items():
        assert abs(value - hits[names == name].mean()) < 1e-12
    labels, base_labels, source_labels = (t.tolist() for t in (test.labels, test.base_labels, test.source_labels))
    copy_base = sum(a == b for a, b in zip(labels, base_labels, strict=True)) / len(labels)
    copy_source = sum(a == s for a, s in zip(labels, source_labels, strict=True)) / len(labels)
    rates = result["baselines"]
    assert rates["copy_base_label"] == copy_base and rates["copy_source_label"] == copy_source
    assert 0 < copy_base < 1 and 0 < copy_source < 1
    # The planted network is exact, so with no intervention it scores the copy-base rate, on the source the copy-source rate.
    assert rates["network_no_intervention"] == copy_base and rates["network_on_source"] == copy_source
    assert len(rates["random_subspace"]["draws"]) == 2
    with pytest.raises(ValueError, match="unknown baselines"):
        evaluation.evaluate(site, rotated, test, baselines=("pca",))


def test_full_swap_equals_full_patch_baseline(planted):
    site, train, test = planted
    single = [dataclasses.replace(d, sources=d.sources[:, :1], intervened=d.intervened[:, :1], variables=("A",)) for d in (train, test)]
    trained, result = evaluation.train_and_evaluate(site, single[0], single[1], engine.DASConfig((WIDTH,)), random_draws=1)
    assert trained.history["note"] == engine.FULL_SWAP_NOTE
    assert result["iia"] == result["baselines"]["full_patch"]
    assert result["k"] == WIDTH and result["iia"] < 0.9  # copying the whole source is not the counterfactual


def test_das_finds_the_planted_variables(planted):
    site, train, test = planted
    config = engine.DASConfig((1, 1), epochs=3, batch_size=64, lr=0.1, seed=0)
    trained, result = evaluation.train_and_evaluate(site, train, test, config, random_draws=3, seed=1)
    random_mean = result["baselines"]["random_subspace"]["mean"]
    assert result["iia"] >= 0.95
    assert random_mean <= result["iia"] - 0.15
    assert result["verdict"]["das_beats_baselines"] is True
    assert min(result["by_subset"].values()) >= 0.9
