"""Checkpoints stored in bf16 (and fp16), as Hugging Face decoders usually are: tiny GPT-2 and Llama
checkpoints written with save_pretrained in bf16 load in fp32 on purpose (said on the console and in
the records), or stay in bf16 under --precision bf16 with a suffix that takes the engine's fp32
states; their fingerprints are dtype-safe and fp32 fingerprints are what they always were; they
fine-tune, sweep, graph and draw through the real scripts; and --induce runs on every supported
decoder type (`models.checkpoint_dtype`, `runtime.provenance.model_fingerprint`,
`decoder.interchange_logits`)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_decoders import CONFIGS, TYPES

from causal_das.das import engine
from causal_das.experiments.arithmetic_training import TrainingRunConfig, train_and_save
from causal_das.models import decoder
from causal_das.runtime import devices
from causal_das.runtime.io import run_metadata
from causal_das.runtime.provenance import model_fingerprint
from causal_das.studies import arithmetic_decoder, arithmetic_iit
from causal_das.tasks import arithmetic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restore_precision():
    yield
    devices.setup("cpu", "fp32")  # also forgets the note of a converted checkpoint


def tiny_model(model_type: str, classifier: bool = True):
    """A 2-layer decoder of `model_type` with the task's tokenizer (seeded): width 16 for GPT-2 (its
    graph pass below runs every ordered pair), test_decoders' width 32 for the others."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    tokenizer = arithmetic_decoder.build_tokenizer()
    if model_type == "gpt2":
        config = arithmetic_decoder.build_default_model(tokenizer, width=16, n_layers=2, n_heads=2).config
    else:
        config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), num_labels=28, pad_token_id=0, max_position_embeddings=16,
                                      bos_token_id=None, eos_token_id=None, **CONFIGS[model_type])
    torch.manual_seed(0)
    model = (AutoModelForSequenceClassification if classifier else AutoModelForCausalLM).from_config(config)
    return model.eval(), tokenizer


def save_tiny(model_type: str, directory: Path, dtype: torch.dtype = torch.bfloat16, classifier: bool = True) -> Path:
    model, tokenizer = tiny_model(model_type, classifier)
    model.to(dtype).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    assert json.loads((directory / "config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")
    return directory


def run(*args, expect: int = 0):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == expect, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def old_fingerprint(model) -> str:
    """model_fingerprint as it was before bf16 (numpy bytes of every tensor): the committed
    references' fingerprints were computed this way."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def test_fingerprints_are_dtype_safe_and_fp32_ones_unchanged():
    for model_type in ("gpt2", "llama"):
        model, _ = tiny_model(model_type)
        fp32 = model_fingerprint(model)
        assert fp32 == old_fingerprint(model)
        bf16 = model_fingerprint(model.to(torch.bfloat16))
        # One fingerprint per set of weights, whichever dtype holds them: bf16 values are exact in fp32.
        assert bf16 == model_fingerprint(model.float()) and bf16 != fp32
    mixed = torch.nn.Module()  # integer, bool and fp64 tensors keep their bytes too
    mixed.register_buffer("ids", torch.arange(5))
    mixed.register_buffer("mask", torch.tensor([True, False]))
    mixed.weight = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    assert model_fingerprint(mixed) == old_fingerprint(mixed)


@pytest.mark.parametrize("model_type,dtype", [("gpt2", torch.bfloat16), ("llama", torch.bfloat16), ("llama", torch.float16)])
def test_a_half_precision_checkpoint_loads_in_fp32_on_purpose_and_says_so(model_type, dtype, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    path = save_tiny(model_type, tmp_path / model_type, dtype)
    model, tokenizer = arithmetic_decoder.load_classifier(path)
    stored = str(dtype).removeprefix("torch.")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert f"is stored in {stored}: loaded in float32 on purpose" in capsys.readouterr().out
    note = run_metadata()["compute"]["network_dtype"]
    assert note["stored_dtype"] == stored and note["loaded_dtype"] == "float32" and str(path) in note["reason"]
    # Exactly the checkpoint's values, and the same fingerprint as the checkpoint loaded as stored.
    as_stored = AutoModelForSequenceClassification.from_pretrained(path).eval()
    assert next(as_stored.parameters()).dtype == dtype
    assert model_fingerprint(model) == model_fingerprint(as_stored)
    ids = arithmetic_decoder.encode_prompts(tokenizer)[:50]
    site = arithmetic_decoder.site(model, 0)
    with torch.no_grad():
        logits = engine.suffix_logits(site, engine.cache_activations(site, ids))
        torch.testing.assert_close(logits, model(input_ids=ids).logits, atol=1e-5, rtol=0)
    # An fp32 checkpoint loads as it always did, silently, and leaves no note in the records.
    save_tiny(model_type, tmp_path / "fp32", torch.float32)
    fp32, _ = arithmetic_decoder.load_classifier(tmp_path / "fp32")
    assert capsys.readouterr().out == "" and "network_dtype" not in run_metadata()["compute"]
    assert model_fingerprint(fp32) == model_fingerprint(AutoModelForSequenceClassification.from_pretrained(tmp_path / "fp32"))


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_precision_bf16_keeps_a_bf16_checkpoint_and_its_suffix_takes_fp32_states(model_type, tmp_path, capsys):
    path = save_tiny(model_type, tmp_path / model_type)
    reference, tokenizer = arithmetic_decoder.load_classifier(path)  # fp32, for comparison
    devices.setup("cpu", "bf16")
    model, _ = arithmetic_decoder.load_classifier(path)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert "kept in it (--precision bf16)" in capsys.readouterr().out
    assert devices.current()["network_dtype"]["loaded_dtype"] == "bfloat16"
    assert model_fingerprint(model) == model_fingerprint(reference)
    assert {p.dtype for p in arithmetic_decoder.random_init_copy(model, 0).parameters()} == {torch.bfloat16}  # the control, too
    ids = arithmetic_decoder.encode_prompts(tokenizer)
    rng = np.random.default_rng(0)
    base, source = rng.integers(0, 1000, 256), rng.integers(0, 1000, 256)
    data = engine.InterchangeData(ids, torch.as_tensor(base), torch.as_tensor(source)[:, None],
                                  torch.as_tensor(arithmetic.counterfactual_labels(arithmetic.get_model("(X+Y)+Z"), base, source)))
    for positions in (None, (3,))[: 2 if model_type == "gpt2" else 1]:  # GPT-2's site with cached keys of untouched tokens, too
        site = arithmetic_decoder.site(model, 0, positions)
        trained = engine.train(site, data, engine.DASConfig((8,), epochs=1, batch_size=128))
        assert trained.weight.dtype == torch.float32 and np.isfinite(trained.history["epochs"][-1]["loss"])
        predicted = engine.predict(site, trained, data)
        assert predicted.shape == (256,)
        # The bf16 network's suffix on the fp32 cache gives the fp32 network's logits, to bf16's precision.
        states = engine.cache_activations(site, ids[:100])
        assert states.dtype == torch.float32
        with torch.no_grad():
            logits = engine.suffix_logits(site, states)
            expected = reference(input_ids=ids[:100]).logits
        assert logits.dtype == torch.float32 and 0 < (logits - expected).abs().max().item() < 0.05


def test_the_interchange_of_every_decoder_type_equals_its_sites_suffix():
    """`decoder.interchange_logits` (one hooked forward pass, the path of --induce on any decoder)
    against the site's own prefix and suffix, and on GPT-2 against GPT-2's own interchange."""
    for model_type in ("gpt2", *TYPES):  # every decoder family the tests build
        model, tokenizer = tiny_model(model_type)
        ids = arithmetic_decoder.encode_prompts(tokenizer)[::10]  # 100 prompts
        base, source = torch.arange(0, 40), torch.arange(50, 90)
        for layer, positions in ((0, (1, 4, 5)), (1, range(6))):
            with torch.no_grad():
                ours = decoder.interchange_logits(model, ids[torch.cat([base, source])], len(base), layer, positions)
                site = decoder.DecoderSite(model, layer, None, arithmetic_decoder.SEQ_LEN)
                states = site.prefix(ids)
                mixed = states[base].view(40, 6, -1).clone()
                mixed[:, list(positions)] = states[source].view(40, 6, -1)[:, list(positions)]
                expected = site.suffix(mixed.flatten(1))
            torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0, msg=f"{model_type} L{layer} {list(positions)}")
            if model_type == "gpt2":
                with torch.no_grad():
                    own = arithmetic_iit.interchange_logits(model, ids, base, source, layer, positions)
                torch.testing.assert_close(ours, own, atol=1e-5, rtol=0)
        # Differentiable: the IIT loss reaches the layers before the site.
        model.train()
        loss = arithmetic_iit.interchange_logits(model, ids, base, source, 0, (3,)).logsumexp(-1).mean()
        loss.backward()
        first = decoder.decoder_parts(model)[0][0]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in first.parameters()), model_type


def test_finetune_sweep_graphs_and_figures_run_on_bf16_gpt2_checkpoints(tmp_path):
    results = tmp_path / "results"
    base = save_tiny("gpt2", tmp_path / "gpt2-lm", classifier=False)
    proc = run(ROOT / "train_gpt2.py", "--base_model", base, "--output_dir", results / "model", "--epochs", "1")
    assert f"--base_model {base} is stored in bfloat16: fine-tuned in float32" in proc.stdout
    record = json.loads((results / "model" / "training.json").read_text())
    assert record["model"]["checkpoint_dtype"]["stored_dtype"] == "bfloat16" and record["model"]["checkpoint_dtype"]["loaded_dtype"] == "float32"
    assert json.loads((results / "model" / "config.json").read_text())["dtype"] == "float32"  # saved as it was trained
    # A classifier stored in bf16 (as a user's own checkpoint may be): a sweep cell, graphs, figures.
    classifier = save_tiny("gpt2", tmp_path / "gpt2-classifier")
    sweep = results / "das_arithmetic"
    proc = run(ROOT / "run_das.py", "--model_path", classifier, "--layers", "1", "--low_rank_dims", "8", "--n_training", "256",
               "--n_testing", "200", "--batch_size", "64", "--epochs", "1", "--results_path", sweep)
    assert "is stored in bfloat16: loaded in float32 on purpose" in proc.stdout
    cell = json.loads(next((sweep / "cells").rglob("*.json")).read_text())
    assert cell["compute"]["network_dtype"]["stored_dtype"] == "bfloat16" and 0 <= cell["iia_own_model"] <= 1
    run(ROOT / "disentangle_causal_models.py", "graphs", "--sweep_path", sweep, "--results_path", results / "analysis",
        "--causal_models", "(X+Y)+Z")
    graphs = json.loads((results / "analysis" / "graphs.json").read_text())
    assert len(graphs["graphs"]) == 1 and graphs["compute"]["network_dtype"]["loaded_dtype"] == "float32"
    run(ROOT / "visualizations.py", "--experiment", "sanity_check", "training", "--results_path", results)
    for figure in ("sanity_check", "model/training_curves"):
        assert (results / f"{figure}.png").stat().st_size > 10_000


def test_induce_and_a_bf16_sweep_run_on_a_bf16_llama(tmp_path):
    """--induce on a Llama (GPT-2's config.n_layer was read: a traceback), fine-tuned from a bf16
    checkpoint; then a --precision bf16 sweep on a classifier kept in bf16."""
    base = save_tiny("llama", tmp_path / "llama-lm", classifier=False)
    out = tmp_path / "iit"
    proc = run(ROOT / "train_gpt2.py", "--base_model", base, "--output_dir", out, "--epochs", "1",
               "--induce", "(X+Y)+Z", "--induce_site", "L0:3", "--induce_where", "X<=5")
    assert "induced (X+Y)+Z at L0:3 where X<=5 (500 triples)" in proc.stdout
    record = json.loads((out / "training.json").read_text())
    (induction,) = record["inductions"]
    assert record["model"]["type"] == "llama" and 0 <= induction["heldout_interchange_accuracy"] <= 1
    assert record["model"]["checkpoint_dtype"]["loaded_dtype"] == "float32"
    # A site the Llama does not have is one line (the script prints it and exits 2), not a traceback.
    bad = TrainingRunConfig(output_dir=str(tmp_path / "bad"), base_model=str(base), epochs=1, inductions=(("(X+Y)+Z", "L1:3", "X<=5"),))
    with pytest.raises(ValueError, match=re.escape("layer 1 must be in 0..0 (a block must follow the site)")):
        train_and_save(bad)
    classifier = save_tiny("llama", tmp_path / "llama-classifier")
    sweep = tmp_path / "sweep"
    proc = run(ROOT / "run_das.py", "--model_path", classifier, "--layers", "0", "--low_rank_dims", "8", "--n_training", "256",
               "--n_testing", "200", "--batch_size", "64", "--epochs", "1", "--precision", "bf16", "--results_path", sweep)
    assert "kept in it (--precision bf16)" in proc.stdout
    cell = json.loads(next((sweep / "cells").rglob("*.json")).read_text())
    assert cell["compute"]["precision"] == "bf16" and cell["compute"]["network_dtype"]["loaded_dtype"] == "bfloat16"
