"""The task-agnostic language-model site (`models.lm_site`) on tiny random decoders of many
Hugging Face families, both heads: prompts of different lengths padded into one batch (both
padding sides), the prefix and suffix recomposing the model's own logits at every layer, padding
invariance, full swaps, equality with pyvene where pyvene maps the model, a planted subspace that
DAS recovers, and the prompt encoder's packing."""

import numpy as np
import pytest
import torch

from causal_das.das import engine
from causal_das.das import pyvene_engine as pe
from causal_das.das.intervention import DistributedInterchange
from causal_das.models import lm_site, lm_structure, prompts

WORDS = ["[PAD]", "is", "like", "?", "the", "a", "and", "not", ".", "very", "cat", "dog", "red", "blue", "big", "small",
         "one", "two", "three", "four", "five", "six"]
TEMPLATES = ("is {W} like {X} ?", "the {W} is not a very big {X} .", "{X} and {W} ?")
VALUES = {"W": ("cat", "dog", "red", "big"), "X": ("one", "two", "three", "blue")}
GQA = dict(num_key_value_heads=2, head_dim=8)
# Two layers, width 32; grouped-query attention, sliding windows shorter than the longest prompt
# (Gemma's first layer is a sliding one, the second global), partial rotary, ALiBi, learned positions.
FAMILIES = {
    "gpt2": {},
    "gpt_neox": dict(rotary_pct=0.5),
    "llama": GQA,
    "mistral": dict(GQA, sliding_window=3),
    "qwen2": GQA,
    "qwen3": GQA,
    "gemma2": dict(GQA, sliding_window=3, layer_types=["sliding_attention", "full_attention"]),
    "gemma3_text": dict(GQA, sliding_window=3, layer_types=["sliding_attention", "full_attention"]),
    "phi3": dict(num_key_value_heads=2),
    "olmo2": GQA,
    "starcoder2": dict(num_key_value_heads=2, sliding_window=3),
    "bloom": dict(n_head=4),
    "opt": dict(ffn_dim=64, word_embed_proj_dim=32),
}
HEADS = ("next_token", "sequence_classification")
N_CLASSES = 5


def build_tokenizer(padding_side: str = "right"):
    """A word-level fast tokenizer over WORDS (offsets come from its whitespace pre-tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", padding_side=padding_side)


def build_model(family: str, head: str, seed: int = 0, **overrides):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    settings = dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=64, pad_token_id=0, bos_token_id=None, eos_token_id=None, num_labels=N_CLASSES)
    config = AutoConfig.for_model(family, **{**settings, **FAMILIES[family], **overrides})
    torch.manual_seed(seed)
    kind = AutoModelForCausalLM if head == "next_token" else AutoModelForSequenceClassification
    return kind.from_config(config).eval()


def encoder(padding_side: str, positions=None, tokenizer=None):
    positions = positions or {"W": prompts.token_of("W"), "X": prompts.token_of("X"), "last": prompts.last_token()}
    tokenizer = tokenizer or build_tokenizer(padding_side)
    return prompts.PromptEncoder(tokenizer, lambda v: prompts.render(TEMPLATES[v["t"]], v), positions)


def setting(n: int, seed: int = 0, templates=(0, 1, 2)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"t": rng.choice(templates, n), **{k: rng.choice(v, n) for k, v in VALUES.items()}}


def own_logits(model, rows, n_positions: int) -> torch.Tensor:
    """The model's own logits at each row's last real token, with explicit position ids."""
    ids, mask, _ = prompts.unpack(rows, n_positions)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=lm_site.position_ids(mask)).logits
    return logits if logits.ndim == 2 else logits[torch.arange(len(ids)), lm_site.last_real(mask)]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread while this module runs: matrices of 32 gain nothing from more, and on a
    busy machine OpenMP threads waiting on each other made each tiny forward ~25x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=[(f, h) for f in FAMILIES for h in HEADS], ids=lambda p: f"{p[0]}-{p[1]}")
def tiny(request):
    family, head = request.param
    return family, head, build_model(family, head)


# -- the site on every family --------------------------------------------------------------------


def test_prefix_and_suffix_recompose_the_models_own_logits_at_every_layer(tiny):
    family, head, model = tiny
    data = setting(9)
    for side in ("left", "right"):
        enc = encoder(side)
        rows = enc(data)
        assert len(set(prompts.unpack(rows, 3)[1].sum(1).tolist())) == 3  # three prompt lengths in one batch
        reference = own_logits(model, rows, 3)
        for layer in range(2):
            for names in (("W", "last"), ("X",)):
                site = lm_site.site(model, layer, enc, *names)
                assert site.n == 32 * len(names) and site.head_kind == head
                with torch.no_grad():
                    assert max_diff(site.suffix(site.prefix(rows)), reference) < 1e-5, (family, head, side, layer, names)
    assert str(site.name) == f"{model.config.model_type}.block_output.L1.pos1"
    if head == "next_token":  # a declared answer set: class i is token answers[i]
        answers = lm_site.answer_ids(enc.tokenizer, ["one", "two", "cat"])
        site = lm_site.site(model, 0, enc, "W", answers=answers)
        with torch.no_grad():
            assert max_diff(site.suffix(site.prefix(rows)), reference[:, answers]) < 1e-5


def test_a_prompt_gives_the_same_logits_alone_and_padded_in_a_batch(tiny):
    family, head, model = tiny
    data = setting(7, seed=1)
    results = {}
    for side in ("left", "right"):
        enc = encoder(side)
        site = lm_site.site(model, 0, enc, "W", "X", "last")
        with torch.no_grad():
            results[side] = site.suffix(site.prefix(enc(data)))
            alone = torch.cat([site.suffix(site.prefix(enc({k: v[i : i + 1] for k, v in data.items()})))
                               for i in range(len(data["t"]))])
        assert max_diff(results[side], alone) < 1e-5, (family, head, side)
    assert max_diff(results["left"], results["right"]) < 1e-5


def test_a_full_swap_gives_the_sources_logits(tiny):
    """Swapping every position a prompt has (one template, any layer), or the last token at the last
    layer (any templates: nothing else reaches the head), gives the source's own logits."""
    family, head, model = tiny
    full = DistributedInterchange(32 * 5, (32 * 5,))
    base, source = torch.arange(8), torch.arange(8).roll(3)[:, None]
    enc = encoder("left", positions={f"p{i}": prompts.fixed(i) for i in range(5)})  # "is W like X ?"
    rows = enc(setting(8, seed=2, templates=(0,)))
    for layer in range(2):
        site = lm_site.site(model, layer, enc)
        states = engine.cache_activations(site, rows)
        with torch.no_grad():
            swapped = site.suffix(engine.interchange(site, full, states[base], states[source], full.weight()))
            kept = site.suffix(engine.interchange(site, full, states[base], states[base][:, None], full.weight()))
        assert max_diff(swapped, own_logits(model, rows[source[:, 0]], 5)) < 1e-5, (family, head, layer)
        assert max_diff(kept, own_logits(model, rows[base], 5)) < 1e-5
    last = DistributedInterchange(32, (32,))
    for side in ("left", "right"):
        enc = encoder(side)
        rows = enc(setting(8, seed=3))
        site = lm_site.site(model, 1, enc, "last")
        states = engine.cache_activations(site, rows)
        with torch.no_grad():
            swapped = site.suffix(engine.interchange(site, last, states[base], states[source], last.weight()))
        assert max_diff(swapped, own_logits(model, rows[source[:, 0]], 3)) < 1e-5, (family, head, side)
        assert max_diff(swapped, own_logits(model, rows[base], 3)) > 1e-3  # the swap did something


def test_one_forward_fills_every_layers_state_and_the_model_is_left_as_it_was():
    model = build_model("gemma2", "next_token")
    enc = encoder("left")
    rows = enc(setting(6))
    ids, mask, _ = prompts.unpack(rows, 3)
    sites = [lm_site.site(model, layer, enc, "W", "last") for layer in range(2)]
    with torch.no_grad():
        outputs = lm_site.layer_outputs(model, ids, mask, [0, 1])
        for layer, site in enumerate(sites):
            assert torch.equal(site.state(outputs[layer], rows), site.prefix(rows))
        site.suffix(site.prefix(rows))
    assert not any("forward" in layer.__dict__ for layer in model.model.layers)
    with pytest.raises(RuntimeError, match="inside"), lm_site.skipping_layers(model.model.layers, 1, ids, [None, None]):
        raise RuntimeError("inside")
    assert not any("forward" in layer.__dict__ for layer in model.model.layers)
    assert max_diff(own_logits(model, rows, 3), sites[0].suffix(sites[0].prefix(rows)).detach()) < 1e-5


# -- pyvene ----------------------------------------------------------------------------------------

PYVENE = [("gpt2", "next_token"), ("gpt2", "sequence_classification"), ("llama", "next_token"), ("llama", "sequence_classification"),
          ("qwen2", "next_token"), ("qwen2", "sequence_classification"), ("mistral", "next_token"), ("gemma2", "next_token"),
          ("gpt_neox", "next_token")]


@pytest.mark.parametrize(("family", "head"), PYVENE)
def test_the_fast_engine_equals_pyvene_where_pyvene_maps_the_model(family, head):
    """Same low-rank W in both engines: one template at fixed positions without padding, and three
    templates left-padded at positions counted from the end (the same token index in every row)."""
    model = build_model(family, head)
    rng = np.random.default_rng(0)
    base, source = torch.as_tensor(rng.integers(0, 12, 32)), torch.as_tensor(rng.integers(0, 12, (32, 1)))
    cases = [(encoder("right"), setting(12, templates=(1,)), ("W", "last")),
             (encoder("left", positions={"last": prompts.last_token(), "before": prompts.fixed(-2)}), setting(12), ("before", "last"))]
    for enc, data, names in cases:
        rows = enc(data)
        for layer in range(2):
            slots = enc.slots(*names)
            site = lm_site.LanguageModelSite(model, layer, slots, pyvene_positions=prompts.shared_positions(rows, slots))
            intervention = engine.initial_intervention(site, engine.DASConfig((8,), seed=3))
            states = engine.cache_activations(site, rows)
            with torch.no_grad():
                ours = site.suffix(engine.interchange(site, intervention, states[base], states[source], intervention.weight()))
                intervenable, spec = pe.build_intervenable(site, site.n, (8,), intervention.weight().detach())
                reference = pe.intervened_logits(intervenable, spec, (8,), rows[base], rows[source])
            assert max_diff(ours, reference) < 1e-5, (family, head, names, layer)
            assert max_diff(ours, own_logits(model, rows[base], slots.total)) > 1e-3


def test_both_engines_train_and_predict_alike_on_padded_prompts():
    """engine.train and engine.predict end to end with engine="pyvene": left-padded prompts of three
    templates, a declared answer set, the same init and batches give close spans and equal predictions."""
    model = build_model("llama", "next_token", initializer_range=0.5)
    enc = encoder("left", positions={"last": prompts.last_token(), "before": prompts.fixed(-2)})
    rows = enc(setting(16, seed=5))
    answers = lm_site.answer_ids(enc.tokenizer, ["one", "two", "cat"])
    slots = enc.slots("before", "last")
    site = lm_site.LanguageModelSite(model, 0, slots, answers=answers, pyvene_positions=prompts.shared_positions(rows, slots))
    rng = np.random.default_rng(1)
    data = engine.InterchangeData(rows, torch.as_tensor(rng.integers(0, 16, 200)), torch.as_tensor(rng.integers(0, 16, (200, 1))),
                                  torch.as_tensor(rng.integers(0, 3, 200)))
    config = engine.DASConfig((8,), epochs=1, batch_size=50, lr=1e-3, seed=1)
    fast, reference = engine.train(site, data, config), engine.train(site, data, config, "pyvene")
    projector = lambda w: w @ w.T  # noqa: E731 -- compare spans, not bases
    assert max_diff(projector(fast.weight), projector(reference.weight)) < 0.05
    assert torch.equal(engine.predict(site, fast, data), engine.predict(site, fast, data, "pyvene"))


def test_pyvene_spec_refuses_what_pyvene_cannot_do():
    enc = encoder("right")
    rows = enc(setting(6))
    with pytest.raises(ValueError, match="does not support Phi3ForCausalLM"):
        lm_site.site(build_model("phi3", "next_token"), 0, enc, "last").pyvene_spec()
    model = build_model("llama", "next_token")
    with pytest.raises(ValueError, match="same token positions in every row"):
        lm_site.site(model, 0, enc, "last").pyvene_spec()
    with pytest.raises(ValueError, match="not at the same token index"):
        prompts.shared_positions(rows, enc.slots("last"))
    same = enc.slots("W")
    spec = lm_site.LanguageModelSite(model, 0, same, pyvene_positions=(1,)).pyvene_spec()
    with pytest.raises(ValueError, match=r"positions are not at tokens \[1\]"):  # "{X} and {W} ?" has W at token 2
        spec.to_pyvene_inputs(rows)
    spec = lm_site.LanguageModelSite(model, 0, same, pyvene_positions=(1,)).pyvene_spec()
    right = enc(setting(6, templates=(0, 1)))  # W is token 1 in both, the prompts end at tokens 4 and 8
    with pytest.raises(ValueError, match="padding in some rows"):
        spec.to_pyvene_inputs(right)


# -- training --------------------------------------------------------------------------------------


def test_das_recovers_a_planted_subspace_and_a_full_swap_its_sources_next_token():
    """Labels made by interchanging a hidden 8-dimensional subspace of the W and last-token vectors
    (through the site itself): DAS with k = 8 trained on them reaches IIA > 0.9 on held-out pairs,
    where the base's own predictions score far lower; the full swap of the last token at the last
    layer predicts each source's next token over a declared answer set."""
    # Weights 25x the default scale: the default random model predicts nearly the same token for
    # every prompt, so the base's own prediction would already match most planted labels.
    model = build_model("llama", "next_token", seed=1, initializer_range=0.5)
    enc = encoder("left")
    rows = enc(setting(48, seed=4))
    answers = lm_site.answer_ids(enc.tokenizer, ["one", "two", "three", "cat", "dog"])
    site = lm_site.site(model, 0, enc, "W", "last", answers=answers)
    rng = np.random.default_rng(0)
    pairs = torch.as_tensor(rng.integers(0, len(rows), (3000, 2)))
    planted = engine.initial_intervention(site, engine.DASConfig((8,), seed=99))
    states = engine.cache_activations(site, rows)
    with torch.no_grad():
        labels = site.suffix(engine.interchange(site, planted, states[pairs[:, 0]], states[pairs[:, 1:]], planted.weight())).argmax(-1)
        own = site.suffix(states[pairs[:, 0]]).argmax(-1)
    parts = {"train": slice(0, 2500), "test": slice(2500, None)}
    data = {name: engine.InterchangeData(rows, pairs[part, 0], pairs[part, 1:], labels[part]) for name, part in parts.items()}
    trained = engine.train(site, data["train"], engine.DASConfig((8,), epochs=4, batch_size=64, lr=1e-2, seed=0))
    iia = (engine.predict(site, trained, data["test"]) == data["test"].labels).float().mean().item()
    baseline = (own[parts["test"]] == data["test"].labels).float().mean().item()
    assert iia > 0.9 and baseline < iia - 0.2, (iia, baseline)

    last = lm_site.site(model, 1, enc, "last", answers=answers)
    with torch.no_grad():
        source_next = last.suffix(engine.cache_activations(last, rows)).argmax(-1)
    full = engine.InterchangeData(rows, pairs[:, 0], pairs[:, 1:], source_next[pairs[:, 1]])
    swap = engine.train(last, full, engine.DASConfig((32,)))
    assert (engine.predict(last, swap, full) == full.labels).float().mean().item() > 0.99


# -- structure and errors --------------------------------------------------------------------------


def test_a_model_without_its_parts_stops_with_one_line():
    model = build_model("llama", "next_token")
    structure = lm_structure.find_structure(model)
    assert structure.layers is model.model.layers and structure.final_norm is model.model.norm and structure.head is model.lm_head
    assert lm_structure.find_structure(build_model("opt", "sequence_classification")).layers_path == "decoder.layers"
    del model.model.layers
    enc = encoder("right")
    with pytest.raises(ValueError, match="no list of decoder layers found") as error:
        lm_site.site(model, 0, enc, "last")
    assert "\n" not in str(error.value) and "LlamaModel" in str(error.value)
    with pytest.raises(ValueError, match="no sequence_classification head found"):
        lm_structure.find_structure(build_model("gpt2", "next_token"), head="sequence_classification")
    classifier = build_model("gpt2", "sequence_classification")
    with pytest.raises(ValueError, match="answers are for a next-token head"):
        lm_site.site(classifier, 0, enc, "last", answers=[1])
    with pytest.raises(ValueError, match="layer 2 does not exist"):
        lm_site.site(classifier, 2, enc, "last")
    same = encoder("right", positions={"end": prompts.fixed(-1), "last": prompts.last_token()})
    with pytest.raises(ValueError, match="must be distinct real tokens"):  # two names for one token
        lm_site.site(classifier, 0, same).prefix(same(setting(3)))
    with pytest.raises(ValueError, match="not .* for any prompt length"):
        lm_site.site(classifier, 0, enc, "last").suffix(torch.zeros(2, 32 + 2 + 33 + 4))


def test_answers_must_be_single_tokens():
    tokenizer = build_tokenizer()
    assert lm_site.answer_ids(tokenizer, ["cat", "dog"]) == [WORDS.index("cat"), WORDS.index("dog")]
    with pytest.raises(ValueError, match=r"'big dog' is 2 tokens \['big', 'dog'\], not one"):
        lm_site.answer_ids(tokenizer, ["cat", "big dog"])
    with pytest.raises(ValueError, match="distinct token ids"):
        lm_site.answer_ids(tokenizer, ["cat", "cat"])


def test_a_bf16_model_through_the_engine_with_prompts_longer_than_256_tokens():
    """The engine casts the whole state to the network's dtype: positions past 255 and the mask must
    survive bf16 (positions are stored as base-256 digits)."""
    model = build_model("llama", "next_token", max_position_embeddings=512).to(torch.bfloat16)
    long = "the " * 290 + "{W} like {X} ?"
    enc = prompts.PromptEncoder(build_tokenizer("left"), lambda v: prompts.render(long if v["t"] else TEMPLATES[0], v),
                                {"W": prompts.token_of("W"), "last": prompts.last_token()})
    rows = enc({"t": np.array([1, 0, 1]), "W": np.array(["cat", "dog", "red"]), "X": np.array(["one", "two", "six"])})
    assert prompts.unpack(rows, 2)[2][:, 0].tolist() == [290, 290, 290]  # past 255
    site = lm_site.site(model, 1, enc, "W", "last")
    states = engine.cache_activations(site, rows)
    assert states.dtype == torch.float32
    full, source = DistributedInterchange(site.n, (site.n,)), torch.tensor([1, 2, 0])
    with torch.no_grad():
        ours = engine.suffix_logits(site, states)
        # At the last layer only the last token reaches the head: a full swap gives the source's logits.
        swapped = engine.suffix_logits(site, engine.interchange(site, full, states, states[source][:, None], full.weight()))
    assert max_diff(ours, own_logits(model, rows, 2).float()) < 1e-2
    assert max_diff(swapped, own_logits(model, rows[source], 2).float()) < 1e-2
    assert max_diff(swapped, ours) > 1e-1


# -- prompts ---------------------------------------------------------------------------------------


def test_render_records_where_each_value_was_written():
    prompt = prompts.render("is {W} like {X:>4} ? {W}", {"W": "cat", "X": 7})
    assert prompt.text == "is cat like    7 ? cat" and prompt.spans == {"W": (3, 6), "X": (12, 16)}
    with pytest.raises(ValueError, match="needs a value for 'X'"):
        prompts.render("{W} {X}", {"W": 1})
    with pytest.raises(ValueError, match="plain variable name"):
        prompts.render("{0}", {})


def test_position_functions_find_their_token_or_say_why_not():
    tokenizer = build_tokenizer()
    prompt = prompts.render(TEMPLATES[1], {"W": "dog", "X": "two"})  # the dog is not a very big two .
    ids = tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    assert [prompts.token_of("W")(prompt, ids, tokenizer), prompts.token_of("X")(prompt, ids, tokenizer)] == [1, 7]
    assert prompts.last_token()(prompt, ids, tokenizer) == 8 and prompts.fixed(-2)(prompt, ids, tokenizer) == 7
    assert prompts.fixed(0)(prompt, ids, tokenizer) == 0
    with pytest.raises(ValueError, match="outside the 9-token prompt"):
        prompts.fixed(9)(prompt, ids, tokenizer)
    with pytest.raises(ValueError, match="variable 'Y' is not written in the prompt"):
        prompts.token_of("Y")(prompt, ids, tokenizer)
    with pytest.raises(ValueError, match="not its tokenization"):
        prompts.token_of("W")(prompt, ids[:-1], tokenizer)


def test_token_of_with_a_byte_level_bpe_tokenizer_whatever_its_offsets_cover():
    """GPT-2-style tokens carry their leading space ("Ġcat"); with trimmed offsets the space is not
    covered, untrimmed it is: either way the value's token is found, also for a value of two tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    prompt = prompts.render("is {W} like {X} ?", {"W": "cat", "X": "onetwo"})
    for trim in (True, False):
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.post_processor, tokenizer.decoder = processors.ByteLevel(trim_offsets=trim), decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tokenizer.train_from_iterator(["is cat like one ?", "the dog is not a very big two ."] * 20, trainer)
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
        ids = tokenizer(prompt.text)["input_ids"]
        assert tokenizer.convert_ids_to_tokens(ids) == ["is", "Ġcat", "Ġlike", "Ġone", "tw", "o", "Ġ?"]
        assert [prompts.token_of(v)(prompt, ids, tokenizer) for v in ("W", "X")] == [1, 3]


def test_the_encoder_packs_ids_mask_and_positions_on_either_padding_side():
    data = {"t": np.array([0, 1, 2]), "W": np.array(["cat", "dog", "red"]), "X": np.array(["one", "two", "six"])}
    lengths = [5, 9, 4]
    for side in ("left", "right"):
        enc = encoder(side)
        rows = enc(data)
        assert rows.dtype == torch.long and rows.shape == (3, 2 * 9 + 3)
        ids, mask, positions = prompts.unpack(rows, 3)
        assert mask.sum(1).tolist() == lengths
        for i, length in enumerate(lengths):
            real = torch.arange(9 - length, 9) if side == "left" else torch.arange(length)
            assert mask[i, real].all() and ids[i][mask[i] == 0].eq(0).all()
            assert [WORDS[t] for t in ids[i, positions[i]].tolist()] == [data["W"][i], data["X"][i], WORDS[ids[i, real[-1]]]]
        assert enc(data)[1:2].shape[1] == rows.shape[1]
        assert enc({k: v[2:] for k, v in data.items()}).shape == (1, 2 * 4 + 3)  # a call pads to its own longest prompt
    assert enc.slots("last", "W") == prompts.Slots(("last", "W"), (2, 0), 3)
    assert enc.slots().indices == (0, 1, 2)
    with pytest.raises(ValueError, match="distinct names among the declared"):
        enc.slots("Y")
    with pytest.raises(ValueError, match=r"\(batch, 2T \+ 3\)"):
        prompts.unpack(rows[:, 1:], 3)
