"""The disentangling pipeline on planted mixtures whose answer is known: a network that computes both
partial sums X+Y and Y+Z on every input but reads (X+Y)+Z on one region of the triples and X+(Y+Z)
on the rest. Its IIA graphs are measured through the fast engine like the GPT-2's (every ordered
pair, the planted W); the division must return the planted partition, and the classifier the
region where a feature can express it.

The mixture is the case the thesis's mean rule gets wrong: on the other region the (X+Y)+Z
intervention changes nothing, so a triple there has weight 0.5 (1 when the partial sums agree) to
every triple of the first region, and a set of weight-1 edges keeps its mean above 0.8 while it
takes in a few hundred of them."""

import functools

import numpy as np
import pytest
import torch
from torch import nn

from causal_das.analysis import classification, division
from causal_das.analysis.graphs import Graph, correct_matrices
from causal_das.das.data import TrainedIntervention
from causal_das.das.site import SiteName
from causal_das.studies.arithmetic_analysis import INPUTS
from causal_das.tasks import arithmetic as A

FIRST, SECOND = "(X+Y)+Z", "X+(Y+Z)"
MIXTURES = {  # name: (where the network reads (X+Y)+Z, X+(Y+Z) everywhere else; whether it slips)
    "threshold X <= 5": (lambda x, y, z: x <= 5, False),
    "diagonal X > Y": (lambda x, y, z: x > y, False),  # no single feature of the classifier separates it
    # Like a trained network, it errs: one class too high whenever the partial sum it reads plus
    # three times the other input is a multiple of 17, so about 6% of the pairs of either region
    # come out wrong, scattered over the pairs rather than on a few triples.
    "threshold X <= 5, with slips": (lambda x, y, z: x <= 5, True),
}


class MixtureNetwork(nn.Module):
    """Site state: R [X+Y, Y+Z, X, Y, Z] (a rotation R, so no neuron is a variable). The output reads
    (X+Y) + Z where `region(X, Y, Z)` holds and X + (Y+Z) elsewhere, the region decided from the
    copies of X, Y and Z that neither partial-sum intervention touches."""

    def __init__(self, region, slips: bool = False):
        super().__init__()
        self.region, self.slips = region, slips
        self.register_buffer("rotation", torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(3)))[0])
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so `engine.frozen` and the device work

    def prefix(self, ids: torch.Tensor) -> torch.Tensor:
        x, y, z = (ids[:, p].float() for p in (0, 2, 4))
        return torch.stack([x + y, y + z, x, y, z], dim=1) @ self.rotation.T

    def suffix(self, state: torch.Tensor) -> torch.Tensor:
        xy, yz, x, y, z = (state @ self.rotation).unbind(1)
        first = self.region(x.round(), y.round(), z.round())
        total = torch.where(first, xy + z, x + yz)
        if self.slips:
            total = total + (torch.where(first, xy.round() + 3 * z.round(), yz.round() + 3 * x.round()) % 17 == 0).float()
        classes = torch.arange(A.N_CLASSES, dtype=torch.float) + A.OFFSET
        return -((total[:, None] - classes) ** 2) * self.scale


class MixtureSite:
    def __init__(self, net: MixtureNetwork):
        self.model, self.n, self.coordinates = net, 5, None
        self.name = SiteName("planted", "mixture", 0, None)

    def prefix(self, ids):
        return self.model.prefix(ids)

    def suffix(self, state):
        return self.model.suffix(state)


class Planted:
    """What `correct_matrices` needs of a network: the prompts and the site states."""

    def __init__(self, name: str):
        self.model = MixtureNetwork(*MIXTURES[name])
        self.input_ids = torch.tensor([[x, 11, y, 11, z, 12] for x, y, z in A.TRIPLES.tolist()])

    def site_states(self, site):
        with torch.no_grad():
            return site.prefix(self.input_ids)


@functools.cache
def planted_graphs(name: str) -> tuple[dict[str, Graph], list[str]]:
    """The IIA graphs of the two planted alignments (W = the partial sum's direction) and the planted labels."""
    planted = Planted(name)
    site = MixtureSite(planted.model)
    trained = [TrainedIntervention(str(site.name), 5, (1,), planted.model.rotation[:, [column]].clone()) for column in (0, 1)]
    matrices = correct_matrices(planted, site, trained, [A.get_model(FIRST), A.get_model(SECOND)], INPUTS.labels)
    graphs = {model: Graph(model, 0, 1, correct) for model, correct in zip((FIRST, SECOND), matrices, strict=True)}
    x, y, z = A.TRIPLES.T
    return graphs, np.where(MIXTURES[name][0](x, y, z), FIRST, SECOND).tolist()


@pytest.mark.parametrize("name", [name for name, (_, slips) in MIXTURES.items() if not slips])
def test_the_planted_network_computes_the_sum_and_its_graphs_are_what_it_plants(name):
    graphs, planted = planted_graphs(name)
    net = Planted(name)
    with torch.no_grad():
        assert torch.equal(net.model.suffix(net.model.prefix(net.input_ids)).argmax(-1), torch.as_tensor(A.LABELS))
    first = np.asarray(planted) == FIRST
    correct = graphs[FIRST].correct
    # Where it reads (X+Y)+Z every source's X+Y is taken; elsewhere only equal partial sums come out right.
    assert correct[first].sum() == first.sum() * (A.N_TRIPLES - 1)
    same = A.intermediate_values(A.get_model(FIRST))
    others = np.flatnonzero(~first)
    block = correct[np.ix_(others, others)]
    assert np.array_equal(block, (same[others][:, None] == same[others][None, :]) & ~np.eye(len(others), dtype=bool))


# With slips, each triple's mean IIA with the rest of its planted region is 0.855 to 0.96, so the
# planted partition satisfies the member rule up to 0.85 (checked below), not at 0.9 or 1.
CASES = [(name, faithfulness) for name, (_, slips) in MIXTURES.items() for faithfulness in ((0.85, 0.8) if slips else (1.0, 0.9, 0.8))]


@pytest.mark.parametrize(("name", "faithfulness"), CASES)
def test_the_member_rule_recovers_the_planted_partition_where_the_mean_rule_over_grows(name, faithfulness):
    graphs, planted = planted_graphs(name)
    weights = {m: g.weight for m, g in graphs.items()}
    regions = {m: np.flatnonzero(np.asarray(planted) == m).tolist() for m in (FIRST, SECOND)}
    assert min(division.weakest_member(weights[m], regions[m]) for m in regions) >= faithfulness  # the planted answer is a valid one
    if MIXTURES[name][1]:
        wrong = 1 - np.mean([division.mean_pairwise(weights[m], regions[m]) for m in regions])
        assert 0.03 < wrong < 0.1  # the slips make a few percent of each region's own pairs wrong
    result = division.divide_both(weights, INPUTS, [FIRST, SECOND], faithfulness, "member")
    member, mean = division.agreement(result["assignment"], planted), division.agreement(result["other_rule"]["assignment"], planted)
    print(f"{name}, faithfulness {faithfulness}: agreement with the planted partition, member rule {member:.3f}, mean rule {mean:.3f}")
    assert member >= 0.98, (name, faithfulness, result["sizes"])
    for m in (FIRST, SECOND):
        assert result["weakest_member_iia"][m] >= faithfulness
    if faithfulness < 1.0:  # the mean rule's first set takes in triples of the other region
        assert result["other_rule"]["sizes"][FIRST] > result["sizes"][FIRST] and mean < member


def test_the_classifier_recovers_a_region_a_feature_can_express():
    graphs, planted = planted_graphs("threshold X <= 5")
    result = division.divide({m: g.weight for m, g in graphs.items()}, INPUTS, [FIRST, SECOND], 0.8)
    record = classification.classify(result["assignment"], {m: g.correct for m, g in graphs.items()}, INPUTS, 0.2, range(1, 6), 5, 0)
    assert record["heldout_accuracy"] >= 0.98 and record["chosen_depth"] == 1
    assert "X <= 5.50" in record["rules"], record["rules"]
    # The check against measurements: held-out triples predicted (X+Y)+Z are explained by it.
    assert record["heldout_measured_iia_by_prediction"][FIRST]["iia_with_division_set"][FIRST] > 0.99


@pytest.mark.parametrize("name", [name for name, (_, slips) in MIXTURES.items() if not slips])
def test_planted_sets_are_stable_under_resampling_and_noise_sets_are_not(name):
    """Divisions of 80% subsets keep a planted region's set (Jaccard index ~1 with the full set); on
    graphs of uniform noise around the threshold the sets depend on which triples are there."""
    from causal_das.analysis import stability

    graphs, _ = planted_graphs(name)
    weights = {m: g.weight for m, g in graphs.items()}
    full = division.divide(weights, INPUTS, [FIRST, SECOND], 0.8, "member")
    result = stability.resampled(weights, INPUTS, [FIRST, SECOND], 0.8, "member", full, resamples=4)
    assert all(s["stable"] and s["jaccard_min"] >= 0.95 for s in result["sets"].values()), result["sets"]
    assert result["triples_keeping_label"] >= 0.95
    rng = np.random.default_rng(0)
    noise = {m: (lambda u: np.triu(u, 1) + np.triu(u, 1).T)(rng.uniform(0.6, 1.0, (A.N_TRIPLES, A.N_TRIPLES))) for m in (FIRST, SECOND)}
    full = division.divide(noise, INPUTS, [FIRST, SECOND], 0.8, "member")
    result = stability.resampled(noise, INPUTS, [FIRST, SECOND], 0.8, "member", full, resamples=4)
    assert not any(s["stable"] for s in result["sets"].values()), result["sets"]
    assert result["triples_keeping_label"] < 0.8


def test_the_classifier_keeps_its_rule_over_other_splits_and_finds_none_in_random_labels():
    """Refitting on other held-out splits moves a planted region's accuracy and first rule by
    nothing; on labels drawn at random no split's tree beats the majority by much, and no rule holds:
    the trees are one leaf (no split changes a prediction) or their first rule changes with the split."""
    graphs, _ = planted_graphs("threshold X <= 5")
    correct = {m: g.correct for m, g in graphs.items()}
    result = division.divide({m: g.weight for m, g in graphs.items()}, INPUTS, [FIRST, SECOND], 0.8)
    record = classification.classify(result["assignment"], correct, INPUTS, 0.2, range(1, 6), 5, 0, splits=5)
    other = record["other_splits"]
    assert record["first_split"] == "X <= 5.50" and other["same_first_split"] == 1.0, other["first_split_counts"]
    assert other["heldout_accuracy"]["min"] >= 0.97 and other["splits_above_majority"] == 5
    low, high = record["heldout_accuracy_interval95"]
    assert 0.95 < low < record["heldout_accuracy"] <= high <= 1.0
    labels = np.random.default_rng(0).choice([FIRST, SECOND], A.N_TRIPLES).tolist()
    other = classification.classify(labels, correct, INPUTS, 0.2, range(1, 6), 5, 0, splits=5)["other_splits"]
    assert other["above_majority_mean"] < 0.05, other
    assert set(other["first_split_counts"]) == {"(one leaf)"} or other["same_first_split"] < 1.0, other


def test_a_planted_clique_is_stable_under_resampling_and_cliques_of_noise_are_not():
    """The triples where the network reads (X+Y)+Z form one clique of weight-1 edges; peeled from 80%
    subsets it stays the same triples. The largest clique of a random graph depends on which
    triples are there."""
    from causal_das.analysis import cliques, stability

    graphs, planted = planted_graphs("threshold X <= 5")
    adjacency = graphs[FIRST].agreement
    full = cliques.peel_cliques(adjacency, 5, 0)  # greedy cliques, for speed: the planted one is found all the same
    assert set(full[0]["nodes"]) == set(np.flatnonzero(np.asarray(planted) == FIRST).tolist())
    result = stability.resampled_cliques(adjacency, full, 5, 0, resamples=3)
    assert result["stable"] and result["largest_jaccard_min"] >= 0.95, result
    rng = np.random.default_rng(0)
    noise = np.triu(rng.random((A.N_TRIPLES, A.N_TRIPLES)) < 0.5, 1)
    noise = noise | noise.T
    full = cliques.peel_cliques(noise, 12, 0)
    result = stability.resampled_cliques(noise, full, 12, 0, resamples=3)
    assert not result["stable"] and result["largest_jaccard_mean"] < 0.5, result


def test_runs_that_agree_are_stable_across_seeds_and_runs_that_divide_otherwise_are_not(tmp_path):
    """The seed comparison of two runs: the same division twice has every set stable and every triple
    one label; a run whose network reads the models on another region (the diagonal instead of
    the threshold) changes the sets, and the comparison says so."""
    from causal_das.analysis import seed_variation

    def run(name):
        graphs, _ = planted_graphs(name)
        row = division.divide_both({m: g.weight for m, g in graphs.items()}, INPUTS, [FIRST, SECOND], 0.8, "member")
        return {"layers": [{**row, "layer": 0}]}

    threshold, diagonal = run("threshold X <= 5"), run("diagonal X > Y")
    same = seed_variation.compare_runs([threshold, threshold], [None, None], [None, None], ["a", "b"])["groups"][0]
    assert same["triples_with_one_label_in_every_run"] == 1.0 and all(m["stable"] and m["jaccard_min"] == 1.0 for m in same["models"].values())
    other = seed_variation.compare_runs([threshold, threshold, diagonal], [None] * 3, [None] * 3, ["a", "b", "c"])["groups"][0]
    assert not any(m["stable"] for m in other["models"].values()), other["models"]
    assert other["triples_with_one_label_in_every_run"] < 0.8
    from causal_das.plots.disentangling import plot_seed_variation
    from causal_das.runtime.io import atomic_write_json

    atomic_write_json(tmp_path / "seeds.json", seed_variation.compare_runs([threshold, threshold, diagonal], [None] * 3, [None] * 3,
                                                                           ["a/x", "b/x", "c/x"]))
    assert plot_seed_variation(tmp_path / "seeds.json", tmp_path / "seeds.png").stat().st_size > 10_000
    # A run that left a model out (no real alignment anywhere) compares as that model's empty set.
    row = threshold["layers"][0]
    without = {"layers": [{**row, "order": [FIRST], "sets": {FIRST: row["sets"][FIRST]}}]}
    models = seed_variation.compare_runs([threshold, without], [None] * 2, [None] * 2, ["a", "b"])["groups"][0]["models"]
    assert models[FIRST]["stable"] and models[SECOND]["in_runs"] == [True, False] and models[SECOND]["sites"][1] == "left out"
    assert models[SECOND]["jaccard_mean"] == 0.0 and not models[SECOND]["stable"]
    with pytest.raises(ValueError, match="at least two"):
        seed_variation.compare_runs([threshold], [None], [None], ["a"])


def test_the_regions_say_whether_the_known_answer_is_the_only_one():
    """`region_iia`: each model's mean IIA within each region of the planted partition. The planted
    mixture reads each partial sum on its own region only; a network that also holds the second model
    on the first region (as an IIT network may: the induction does not forbid it) is not exclusive,
    and its agreement with the partition then says less."""
    graphs, planted = planted_graphs("threshold X <= 5")
    weights = {m: g.weight for m, g in graphs.items()}
    result = division.divide(weights, INPUTS, [FIRST, SECOND], 0.8)
    regions = division.region_iia(weights, planted, 0.8, result["assignment"])
    assert regions["exclusive"], regions
    assert regions["assigned"][FIRST].get(FIRST, 0) >= 0.98 * planted.count(FIRST)  # the region's inputs went to its model
    assert sum(regions["assigned"][SECOND].values()) == planted.count(SECOND)
    assert regions["iia"][FIRST][FIRST] > 0.95 and regions["iia"][SECOND][SECOND] > 0.95
    assert regions["iia"][FIRST][SECOND] < 0.8 and regions["iia"][SECOND][FIRST] < 0.8
    everywhere = {FIRST: weights[FIRST], SECOND: np.ones_like(weights[SECOND]) - np.eye(len(planted), dtype=weights[SECOND].dtype)}
    shared = division.region_iia(everywhere, planted, 0.8)
    assert not shared["exclusive"] and shared["iia"][SECOND][FIRST] == pytest.approx(1.0)
