"""Hugging Face decoder families as DAS sites, found from their structure (no list of supported
types), on tiny random models saved with save_pretrained, with a sequence-classification head and
with a causal LM read at the answer tokens: the prefix and suffix recompose the model's own logits,
the fast engine equals pyvene where pyvene knows the model, a model the site cannot recompose stops
with one line, and the GPT-2 scripts run end to end on the families they always ran on."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_das.das import engine
from causal_das.das import pyvene_engine as pe
from causal_das.models import answer_head, decoder
from causal_das.studies import arithmetic_decoder

ROOT = Path(__file__).resolve().parents[1]
# Two layers, grouped-query attention where the family has it, Gemma-2's and Gemma-3's sliding window
# shorter than the prompt (Gemma-2's second layer is a global one; Gemma-3's local and global layers
# have rotary bases of their own), GPT-NeoX's parallel residual and partial rotary, Qwen3's q/k norms,
# Phi-3's fused projections.
CONFIGS = {
    "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "qwen2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "gemma2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                   sliding_window=4),
    "gpt_neox": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, rotary_pct=0.5),
    "mistral": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "qwen3": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    "gemma3_text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=8, sliding_window=4, layer_types=["sliding_attention", "full_attention"]),
    "phi3": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
}
# The decoder families these tests build (GPT-2 has its own tests, test_gpt2.py and test_next_token_xyz.py).
TYPES = list(CONFIGS)
# The families the scripts run end to end on (about 25 s each): Llama's layout and GPT-NeoX's, the least like it
# (gpt_neox.layers, a parallel residual, embed_out); the site tests above cover all eight families.
SCRIPT_TYPES = ("llama", "gpt_neox")


def save_tiny(model_type: str, directory: Path, classifier: bool = True, **overrides) -> Path:
    """A tiny random `model_type` sequence classifier (28 classes), or causal LM, and the task's
    tokenizer (for a causal LM the next-token one, in which every answer is a token)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    tokenizer = arithmetic_decoder.build_tokenizer() if classifier else arithmetic_decoder.build_answer_tokenizer()
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), num_labels=28, pad_token_id=0, max_position_embeddings=16,
                                  bos_token_id=None, eos_token_id=None, **{**CONFIGS[model_type], **overrides})
    torch.manual_seed(0)
    model = (AutoModelForSequenceClassification if classifier else AutoModelForCausalLM).from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", params=[(t, head) for t in TYPES for head in ("sequence_classification", "next_token")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def tiny(request, tmp_path_factory):
    model_type, head = request.param
    path = save_tiny(model_type, tmp_path_factory.mktemp(model_type), classifier=head == "sequence_classification")
    if (model_type, head) == ("qwen2", "next_token"):
        # transformers 5 loads this word-level tokenizer as a Qwen2Tokenizer, which splits 11..29 into
        # digits: load_classifier refuses it (rightly), so the LM is read at the saved tokenizer's answers.
        from transformers import AutoModelForCausalLM

        tokenizer = arithmetic_decoder.build_answer_tokenizer()
        lm = AutoModelForCausalLM.from_pretrained(path).eval()
        model = answer_head.AnswerClassifier(lm, answer_head.answer_token_ids(tokenizer, arithmetic_decoder.ANSWERS))
    else:
        model, tokenizer = arithmetic_decoder.load_classifier(path)
    assert answer_head.head_kind(model) == head
    return model_type, path, model, arithmetic_decoder.encode_prompts(tokenizer)


def own_class_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """The model's own logits of the classes: the sequence classifier's, or the causal LM's at the
    answer tokens of the last position (the LM's own forward, not the wrapper's)."""
    if isinstance(model, answer_head.AnswerClassifier):
        return model.lm(input_ids=ids).logits[:, -1, model.answer_ids]
    return model(input_ids=ids).logits


def test_prefix_and_suffix_recompose_the_models_own_logits_at_every_layer(tiny):
    model_type, _, model, ids = tiny
    with torch.no_grad():
        reference = own_class_logits(model, ids)
        assert reference.shape == (1000, 28)
        for layer in range(model.config.num_hidden_layers):
            for positions in (None, (3,), (1, 4, 5)):
                site = arithmetic_decoder.site(model, layer, positions)
                assert isinstance(site, decoder.DecoderSite) and site.n == len(positions or range(6)) * 32
                assert (site.suffix(site.prefix(ids)) - reference).abs().max().item() < 1e-5, (model_type, layer, positions)
    assert str(site.name) == f"{model_type}.block_output.L1.pos1_4_5"


def test_layer_outputs_of_one_forward_are_the_models_hidden_states(tiny):
    """All wanted layers' outputs come from one forward pass: the model's own hidden states (the last
    layer's before the final norm, which hidden_states applies there)."""
    model_type, _, model, ids = tiny
    with torch.no_grad():
        hidden = model.base_model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states
    n_layers = model.config.num_hidden_layers
    outputs = arithmetic_decoder.layer_outputs(model, ids, range(n_layers))
    assert sorted(outputs) == list(range(n_layers)) and outputs[0].shape == (len(ids), 6, 32)
    for layer in range(n_layers - 1):
        assert (outputs[layer] - hidden[layer + 1]).abs().max().item() < 1e-6, (model_type, layer)
    last = arithmetic_decoder.site(model, n_layers - 1, None)
    with torch.no_grad():
        assert (last.suffix(outputs[n_layers - 1].flatten(1)) - own_class_logits(model, ids)).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="must be decoder layers"):
        arithmetic_decoder.layer_outputs(model, ids, [n_layers])


def test_the_fast_engine_equals_pyvene_where_pyvene_supports_the_model(tiny):
    model_type, _, model, ids = tiny
    if not pe.maps_model(answer_head.pyvene_view(model)[0]):
        pytest.skip(f"pyvene 0.1.8 has no mapping for {type(answer_head.pyvene_view(model)[0]).__name__}")
    rng = np.random.default_rng(0)
    base, source = torch.as_tensor(rng.integers(0, 1000, 64)), torch.as_tensor(rng.integers(0, 1000, (64, 1)))
    for layer, positions, k in ((0, None, 16), (1, (2, 5), 8)):
        site = arithmetic_decoder.site(model, layer, positions)
        intervention = engine.initial_intervention(site, engine.DASConfig((k,), seed=3))
        states = engine.cache_activations(site, ids)
        with torch.no_grad():
            ours = site.suffix(engine.interchange(site, intervention, states[base], states[source], intervention.weight()))
            intervenable, spec = pe.build_intervenable(site, site.n, (k,), intervention.weight().detach())
            reference = pe.intervened_logits(intervenable, spec, (k,), ids[base], ids[source])
            plain = own_class_logits(model, ids[base])
        assert (ours - reference).abs().max().item() < 1e-5, (layer, positions)
        assert (ours - plain).abs().max().item() > 1e-3  # the intervention did something


def test_a_model_whose_logits_the_site_cannot_recompose_stops_with_one_line():
    """The structural self-check: a decoder classifier that pools its first token (as an encoder's
    classifier pools CLS) has layers, a final norm and a `score` head, but its logits are not the
    site's; and a causal LM whose logits are transformed in a way the answer head does not apply."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaForSequenceClassification
    from transformers.modeling_outputs import SequenceClassifierOutputWithPast

    class FirstTokenClassifier(LlamaForSequenceClassification):
        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
            return SequenceClassifierOutputWithPast(logits=self.score(hidden[:, 0]))

    config = AutoConfig.for_model("llama", vocab_size=13, num_labels=28, pad_token_id=0, max_position_embeddings=16, bos_token_id=None,
                                  eos_token_id=None, **CONFIGS["llama"])
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="do not recompose the model's own logits") as caught:
        arithmetic_decoder.site(FirstTokenClassifier(config), 1)
    assert "\n" not in str(caught.value)
    config = AutoConfig.for_model("gemma2", vocab_size=33, pad_token_id=0, max_position_embeddings=16, bos_token_id=None, eos_token_id=None,
                                  final_logit_softcapping=0.05, **CONFIGS["gemma2"])
    model = answer_head.AnswerClassifier(AutoModelForCausalLM.from_config(config), range(3, 31))
    arithmetic_decoder.site(model, 0)  # the answer head caps as the model does
    model.softcap = None
    with pytest.raises(ValueError, match="do not recompose"):
        arithmetic_decoder.site(model, 0)


def test_a_model_without_a_list_of_decoder_layers_stops_with_one_line():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=13, n_positions=8, n_embd=16, n_layer=2, n_head=2, num_labels=28))
    model.config.num_hidden_layers = 3  # the config no longer describes the layers the model has
    with pytest.raises(ValueError, match="no list of decoder layers found"):
        decoder.DecoderSite(model, 0, None, 6)


def test_pyvene_engine_refuses_a_model_pyvene_does_not_know(tiny):
    model_type, _, model, _ = tiny
    if pe.maps_model(answer_head.pyvene_view(model)[0]):
        pytest.skip("pyvene knows this model")
    with pytest.raises(ValueError, match="--engine fast"):
        arithmetic_decoder.site(model, 0).pyvene_spec()


def run(*args):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.mark.parametrize("model_type", SCRIPT_TYPES)
def test_sweep_evaluation_and_graphs_run_on_the_decoder(model_type, tmp_path):
    path = save_tiny(model_type, tmp_path / model_type)
    sweep = tmp_path / "sweep"
    run(ROOT / "run_das.py", "--model_path", path, "--layers", "1", "--low_rank_dims", "8", "--n_training", "256", "--n_testing", "200",
        "--batch_size", "64", "--epochs", "1", "--results_path", sweep)
    summary = json.loads((sweep / "summary.json").read_text())
    assert {c["layer"] for c in summary["cells"]} == {1} and all(0 <= c["iia_own_model"] <= 1 for c in summary["cells"])
    assert json.loads(next((sweep / "cells").rglob("*.json")).read_text())["site"] == f"{model_type}.block_output.L1.pos0-5"
    run(ROOT / "evaluate_das.py", "--results_path", sweep, "--n_testing", "300")
    assert json.loads((sweep / "evaluation.json").read_text())["cells"]
    analysis = tmp_path / "analysis"
    run(ROOT / "disentangle_causal_models.py", "graphs", "--sweep_path", sweep, "--results_path", analysis)
    graphs = json.loads((analysis / "graphs.json").read_text())["graphs"]
    assert len(graphs) == 3 and all(0 <= g["mean_iia"] <= 1 for g in graphs)
    positions = tmp_path / "positions"
    run(ROOT / "run_das.py", "--model_path", path, "--position_sets", "all", "3", "--layers", "0", "--causal_models", "(X+Y)+Z",
        "--n_training", "128", "--n_testing", "100", "--epochs", "1", "--results_path", positions)
    cells = json.loads((positions / "summary.json").read_text())["cells"]
    assert {c["position_set"] for c in cells} == {"all", "3"} and all("neuron_mask" in c["baselines"] for c in cells)


def test_finetune_a_decoder_language_model_from_a_local_directory(tmp_path):
    """--base_model on a Llama language model: a fresh 28-class head, the thesis recipe, a classifier
    the sweep scripts load."""
    base = save_tiny("llama", tmp_path / "tiny-llama", classifier=False)
    out = tmp_path / "finetuned"
    run(ROOT / "train_gpt2.py", "--base_model", base, "--output_dir", out, "--epochs", "1")
    record = json.loads((out / "training.json").read_text())
    assert record["mode"] == "finetune" and record["model"]["type"] == "llama"
    model, _ = arithmetic_decoder.load_classifier(out)
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.num_labels == 28


def test_the_main_job_runs_on_a_decoder_of_ones_own(tmp_path):
    """run_pipeline.py --base_model: the GPT-2 steps fine-tune, sweep, evaluate, draw and analyse the
    given decoder."""
    base = save_tiny("qwen2", tmp_path / "tiny-qwen2", classifier=False, num_hidden_layers=3)  # --quick sweeps layers 0 and 2
    results = tmp_path / "results"
    proc = run(ROOT / "run_pipeline.py", "--quick", "--base_model", base, "--results_path", results,
               "--only", "gpt2_model", "gpt2_das_arithmetic", "gpt2_das_simple", "gpt2_evaluate", "gpt2_figures", "graphs", "cliques",
               "--jobs", "1")
    assert "--base_model" in proc.stdout and "Qwen2 (finetune" in proc.stdout and "LOAD REPORT" not in proc.stdout + proc.stderr
    record = json.loads((results / "gpt2" / "model" / "training.json").read_text())
    assert record["mode"] == "finetune" and record["model"]["type"] == "qwen2"
    assert json.loads((results / "gpt2" / "disentangling" / "cliques.json").read_text())["graphs"]
    for figure in ("sanity_check", "empirical", "overview"):  # the thesis's figures, from the decoder's JSON
        assert (results / "gpt2" / f"{figure}.png").stat().st_size > 10_000
