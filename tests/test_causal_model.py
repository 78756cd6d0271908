"""Causal models: a hand-written truth table, pyvene's CausalModel on the same inputs, sampling."""

import contextlib
import io
import itertools

import numpy as np
import pytest

from causal_das.causal_model import sample_counterfactuals
from causal_das.tasks.four_objects import TASKS, get_task

A, B, C, D = (np.array([[float(i), -float(i)]]) for i in range(1, 5))
LETTERS = {"A": A, "B": B, "C": C, "D": D}


def setting(pattern: str) -> dict:
    return {name: LETTERS[letter] for name, letter in zip("WXYZ", pattern, strict=True)}


# (task, base pattern, {variable: source pattern}, expected counterfactual output), worked by hand.
TRUTH_TABLE = [
    ("hierarchical_equality", "AABB", {}, True),
    ("hierarchical_equality", "ABCD", {}, True),
    ("hierarchical_equality", "AACD", {}, False),
    ("hierarchical_equality", "ABCC", {}, False),
    ("hierarchical_equality", "AABB", {"WX": "ABCD"}, False),  # WX: True -> False, YZ True
    ("hierarchical_equality", "ABCD", {"YZ": "AABB"}, False),  # YZ: False -> True, WX False
    ("hierarchical_equality", "ABCD", {"WX": "AACD", "YZ": "ABCC"}, True),  # both True
    ("hierarchical_equality", "AACD", {"WX": "ABCD"}, True),  # WX False, YZ False
    ("pattern_matching", "ABAB", {}, True),
    ("pattern_matching", "ABAC", {}, False),
    ("pattern_matching", "ABCB", {"P": "ABAD"}, True),  # P from source True, Q True
    ("pattern_matching", "ABAB", {"Q": "ABCD"}, False),
    ("pattern_matching", "ABCD", {"P": "ABAB", "Q": "ABAB"}, True),
    ("aabb_and", "AABB", {}, True),
    ("aabb_and", "AACD", {"YZ": "ABCC"}, True),
    ("aabb_and", "AABB", {"WX": "ABCC"}, False),
    ("abba", "ABBA", {}, True),
    ("abba", "ABCA", {"XY": "ABBC"}, True),
    ("abba", "ABBA", {"WZ": "ABBC"}, False),
]


@pytest.mark.parametrize(("task", "base", "sources", "expected"), TRUTH_TABLE)
def test_truth_table(task, base, sources, expected):
    model = get_task(task).causal_model()
    out = model.run_interchange(setting(base), {v: setting(p) for v, p in sources.items()})
    assert bool(out["O"][0]) is expected


def _pyvene_model(task, values):
    with contextlib.redirect_stdout(io.StringIO()):
        from pyvene import CausalModel as PyveneCausalModel
    t = get_task(task)
    (a1, b1), (a2, b2) = t.pairs
    v1, v2 = t.variable_names
    names = "WXYZ"
    combine = (lambda x, y: x == y) if t.combine == "eq" else (lambda x, y: x and y)

    def filler():
        return values[0]

    return PyveneCausalModel(
        ["W", "X", "Y", "Z", v1, v2, "O"],
        {**{n: values for n in names}, v1: [True, False], v2: [True, False], "O": [True, False]},
        {"W": [], "X": [], "Y": [], "Z": [], v1: [names[a1], names[b1]], v2: [names[a2], names[b2]], "O": [v1, v2]},
        {"W": filler, "X": filler, "Y": filler, "Z": filler,
         v1: lambda x, y: np.array_equal(x, y), v2: lambda x, y: np.array_equal(x, y), "O": combine},
    )


@pytest.mark.parametrize("task", sorted(TASKS))
def test_counterfactual_labels_match_pyvene(task):
    t = get_task(task)
    data = sample_counterfactuals(t.causal_model(), t.sampler(3), 300, np.random.default_rng(1))
    values = [data.base["W"][0]]
    reference = _pyvene_model(task, values)
    for i in range(len(data)):
        base = {n: data.base[n][i] for n in "WXYZ"}
        sources = {v: {n: data.sources[v][n][i] for n in "WXYZ"} for v in data.variables if data.intervened[v][i]}
        expected = reference.run_interchange(base, sources)["O"]
        assert bool(expected) == bool(data.labels[i]), (i, base, sources)


def test_sampling_semantics():
    t = get_task("hierarchical_equality")
    data = sample_counterfactuals(t.causal_model(), t.sampler(4), 30000, np.random.default_rng(0))
    names = data.subset_names()
    for subset in ("{WX}", "{YZ}", "{WX,YZ}"):
        assert abs(np.mean(names == subset) - 1 / 3) < 0.015
    for v in data.variables:
        off = ~data.intervened[v]
        # A variable that is not intervened reads its source from the base.
        for obj in "WXYZ":
            np.testing.assert_array_equal(data.sources[v][obj][off], data.base[obj][off])
        # An intervened variable's source is an independent draw (equal to the base almost never).
        assert np.mean(np.all(data.sources[v]["W"][~off] == data.base["W"][~off], axis=1)) < 0.01
    # The four patterns are equally likely: each intermediate variable is True half the time.
    wx = t.causal_model().run_forward(data.base)["WX"]
    assert abs(wx.mean() - 0.5) < 0.015


def test_sampling_is_deterministic_and_rng_driven():
    t = get_task("pattern_matching")
    first = sample_counterfactuals(t.causal_model(), t.sampler(4), 100, np.random.default_rng(5))
    second = sample_counterfactuals(t.causal_model(), t.sampler(4), 100, np.random.default_rng(5))
    third = sample_counterfactuals(t.causal_model(), t.sampler(4), 100, np.random.default_rng(6))
    np.testing.assert_array_equal(first.base["W"], second.base["W"])
    np.testing.assert_array_equal(first.labels, second.labels)
    assert not np.array_equal(first.base["W"], third.base["W"])


def test_relabel_uses_the_other_models_mechanisms():
    abab = get_task("pattern_matching")
    data = sample_counterfactuals(abab.causal_model(), abab.sampler(2), 2000, np.random.default_rng(3))
    relabelled = data.relabel(get_task("abba").causal_model())
    assert relabelled.variables == ("WZ", "XY")
    manual = get_task("abba").causal_model().run_interchange(
        data.base, {"WZ": data.sources["P"], "XY": data.sources["Q"]}, {"WZ": data.intervened["P"], "XY": data.intervened["Q"]}
    )["O"]
    np.testing.assert_array_equal(relabelled.labels, manual)
    assert not np.array_equal(relabelled.labels, data.labels)


def test_unknown_task_and_bad_graph():
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")
    from causal_das.causal_model import CausalModel, Mechanism

    with pytest.raises(ValueError, match="unknown parents"):
        CausalModel("bad", ("A",), {"O": Mechanism(("B",), lambda b: b)}, "O")


def test_all_subsets_for_two_variables():
    from causal_das.causal_model import intervention_subsets

    assert intervention_subsets(["A", "B"]) == [("A",), ("B",), ("A", "B")]
    assert list(itertools.chain(*intervention_subsets(["A"]))) == ["A"]
