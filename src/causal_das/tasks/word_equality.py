"""Hierarchical equality in words: a language model reads four words and answers "yes" or "no".

The causal model is the one of pyvene's DAS tutorial (`four_objects.hierarchical_equality`) with
words for objects: two intermediate booleans, WX = (W == X) and YZ = (Y == Z), and the output
O = (WX == YZ), said as the next token after the prompt: "yes" when the two comparisons agree.

The same four words are written in one of several templates of different token lengths, chosen per
example by a fifth input, T, that no mechanism reads. An interchange keeps the base's template, so a
base and its sources are often written differently and a variable's word sits at a different token
index in each: DAS positions here are functions of the prompt (`prompts.token_of("X")`), not fixed
indices.

Inputs are drawn like the tutorial's objects, each pair equal or not independently, but equal with
probability 0.3 rather than 1/2 (`EQUAL_PROBABILITY` says why), so the answer is "yes" 58% of the
time. Words are uniform, a different second word uniform among the others. A fixed fifth of all (W, X, Y, Z, T) settings
is held out (`sampler("heldout")`) so a trained network's accuracy on prompts it never saw can be
measured; DAS draws from every setting (`sampler()`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from causal_das.causal_model import CausalModel, InputSampler, Mechanism, Setting
from causal_das.models import prompts

WORDS = ("red", "green", "blue", "pink", "gold", "gray")
VARIABLES = ("W", "X", "Y", "Z")
TEMPLATES = (
    "{W} {X} {Y} {Z} ?",  # 5 tokens
    "is {W} like {X} as {Y} is like {Z} ?",  # 10 tokens
    "compare {W} with {X} and {Y} with {Z} : same ?",  # 11 tokens
    "{W} and {X} , then {Y} and {Z} ?",  # 8 tokens
)
ANSWERS = ("no", "yes")  # class i is the answer ANSWERS[i]: the output O as an integer
# Each pair is equal with this probability. Not 1/2: with balanced pairs each comparison alone says
# nothing about the answer (an XNOR), and a network trained from the answers alone gets no gradient
# towards either comparison and memorises the prompts instead (measured: held-out accuracy 0.44-0.6).
EQUAL_PROBABILITY = 0.3
HELDOUT_FRACTION = 0.2
_SPLIT_SEED = 20240529  # fixes which settings are held out, the same in every run


def vocabulary() -> tuple[str, ...]:
    """Every word the prompts and answers use, in a fixed order (for a word-level tokenizer)."""
    words = list(WORDS)
    for template in TEMPLATES:
        for piece in template.split():
            if not piece.startswith("{") and piece not in words:
                words.append(piece)
    return (*words, *(a for a in ANSWERS if a not in words))


def render(values: Mapping[str, object]) -> prompts.Prompt:
    """One example's prompt: {W, X, Y, Z: word, T: template index} -> the prompt with each word's span."""
    return prompts.render(TEMPLATES[int(values["T"])], {v: str(values[v]) for v in VARIABLES})


def causal_model() -> CausalModel:
    """WX = (W == X), YZ = (Y == Z), O = (WX == YZ); T (the template) is read by no mechanism."""
    return CausalModel(
        name="AABB-words",
        inputs=(*VARIABLES, "T"),
        mechanisms={
            "WX": Mechanism(("W", "X"), np.equal),
            "YZ": Mechanism(("Y", "Z"), np.equal),
            "O": Mechanism(("WX", "YZ"), np.equal),
        },
        output="O",
        values={**{v: WORDS for v in VARIABLES}, "T": tuple(range(len(TEMPLATES))),
                "WX": (False, True), "YZ": (False, True), "O": (False, True)},
    )


def _setting_index(words: np.ndarray, template: np.ndarray) -> np.ndarray:
    """(n, 4) word indices, (n,) template index -> (n,) index of the setting among all of them."""
    index = template.copy()
    for column in range(words.shape[1]):
        index = index * len(WORDS) + words[:, column]
    return index


def _heldout_table() -> np.ndarray:
    """(number of settings,) bool: which (T, W, X, Y, Z) settings are held out, fixed once for all."""
    n_settings = len(TEMPLATES) * len(WORDS) ** len(VARIABLES)
    return np.random.default_rng(_SPLIT_SEED).random(n_settings) < HELDOUT_FRACTION


_HELDOUT = _heldout_table()


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) word indices with each pair equal with probability `EQUAL_PROBABILITY`, and (n,) template indices."""
    words = rng.integers(len(WORDS), size=(n, 4))
    for first in (0, 2):
        equal = rng.random(n) < EQUAL_PROBABILITY
        # A different word: shift by 1..len-1 so the second word is uniform among the others.
        other = (words[:, first] + rng.integers(1, len(WORDS), size=n)) % len(WORDS)
        words[:, first + 1] = np.where(equal, words[:, first], other)
    return words, rng.integers(len(TEMPLATES), size=n)


def sample_inputs(rng: np.random.Generator, n: int, split: str | None = None) -> Setting:
    """Draws `n` inputs {W, X, Y, Z: (n,) words, T: (n,) template index}.

    Args:
        rng: the only source of randomness.
        n: the number of inputs.
        split: None (every setting), "train" (never a held-out one) or "heldout" (only held-out
            ones); drawn by rejection: the held-out settings are a random fifth, independent of
            the pattern, so each split keeps (up to sampling) the pattern probabilities.
    """
    if split not in (None, "train", "heldout"):
        raise ValueError(f"split {split!r} must be None, 'train' or 'heldout'")
    words, templates = np.empty((0, 4), dtype=np.int64), np.empty(0, dtype=np.int64)
    while len(templates) < n:
        drawn, drawn_templates = _draw(rng, 2 * (n - len(templates)) + 16)
        if split is not None:
            keep = _HELDOUT[_setting_index(drawn, drawn_templates)] == (split == "heldout")
            drawn, drawn_templates = drawn[keep], drawn_templates[keep]
        words, templates = np.concatenate([words, drawn]), np.concatenate([templates, drawn_templates])
    table = np.asarray(WORDS)
    return {**{v: table[words[:n, i]] for i, v in enumerate(VARIABLES)}, "T": templates[:n]}


def sampler(split: str | None = None) -> InputSampler:
    """The input sampler `(rng, n) -> setting` for `sample_counterfactuals`, over one split."""
    if split not in (None, "train", "heldout"):
        raise ValueError(f"split {split!r} must be None, 'train' or 'heldout'")
    return lambda rng, n: sample_inputs(rng, n, split)


def language_examples(rng: np.random.Generator, n_train: int, n_heldout: int):
    """((prompts, answers) of `n_train` training inputs, the same of `n_heldout` held-out ones): what
    a language model is trained and checked on (never a held-out setting in its training data)."""
    return examples(sample_inputs(rng, n_train, "train")), examples(sample_inputs(rng, n_heldout, "heldout"))


def examples(setting: Setting) -> tuple[list[str], list[str]]:
    """Prompts and answer words of every row of an input setting (what a language model learns)."""
    outputs = causal_model().run_forward(setting)["O"]
    rows = [{name: column[i] for name, column in setting.items()} for i in range(len(outputs))]
    return [render(row).text for row in rows], [ANSWERS[int(o)] for o in outputs]
