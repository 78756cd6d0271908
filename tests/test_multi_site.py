"""Multi-site DAS (`das.multi_site`, `models.lm_multi_site`): each variable at its own layer and
positions, on tiny random decoders (GPT-2 and Llama, both heads). Invariants (k = 0 everywhere is
the plain model, one variable reduces to the single-site engine, a full-rank site is the full patch
of its positions), equality with pyvene 0.1.8's multi-unit interventions, padding invariance, a
planted two-site alignment that training recovers, saving, and one-line errors."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

# At import, before any backward pass: autograd sizes its per-device queues when it first runs.
from simulated_device import DEVICE, simulated_device  # tests/, on pytest's path

from causal_das.das import engine, multi_site
from causal_das.das.intervention import DistributedInterchange, orthonormal_columns
from causal_das.das.multi_site import MultiSiteConfig, VariableSite
from causal_das.das.multi_site_evaluation import evaluate_multi
from causal_das.models import lm_site, prompts
from causal_das.models.lm_multi_site import LanguageModelMultiSite

WORDS = ["[PAD]", "is", "like", "?", "the", "a", "and", "not", ".", "very", "big", "cat", "dog", "red", "blue", "one", "two",
         "three", "small"]
TEMPLATES = ("is {W} like {X} ?", "the {W} is not a very big {X} .", "{X} and {W} ?")  # 5, 8 and 4 tokens
VALUES = {"W": ("cat", "dog", "red", "big"), "X": ("one", "two", "three", "blue")}
POSITIONS = {"W": prompts.token_of("W"), "X": prompts.token_of("X"), "last": prompts.last_token()}
WIDTH = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: matrices of 32 gain nothing from more on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_tokenizer(padding_side: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", padding_side=padding_side)


def build_model(family: str, head: str, seed: int = 0, **overrides):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    settings = dict(vocab_size=len(WORDS), hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=64, pad_token_id=0, bos_token_id=None, eos_token_id=None, num_labels=5)
    if family == "llama":
        settings.update(num_key_value_heads=2, head_dim=8)
    torch.manual_seed(seed)
    kind = AutoModelForCausalLM if head == "next_token" else AutoModelForSequenceClassification
    return kind.from_config(AutoConfig.for_model(family, **{**settings, **overrides})).eval()


def encoder(side: str, positions=None) -> prompts.PromptEncoder:
    return prompts.PromptEncoder(build_tokenizer(side), lambda v: prompts.render(TEMPLATES[v["t"]], v), positions or POSITIONS)


def setting(n: int, seed: int = 0, templates=(0, 1, 2)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"t": rng.choice(templates, n), **{k: rng.choice(v, n) for k, v in VALUES.items()}}


def own_logits(model, rows: torch.Tensor, n_positions: int) -> torch.Tensor:
    """The model's own logits at each row's last real token."""
    ids, mask, _ = prompts.unpack(rows, n_positions)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=lm_site.position_ids(mask)).logits
    return logits if logits.ndim == 2 else logits[torch.arange(len(ids)), lm_site.last_real(mask)]


def triples(rows: torch.Tensor, n: int, seed: int, n_variables: int = 2) -> engine.InterchangeData:
    """n (base, one source per variable) draws from the table `rows`, every variable intervened."""
    rng = np.random.default_rng(seed)
    index = torch.as_tensor(rng.integers(0, len(rows), (n, 1 + n_variables)))
    return engine.InterchangeData(rows, index[:, 0], index[:, 1:], torch.zeros(n, dtype=torch.long),
                                  intervened=torch.ones(n, n_variables, dtype=torch.bool))


def rotations(widths, sizes, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [orthonormal_columns(torch.randn(n, k, generator=generator)) for n, k in zip(widths, sizes, strict=True)]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


MODELS = [("gpt2", "next_token"), ("gpt2", "sequence_classification"), ("llama", "next_token"), ("llama", "sequence_classification")]
TWO_SITES = (VariableSite("A", 0, ("W",), 6), VariableSite("B", 1, ("X", "last"), 9))


# -- (a), (b): invariants --------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "head"), MODELS)
def test_every_k_zero_gives_the_plain_model(family, head):
    model = build_model(family, head)
    for side in ("left", "right"):
        enc = encoder(side)
        rows = enc(setting(10, seed=1))
        data = triples(rows, 24, seed=2)
        network = LanguageModelMultiSite(model, enc)
        nothing = [VariableSite("A", 0, ("W",), 0), VariableSite("B", 1, ("X", "last"), 0)]
        logits = multi_site.logits_multi(network, [torch.zeros(WIDTH, 0), torch.zeros(2 * WIDTH, 0)], data, nothing)
        assert max_diff(logits, own_logits(model, rows[data.base], 3)) < 1e-5, (family, head, side)
        # Intervening on nothing is the same, whatever the rotations: rows whose flags are all off.
        off = engine.InterchangeData(rows, data.base, data.sources, data.labels, intervened=torch.zeros_like(data.intervened))
        logits = multi_site.logits_multi(network, rotations((WIDTH, 2 * WIDTH), (6, 9), 0), off, TWO_SITES)
        assert max_diff(logits, own_logits(model, rows[data.base], 3)) < 1e-5


@pytest.mark.parametrize(("family", "head"), MODELS)
def test_one_variable_is_the_single_site_engine_and_full_rank_is_the_full_patch(family, head):
    """One variable with any W equals the fast engine's interchange at that site (every layer); k = n
    at the last token of the last layer gives the source's own logits."""
    model = build_model(family, head)
    enc = encoder("left")
    rows = enc(setting(10, seed=3))
    data = triples(rows, 20, seed=4, n_variables=1)
    network = LanguageModelMultiSite(model, enc)
    for layer in range(2):
        for names, k in ((("W", "last"), 5), (("X",), WIDTH)):
            site = lm_site.site(model, layer, enc, *names)
            single = DistributedInterchange(site.n, (k,), torch.Generator().manual_seed(layer))
            states = engine.cache_activations(site, rows)
            with torch.no_grad():
                reference = site.suffix(engine.interchange(site, single, states[data.base], states[data.sources], single.weight()))
            ours = multi_site.logits_multi(network, [single.weight().detach()], data, [VariableSite("v", layer, names, k)])
            assert max_diff(ours, reference) < 1e-5, (family, head, layer, names)
    patched = multi_site.logits_multi(network, [torch.eye(WIDTH)], data, [VariableSite("v", 1, ("last",), WIDTH)])
    assert max_diff(patched, own_logits(model, rows[data.sources[:, 0]], 3)) < 1e-5
    assert max_diff(patched, own_logits(model, rows[data.base], 3)) > 1e-3


# -- (c): pyvene -----------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["next_token", "sequence_classification"])
def test_two_sites_equal_pyvenes_two_units_with_two_sources(head):
    """pyvene 0.1.8: one RotatedSpaceIntervention per unit (W completed to a square rotation, the
    first k coordinates interchanged), unit A at layer 0 on W's token, unit B at layer 1 on X's and
    the last token, each from its own source, at per-row token positions of left-padded prompts of
    three templates (a base and its sources are often written in different templates)."""
    with contextlib.redirect_stdout(io.StringIO()):
        import pyvene as pv

    model = build_model("gpt2", head, seed=1)
    enc = encoder("left")
    rows = enc(setting(12, seed=5))
    data = triples(rows, 16, seed=6)
    network = LanguageModelMultiSite(model, enc)
    weights = rotations((WIDTH, 2 * WIDTH), (6, 9), seed=7)
    ours = multi_site.logits_multi(network, weights, data, TWO_SITES)

    config = pv.IntervenableConfig(representations=[
        pv.RepresentationConfig(layer=site.layer, component="block_output", unit="pos", max_number_of_units=len(site.positions))
        for site in TWO_SITES], intervention_types=pv.RotatedSpaceIntervention)
    with contextlib.redirect_stdout(io.StringIO()):
        intervenable = pv.IntervenableModel(config, model)
    intervenable.disable_model_gradients()
    generator = torch.Generator().manual_seed(8)
    for intervention, weight in zip(intervenable.interventions.values(), weights, strict=True):
        module = intervention[0] if isinstance(intervention, tuple | list) else intervention
        square = orthonormal_columns(torch.cat([weight, torch.randn(len(weight), len(weight) - weight.shape[1], generator=generator)], 1))
        assert max_diff(square[:, : weight.shape[1]], weight) < 1e-5
        with torch.no_grad():
            module.rotate_layer.weight = square
        module.set_interchange_dim(weight.shape[1])
    ids, mask, positions = prompts.unpack(rows, 3)

    def inputs(index):
        return {"input_ids": ids[index], "attention_mask": mask[index], "position_ids": lm_site.position_ids(mask[index]), "use_cache": False}

    def locations(index, site):
        return positions[index][:, [enc.names.index(name) for name in site.positions]].tolist()

    sources = [data.sources[:, v] for v in range(2)]
    with torch.no_grad():
        _, output = intervenable(inputs(data.base), [inputs(s) for s in sources],
                                 {"sources->base": ([locations(s, site) for s, site in zip(sources, TWO_SITES, strict=True)],
                                                    [locations(data.base, site) for site in TWO_SITES])})
    reference = output.logits if head == "sequence_classification" else output.logits[:, -1]
    assert max_diff(ours, reference) < 1e-5
    assert max_diff(ours, own_logits(model, rows[data.base], 3)) > 1e-3  # the interventions did something
    # B's base state is that of the run A already changed: applying B alone gives other logits.
    b_alone = engine.InterchangeData(rows, data.base, data.sources, data.labels, intervened=torch.tensor([[False, True]] * len(data)))
    assert max_diff(ours, multi_site.logits_multi(network, weights, b_alone, TWO_SITES)) > 1e-3


# -- (e): padding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "head"), [("llama", "next_token"), ("gpt2", "sequence_classification")])
def test_a_prompt_gives_the_same_intervened_logits_alone_and_padded(family, head):
    """Short prompts (one template, no padding) against the same prompts in a table of longer ones,
    padded on the left or on the right: the same intervened logits."""
    model = build_model(family, head)
    short = setting(6, seed=9, templates=(0,))
    longer = setting(6, seed=10, templates=(1, 2))
    mixed = {k: np.concatenate([longer[k][:3], short[k], longer[k][3:]]) for k in short}
    weights = rotations((WIDTH, 2 * WIDTH), (6, 9), seed=11)
    data = triples(torch.zeros(6, 1), 15, seed=12)
    results = {}
    for side in ("left", "right"):
        enc = encoder(side)
        alone, padded = enc(short), enc(mixed)
        assert padded.shape[1] > alone.shape[1]  # the short prompts are padded in the mixed table
        network = LanguageModelMultiSite(model, enc)
        shifted = engine.InterchangeData(padded, data.base + 3, data.sources + 3, data.labels, intervened=data.intervened)
        results[side] = multi_site.logits_multi(network, weights, shifted, TWO_SITES)
        by_itself = engine.InterchangeData(alone, data.base, data.sources, data.labels, intervened=data.intervened)
        assert max_diff(results[side], multi_site.logits_multi(network, weights, by_itself, TWO_SITES)) < 1e-5, (side, family)
    assert max_diff(results["left"], results["right"]) < 1e-5


# -- (d): a planted alignment at two sites -------------------------------------------------------------


@pytest.fixture(scope="module")
def planted():
    """Labels made by the intervened network itself with planted rotations at two sites (A: layer 0,
    W's token; B: layer 1, the last token; k = 8 each) over an answer set, on pairs of every
    intervened set: rotations at those sites that reach IIA 1 exist by construction."""
    # Weights 50x the default scale: the default random model predicts nearly the same token for
    # every prompt, so the base's own prediction would already match most planted labels.
    model = build_model("llama", "next_token", seed=1, initializer_range=1.0)
    enc = encoder("left")
    rows = enc(setting(48, seed=13))
    answers = lm_site.answer_ids(enc.tokenizer, ["one", "two", "three", "cat", "dog"])
    network = LanguageModelMultiSite(model, enc, answers=answers)
    sites = (VariableSite("A", 0, ("W",), 8), VariableSite("B", 1, ("last",), 8))
    rng = np.random.default_rng(14)
    index = torch.as_tensor(rng.integers(0, len(rows), (3000, 3)))
    intervened = torch.as_tensor(np.array([[1, 0], [0, 1], [1, 1]], dtype=bool)[rng.integers(0, 3, 3000)])
    sources = torch.where(intervened, index[:, 1:], index[:, :1])
    unlabelled = engine.InterchangeData(rows, index[:, 0], sources, torch.zeros(3000, dtype=torch.long), intervened=intervened,
                                        variables=("A", "B"))
    labels = multi_site.predict_multi(network, rotations((WIDTH, WIDTH), (8, 8), seed=99), unlabelled, sites)
    split = {"train": slice(0, 2500), "test": slice(2500, None)}
    data = {name: engine.InterchangeData(rows, index[part, 0], sources[part], labels[part], intervened=intervened[part],
                                         variables=("A", "B")) for name, part in split.items()}
    return network, sites, data


def test_training_recovers_a_planted_two_site_alignment(planted, tmp_path):
    network, sites, data = planted
    trained = multi_site.train_multi(network, sites, data["train"], MultiSiteConfig(epochs=4, batch_size=64, lr=1e-2, seed=0))
    result = evaluate_multi(network, trained, data["test"])
    chance = max(result["baselines"]["network_no_intervention"], result["baselines"]["random_subspace"]["mean"])
    assert result["iia"] > 0.9 and chance < result["iia"] - 0.2, result
    assert result["interval"]["low"] <= result["iia"] <= result["interval"]["high"] and result["verdict"]["das_beats_baselines"]
    assert set(result["by_subset"]) == {"{A}", "{B}", "{A,B}"} and min(result["by_subset"].values()) > 0.85
    assert {"full_patch", "network_on_source", "majority"} <= set(result["baselines"])
    assert [s["n"] for s in result["sites"]] == [WIDTH, WIDTH] and len(trained.history["epochs"]) == 4
    for weight in trained.weights:  # orthonormal columns
        assert max_diff(weight.T @ weight, torch.eye(weight.shape[1])) < 1e-5
    trained.save(tmp_path / "alignment")
    again = multi_site.TrainedMultiSite.load(tmp_path / "alignment")
    assert again.sites == trained.sites and all(torch.equal(a, b) for a, b in zip(again.weights, trained.weights, strict=True))
    assert torch.equal(multi_site.predict_multi(network, again, data["test"]), multi_site.predict_multi(network, trained, data["test"]))


def test_training_is_deterministic_for_a_seed(planted):
    network, sites, data = planted
    small = engine.InterchangeData(data["train"].inputs, data["train"].base[:256], data["train"].sources[:256], data["train"].labels[:256],
                                   intervened=data["train"].intervened[:256], variables=("A", "B"))
    config = MultiSiteConfig(epochs=1, batch_size=64, lr=1e-2, seed=3)
    first, second = (multi_site.train_multi(network, sites, small, config) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.weights, second.weights, strict=True))
    other = multi_site.train_multi(network, sites, small, MultiSiteConfig(epochs=1, batch_size=64, lr=1e-2, seed=4))
    assert not torch.equal(first.weights[0], other.weights[0])


def test_training_on_a_strict_second_device_equals_the_cpu(planted):
    """On the simulated device (tests/simulated_device.py, strict where CUDA is): the rotations,
    predictions and evaluation of the CPU, with a k = n site (a full patch) beside a trained one."""
    network, _, data = planted
    sites = (VariableSite("A", 0, ("W",), 4), VariableSite("B", 1, ("last",), WIDTH))
    small = engine.InterchangeData(data["train"].inputs, data["train"].base[:128], data["train"].sources[:128], data["train"].labels[:128],
                                   intervened=data["train"].intervened[:128], variables=("A", "B"))
    config = MultiSiteConfig(epochs=1, batch_size=32, lr=1e-2, seed=0)
    cpu = multi_site.train_multi(network, sites, small, config)
    expected = multi_site.predict_multi(network, cpu, small)
    model = network.model
    try:
        with simulated_device():
            on_device = LanguageModelMultiSite(model.to(DEVICE), network.encoder, answers=network.answers)
            trained = multi_site.train_multi(on_device, sites, small, config)
            predicted = multi_site.predict_multi(on_device, trained, small)
            result = evaluate_multi(on_device, trained, small, random_draws=1)
    finally:
        model.to("cpu")
    # The same kernels, but not always the same summation order (measured: 2e-7 apart after 4 steps).
    assert max(max_diff(a, b) for a, b in zip(cpu.weights, trained.weights, strict=True)) < 1e-5 and torch.equal(predicted, expected)
    assert result["iia"] == (expected == small.labels).float().mean().item()


# -- (f): bad input ------------------------------------------------------------------------------------


def one_line(error) -> str:
    assert "\n" not in str(error.value), str(error.value)
    return str(error.value)


def test_bad_sites_and_data_stop_with_one_line():
    model = build_model("gpt2", "next_token")
    enc = encoder("left")
    rows = enc(setting(6))
    data = triples(rows, 8, seed=0)
    network = LanguageModelMultiSite(model, enc)
    weights = rotations((WIDTH, WIDTH), (2, 2), seed=0)
    cases = [
        ([VariableSite("A", 2, ("W",), 2), VariableSite("B", 1, ("X",), 2)], "variable 'A': layer 2 does not exist"),
        ([VariableSite("A", 0, ("W",), 2), VariableSite("B", 1, ("Q",), 2)], r"variable 'B': positions \['Q'\] must be distinct names"),
        ([VariableSite("A", 0, ("W",), WIDTH + 1), VariableSite("B", 1, ("X",), 2)], "k = 33 is more than its site's n = 32"),
        ([VariableSite("A", 1, ("W", "last"), 2), VariableSite("B", 1, ("last",), 2)], r"share position\(s\) \['last'\] of layer 1"),
        ([VariableSite("A", 0, ("W",), 2), VariableSite("A", 1, ("X",), 2)], "each variable needs exactly one site"),
    ]
    for sites, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            multi_site.train_multi(network, sites, data)
        one_line(error)
    with pytest.raises(ValueError, match="does not fit a site") as error:
        multi_site.MultiSiteIntervention((4,), (5,))
    with pytest.raises(ValueError, match="needs a name and at least one position"):
        VariableSite("A", 0, (), 1)
    # Two names on one token in some prompt, at one layer.
    same = encoder("left", positions={**POSITIONS, "end": prompts.fixed(-1)})
    clash = LanguageModelMultiSite(model, same)
    with pytest.raises(ValueError, match="land on the same token of prompt 0 at layer 1") as error:
        multi_site.logits_multi(clash, weights, triples(same(setting(6)), 8, seed=0),
                                [VariableSite("A", 1, ("last",), 2), VariableSite("B", 1, ("end",), 2)])
    one_line(error)
    named = engine.InterchangeData(rows, data.base, data.sources, data.labels, intervened=data.intervened, variables=("WX", "YZ"))
    with pytest.raises(ValueError, match=r"variables \['A'\] have a site but are not in the data") as error:
        multi_site.logits_multi(network, weights[:1], named, [VariableSite("A", 0, ("W",), 2)])
    one_line(error)
    with pytest.raises(ValueError, match=r"the data intervenes on \['YZ'\], which have no site") as error:
        multi_site.logits_multi(network, weights[:1], named, [VariableSite("WX", 0, ("W",), 2)])
    one_line(error)
    with pytest.raises(ValueError, match="do not fit sites") as error:
        multi_site.logits_multi(network, weights, data, [VariableSite("A", 0, ("W",), 3), VariableSite("B", 1, ("X",), 2)])
    one_line(error)


# -- the example -------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "word_equality_multi_site.py"


def test_the_example_runs_end_to_end(tmp_path):
    """The script's --quick mode on the real CLI, with an undertrained language model (the run is a
    smoke test of the plumbing: the numbers of a trained one are in docs/api.md)."""
    flags = ["--quick", "--output_dir", str(tmp_path), "--lm_train", "400", "--lm_heldout", "50", "--lm_epochs", "1",
             "--n_train", "192", "--n_test", "96", "--das_epochs", "1"]
    proc = subprocess.run([sys.executable, str(SCRIPT), *flags], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["config"]["quick"] and result["config"]["n_layers"] == 2 and result["config"]["lm_train"] == 400
    assert [(s["name"], s["layer"], s["positions"], s["k"], s["n"]) for s in result["sites"]] == [
        ("WX", result["config"]["wx_layer"], [result["config"]["wx_position"]], 8, 64),
        ("YZ", result["config"]["yz_layer"], [result["config"]["yz_position"]], 8, 64)]
    evaluations = result["evaluations"]
    assert set(evaluations) == {"both", "each", "both_tokens_swapped"}
    assert set(evaluations["both"]["by_subset"]) == {"{WX,YZ}"} and set(evaluations["each"]["by_subset"]) == {"{WX}", "{YZ}"}
    for evaluation in evaluations.values():
        assert evaluation["n"] == 96 and 0 <= evaluation["interval"]["low"] <= evaluation["iia"] <= evaluation["interval"]["high"] <= 1
        assert {"full_patch", "random_subspace", "network_no_intervention", "network_on_source", "copy_base_label"} <= set(evaluation["baselines"])
    assert "DAS" in proc.stdout and "both_tokens_swapped" in proc.stdout


def test_the_docs_show_the_examples_block():
    """docs/api.md's multi-site block is the script's, which the test above runs."""
    script = SCRIPT.read_text()
    start = script.index("\n", script.index("    # ---- multi-site DAS, through the public API")) + 1
    block = textwrap.dedent(script[start : script.index("    # ---- end of the block")]).rstrip("\n")
    assert len(block.splitlines()) <= 15
    assert block + "\n" in re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
