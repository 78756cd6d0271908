"""The X+Y+Z pipeline on a causal-LM head (`train_gpt2.py --head next_token`): the answer to
"X+Y+Z=" is the next token, the sum's decimal string. Trained from scratch and fine-tuned from a
saved causal LM; read downstream as a 28-class classifier at the answer tokens
(`models.answer_head.AnswerClassifier`), whose sites recompose the LM's own answer logits at every
layer and whose fast engine equals pyvene on the LM; the sweep, evaluation, position sweep and graphs
run on it unchanged; an answer that is not one token stops with one line; and the default
sequence-classification tokenizer is untouched."""

import contextlib
import io
import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_das.das import engine
from causal_das.das import pyvene_engine as pe
from causal_das.experiments.arithmetic_training import TrainingRunConfig, train_and_save
from causal_das.models import decoder
from causal_das.models.answer_head import AnswerClassifier, answer_token_ids
from causal_das.models.gpt2 import GPT2Site
from causal_das.runtime import devices
from causal_das.studies import arithmetic_decoder
from causal_das.tasks import arithmetic

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--width", "16", "--n_layers", "2", "--n_heads", "2", "--epochs", "2"]


def run(*args, check: bool = True):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"})
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def run_here(script: str, *args) -> str:
    """`python <script> <args>` in this process (no interpreter start, which is most of a tiny run);
    returns its stdout."""
    argv, out = sys.argv, io.StringIO()
    sys.argv = [str(ROOT / script), *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()) as err:
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as stop:
        assert not stop.code, err.getvalue()[-2000:]
    finally:
        sys.argv = argv
        devices.setup("cpu", "fp32")
    return out.getvalue()


@pytest.fixture(scope="module")
def tiny_model():
    """A 3-block next-token GPT-2 (random weights) and every prompt's ids."""
    tokenizer = arithmetic_decoder.build_answer_tokenizer()
    model = arithmetic_decoder.build_default_model(tokenizer, width=16, n_layers=3, n_heads=2, seed=1, head="next_token").eval()
    return model, arithmetic_decoder.encode_prompts(tokenizer)


def answer_logits(model: AnswerClassifier, ids: torch.Tensor) -> torch.Tensor:
    """The LM's own logits of the answer tokens at the last position."""
    return model.lm(input_ids=ids).logits[:, -1, model.answer_ids]


def test_the_answer_tokenizer_extends_the_default_one_which_is_untouched():
    default, answers = arithmetic_decoder.build_tokenizer(), arithmetic_decoder.build_answer_tokenizer()
    assert len(default) == 13 and len(answers) == 33
    assert {k: v for k, v in answers.get_vocab().items() if v < 13} == default.get_vocab()
    assert torch.equal(arithmetic_decoder.encode_prompts(default), arithmetic_decoder.encode_prompts(answers))
    ids = answer_token_ids(answers, arithmetic_decoder.ANSWERS)
    assert answers.convert_ids_to_tokens(ids) == [str(s) for s in range(3, 31)]


def test_the_classifier_reads_the_lm_at_the_answer_tokens(tiny_model):
    model, ids = tiny_model
    ids = ids[:50]
    with torch.no_grad():
        full = model.lm(input_ids=ids).logits[:, -1]
        torch.testing.assert_close(model.vocabulary_logits(ids), full, atol=1e-6, rtol=0)
        torch.testing.assert_close(model(input_ids=ids).logits, full[:, model.answer_ids], atol=1e-6, rtol=0)
    assert arithmetic_decoder.predictions(model, ids).max() < 28  # class indices, not token ids
    with pytest.raises(ValueError, match="distinct token ids"):
        AnswerClassifier(model.lm, [3, 3])


def test_gpt2_and_decoder_sites_recompose_the_lms_answer_logits_at_every_layer(tiny_model):
    model, ids = tiny_model
    with torch.no_grad():
        reference = answer_logits(model, ids)
        for layer in range(3):
            for positions in (None, (3,), (4, 5)):  # (4, 5) before the last block: the cached keys of tokens 0-3
                for site in (arithmetic_decoder.site(model, layer, positions), decoder.DecoderSite(model, layer, positions, 6)):
                    gap = (site.suffix(site.prefix(ids)) - reference).abs().max().item()
                    assert gap < 1e-5, (type(site).__name__, layer, positions, gap)
        assert isinstance(arithmetic_decoder.site(model, 0), GPT2Site)
        outputs = arithmetic_decoder.layer_outputs(model, ids, [2])
        assert (arithmetic_decoder.site(model, 2).suffix(outputs[2].flatten(1)) - reference).abs().max().item() < 1e-5


def test_the_fast_engine_equals_pyvene_on_a_next_token_gpt2(tiny_model):
    model, ids = tiny_model
    rng = np.random.default_rng(0)
    base, source = torch.as_tensor(rng.integers(0, 1000, 64)), torch.as_tensor(rng.integers(0, 1000, (64, 1)))
    for layer, positions, k in ((0, None, 8), (1, (2, 5), 4), (2, (4, 5), 4)):
        site = arithmetic_decoder.site(model, layer, positions)
        intervention = engine.initial_intervention(site, engine.DASConfig((k,), seed=3))
        states = engine.cache_activations(site, ids)
        with torch.no_grad():
            ours = site.suffix(engine.interchange(site, intervention, states[base], states[source], intervention.weight()))
            intervenable, spec = pe.build_intervenable(site, site.n, (k,), intervention.weight().detach())
            reference = pe.intervened_logits(intervenable, spec, (k,), ids[base], ids[source])
            plain = answer_logits(model, ids[base])
        assert ours.shape == reference.shape == (64, 28)
        assert (ours - reference).abs().max().item() < 1e-5, (layer, positions)
        assert (ours - plain).abs().max().item() > 1e-4  # the intervention did something


def test_train_from_scratch_then_sweep_evaluate_positions_and_graphs(tmp_path):
    out = tmp_path / "model"
    proc = run(ROOT / "train_gpt2.py", "--head", "next_token", *TINY, "--output_dir", out)
    assert "over the whole vocabulary" in proc.stdout
    record = json.loads((out / "training.json").read_text())
    assert record["head"] == "next_token" and record["settings"]["head"] == "next_token" and record["mode"] == "scratch"
    assert record["answer_tokens"] == [str(s) for s in range(3, 31)] and len(set(record["answer_token_ids"])) == 28
    for key in ("heldout_accuracy", "heldout_accuracy_vocabulary", "train_accuracy_vocabulary"):
        assert 0 <= record[key] <= 1, key
    assert json.loads((out / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    model, tokenizer = arithmetic_decoder.load_classifier(out)
    assert isinstance(model, AnswerClassifier) and len(tokenizer) == 33
    # The same flags again: the saved network is the trained one (its fingerprint covers the answers).
    config = TrainingRunConfig(output_dir=str(out), head="next_token", width=16, n_layers=2, n_heads=2, epochs=2)
    assert train_and_save(config)["model_fingerprint"] == record["model_fingerprint"]

    sweep = tmp_path / "sweep"
    run_here("run_das.py", "--model_path", out, "--layers", "1", "--low_rank_dims", "4", "--n_training", "64", "--n_testing", "50",
        "--epochs", "1", "--results_path", sweep)
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["head"] == "next_token" and summary["cells"]
    assert all(0 <= c["iia_own_model"] <= 1 and 0 <= c["control_iia_own_model"] <= 1 for c in summary["cells"])  # random-init control
    run_here("evaluate_das.py", "--results_path", sweep, "--n_testing", "50")
    evaluation = json.loads((sweep / "evaluation.json").read_text())
    assert evaluation["head"] == "next_token" and evaluation["cells"]
    run_here("disentangle_causal_models.py", "graphs", "--sweep_path", sweep, "--results_path", tmp_path / "analysis", "--layers", "1",
        "--low_rank_dim", "4", "--causal_models", "(X+Y)+Z")
    assert json.loads((tmp_path / "analysis" / "graphs.json").read_text())["graphs"]
    positions = tmp_path / "positions"
    run_here("run_das.py", "--model_path", out, "--position_sets", "all", "4-5", "--layers", "0", "--causal_models", "(X+Y)+Z",
        "--n_training", "64", "--n_testing", "50", "--epochs", "1", "--results_path", positions)
    summary = json.loads((positions / "summary.json").read_text())
    assert summary["head"] == "next_token" and {c["position_set"] for c in summary["cells"]} == {"all", "4-5"}


def test_finetune_a_saved_llama_language_model_on_its_next_token(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = arithmetic_decoder.build_answer_tokenizer()
    base = tmp_path / "tiny-llama"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 max_position_embeddings=16, pad_token_id=0, bos_token_id=None, eos_token_id=None)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = tmp_path / "finetuned"
    record = train_and_save(TrainingRunConfig(output_dir=str(out), base_model=str(base), head="next_token", epochs=1, lr=1e-3))
    assert record["mode"] == "finetune" and record["head"] == "next_token" and record["model"]["type"] == "llama"
    assert 0 <= record["heldout_accuracy_vocabulary"] <= 1
    model, _ = arithmetic_decoder.load_classifier(out)
    assert type(model.lm).__name__ == "LlamaForCausalLM" and model.answer_ids.tolist() == record["answer_token_ids"]
    ids = arithmetic_decoder.encode_prompts(tokenizer)
    site = arithmetic_decoder.site(model, 0, (3,))
    with torch.no_grad():
        assert (site.suffix(site.prefix(ids)) - answer_logits(model, ids)).abs().max().item() < 1e-5


def test_an_answer_that_is_two_tokens_stops_with_one_line(tmp_path):
    """A causal LM whose tokenizer writes 11..30 as two tokens (the default tokenizer has only 1..10)."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = arithmetic_decoder.build_tokenizer()
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"10|\d|[+=]"), behavior="isolated")  # 17 -> 1, 7
    base = tmp_path / "digits"
    GPT2LMHeadModel(GPT2Config(vocab_size=13, n_positions=8, n_embd=16, n_layer=1, n_head=2, bos_token_id=None, eos_token_id=None)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    proc = run(ROOT / "train_gpt2.py", "--base_model", base, "--head", "next_token", "--output_dir", tmp_path / "out", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "does not encode every answer as one token (20 of 28 are not: '11', '12'," in lines[0]
    assert "'30'; e.g. '11' -> ['1', '1']" in lines[0] and not list((tmp_path / "out").rglob("*"))
    with pytest.raises(ValueError, match="--induce trains a sequence classifier"):
        train_and_save(TrainingRunConfig(output_dir=str(tmp_path / "iit"), head="next_token", inductions=(("(X+Y)+Z", "L0:3", "X<=5"),)))
    assert len(arithmetic_decoder.ANSWERS) == arithmetic.N_CLASSES
