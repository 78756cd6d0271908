"""The X+Y+Z task: counterfactual labels of every causal model, pairs, the held-out split."""

import numpy as np
import pytest

from causal_das.tasks import arithmetic as A

# (base, source) -> the sum each causal model gives after taking P from the source, by hand.
HAND_PICKED = [
    ((1, 2, 3), (10, 7, 4), {"(X+Y)+Z": 10 + 7 + 3, "(X+Z)+Y": 10 + 4 + 2, "X+(Y+Z)": 1 + 7 + 4,
                            "(X)+Y+Z": 10 + 2 + 3, "X+(Y)+Z": 1 + 7 + 3, "X+Y+(Z)": 1 + 2 + 4, "(X+Y+Z)": 10 + 7 + 4}),
    ((9, 1, 5), (2, 8, 6), {"(X+Y)+Z": 2 + 8 + 5, "(X+Z)+Y": 2 + 6 + 1, "X+(Y+Z)": 9 + 8 + 6,
                           "(X)+Y+Z": 2 + 1 + 5, "X+(Y)+Z": 9 + 8 + 5, "X+Y+(Z)": 9 + 1 + 6, "(X+Y+Z)": 2 + 8 + 6}),
    ((10, 10, 10), (1, 1, 1), {"(X+Y)+Z": 12, "(X+Z)+Y": 12, "X+(Y+Z)": 12, "(X)+Y+Z": 21, "X+(Y)+Z": 21, "X+Y+(Z)": 21, "(X+Y+Z)": 3}),
]


@pytest.mark.parametrize(("base", "source", "sums"), HAND_PICKED)
def test_counterfactual_labels_of_every_model(base, source, sums):
    assert set(sums) == set(A.MODELS)
    b, s = A.triple_index(*np.array([base]).T), A.triple_index(*np.array([source]).T)
    for name, expected_sum in sums.items():
        assert A.counterfactual_labels(A.get_model(name), b, s).tolist() == [expected_sum - 3], name


def test_families_and_factual_labels():
    assert [m.name for m in A.FAMILIES["arithmetic"]] == ["(X+Y)+Z", "(X+Z)+Y", "X+(Y+Z)"]
    assert [m.name for m in A.FAMILIES["simple"]] == ["(X)+Y+Z", "X+(Y)+Z", "X+Y+(Z)", "(X+Y+Z)"]
    everything = np.arange(A.N_TRIPLES)
    for model in A.MODELS.values():
        assert model.intermediate == ("P",)
        assert np.array_equal(A.labels_of(model, everything), A.LABELS)
    assert A.PROMPTS[A.triple_index(3, 10, 7)] == "3+10+7=" and A.LABELS.min() == 0 and A.LABELS.max() == 27
    with pytest.raises(ValueError, match="unknown causal model type"):
        A.get_family("geometric")


def test_pairs_cover_every_ordered_pair_once_and_test_pairs_are_fresh():
    ids = np.arange(A.N_PAIRS)
    base, source = A.decode_pairs(ids)
    assert (base != source).all() and np.array_equal(A.encode_pairs(base, source), ids)
    assert len(np.unique(base * 1000 + source)) == A.N_PAIRS == 999_000
    rng = np.random.default_rng(0)
    train = A.draw_pairs(rng, 20_000)
    test = A.draw_pairs(rng, 5_000, exclude=train)
    assert len(np.unique(train)) == 20_000 and len(np.unique(test)) == 5_000
    assert not np.intersect1d(train, test).size


def test_heldout_split_keeps_every_class_in_training():
    train, heldout = A.heldout_split(np.random.default_rng(1), 0.2)
    assert not np.intersect1d(train, heldout).size and len(train) + len(heldout) == A.N_TRIPLES
    assert set(A.LABELS[train]) == set(range(A.N_CLASSES))
    assert 150 <= len(heldout) <= 200


@pytest.mark.parametrize("text", ["0,1,2", "1,2", "11+1+1", "a,b,c", "1,2,3,4"])
def test_parse_triple_rejects(text):
    with pytest.raises(ValueError, match="1..10|three integers"):
        A.parse_triple(text)


def test_parse_triple_accepts():
    assert A.parse_triple("3,7,2") == (3, 7, 2) and A.parse_triple("10+1+9=") == (10, 1, 9)
