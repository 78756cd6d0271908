"""GPT-2 on X+Y+Z: the site against pyvene, the sweep's cells, and the three scripts end to end."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_das.das import engine
from causal_das.das import pyvene_engine as pe
from causal_das.experiments import arithmetic_sweep
from causal_das.models import gpt2
from causal_das.studies import arithmetic_cells, arithmetic_decoder, arithmetic_network
from causal_das.tasks import arithmetic as A

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--width", "16", "--n_layers", "3", "--n_heads", "2"]


def run(script, *args, check=True):
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def tokenizer():
    return arithmetic_decoder.build_tokenizer()


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return arithmetic_decoder.build_default_model(tokenizer, width=16, n_layers=3, n_heads=2, seed=0).eval()


@pytest.fixture(scope="module")
def trained_model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt2") / "model"
    run("train_gpt2.py", "--output_dir", out, "--epochs", "3", *TINY)
    return out


def test_tokenizer_gives_six_tokens_and_round_trips(tokenizer, tmp_path):
    ids = arithmetic_decoder.encode_prompts(tokenizer)
    assert ids.shape == (1000, 6)
    assert tokenizer.convert_ids_to_tokens(ids[A.triple_index(10, 1, 7)].tolist()) == ["10", "+", "1", "+", "7", "="]
    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    assert torch.equal(arithmetic_decoder.encode_prompts(AutoTokenizer.from_pretrained(tmp_path)), ids)


def test_head_of_block_outputs_is_the_model(tiny, tokenizer):
    ids = arithmetic_decoder.encode_prompts(tokenizer)[:50]
    with torch.no_grad():
        reference = tiny(input_ids=ids).logits
        outputs = gpt2.block_outputs(tiny, ids, range(3))
        for layer in range(3):
            assert torch.allclose(gpt2.head(tiny, outputs[layer], layer), reference, atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1, 2])
@pytest.mark.parametrize(("positions", "k"), [(None, 5), (None, 96), ((1, 3, 5), 7), ((5,), 16)])
def test_fast_engine_matches_pyvene_on_gpt2(tiny, tokenizer, layer, positions, k):
    """Same W: our suffix-only logits equal pyvene IntervenableModel's to 1e-5 at every layer,
    including the last (whose block_output has no ln_f), low-rank and square, all or some positions."""
    ids = arithmetic_decoder.encode_prompts(tokenizer)
    rng = np.random.default_rng(layer)
    base, source = torch.as_tensor(rng.integers(0, 1000, 64)), torch.as_tensor(rng.integers(0, 1000, (64, 1)))
    site = arithmetic_decoder.site(tiny, layer, positions)
    intervention = engine.initial_intervention(site, engine.DASConfig((k,), seed=3))
    states = engine.cache_activations(site, ids)
    with torch.no_grad():
        ours = site.suffix(engine.interchange(site, intervention, states[base], states[source], intervention.weight()))
        intervenable, spec = pe.build_intervenable(site, site.n, (k,), intervention.weight().detach())
        reference = pe.intervened_logits(intervenable, spec, (k,), ids[base], ids[source])
        plain = tiny(input_ids=ids[base]).logits
    assert (ours - reference).abs().max().item() < 1e-5
    assert (ours - plain).abs().max().item() > 1e-3  # the intervention did something


def test_site_rejects_bad_layer_and_positions(tiny):
    with pytest.raises(ValueError, match="blocks 0..2"):
        arithmetic_decoder.site(tiny, 3)
    with pytest.raises(ValueError, match="positions"):
        arithmetic_decoder.site(tiny, 0, (0, 6))


def small_sweep(model_dir, results_path, **overrides):
    settings = dict(model_path=str(model_dir), layers=(0, 2), low_rank_dims=(4, 96), n_training=512, n_testing=400,
                    batch_size=128, epochs=1, results_path=str(results_path))
    settings.update(overrides)
    return arithmetic_cells.SweepConfig(**settings)


def test_full_swap_iia_is_the_networks_accuracy_on_sources(trained_model_dir, tmp_path):
    """k = n at all positions replaces the whole state by the source's: IIA must equal, exactly, the rate
    at which the network's own prediction on the source matches the counterfactual label."""
    summary = arithmetic_sweep.run_sweep(small_sweep(trained_model_dir, tmp_path, causal_model_type="simple"))
    full = [c for c in summary["cells"] if c["full_swap"]]
    assert len(full) == 4 * 2
    for cell in full:
        assert cell["k"] == 96
        assert cell["iia_own_model"] == cell["baselines"]["network_on_source"]
    whole = next(c for c in full if c["causal_model"] == "(X+Y+Z)")
    assert whole["iia_own_model"] > 0.05  # the tiny network has learned something, so this is not 0 == 0


def test_sweep_files_resume_and_corruption(trained_model_dir, tmp_path, capsys):
    config = small_sweep(trained_model_dir, tmp_path, layers=(1,), low_rank_dims=(4,))
    first = arithmetic_sweep.run_sweep(config)
    cell_file = tmp_path / "cells" / "PXY_Z" / "L01_k4.json"
    cell = json.loads(cell_file.read_text())
    assert set(cell["iia"]) == {"(X+Y)+Z", "(X+Z)+Y", "X+(Y+Z)"} and "control_random_init" in cell
    assert (tmp_path / "interventions" / "PXY_Z" / "L01_k4" / "weights.safetensors").is_file()
    assert cell["n_training_pairs"] == 512 and cell["n_test_pairs"] == 400
    # A rerun skips every finished cell.
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").rglob("*.json")}
    capsys.readouterr()
    arithmetic_sweep.run_sweep(config)
    assert "reusing 3 of 3 cells" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").rglob("*.json")}
    # A truncated cell is recomputed, with a message, and comes back identical apart from timing.
    cell_file.write_text(cell_file.read_text()[:100])
    again = arithmetic_sweep.run_sweep(config)
    assert "corrupt" in capsys.readouterr().out
    recomputed = json.loads(cell_file.read_text())
    assert recomputed["iia"] == cell["iia"] and recomputed["train_history"]["epochs"] == cell["train_history"]["epochs"]
    assert [c["iia"] for c in again["cells"]] == [c["iia"] for c in first["cells"]]
    # A cell whose saved W is gone (a fresh clone of results/ has JSON but no weights) is recomputed.
    (tmp_path / "interventions" / "PXY_Z" / "L01_k4" / "weights.safetensors").unlink()
    arithmetic_sweep.run_sweep(config)
    assert "recomputing 1 of 3 cells: their saved files are missing" in capsys.readouterr().out
    assert json.loads(cell_file.read_text())["iia"] == cell["iia"]
    # Other settings on the same results path: refused, nothing overwritten.
    with pytest.raises(ValueError, match="other settings"):
        arithmetic_sweep.run_sweep(small_sweep(trained_model_dir, tmp_path, layers=(1,), low_rank_dims=(4,), lr=0.5))


def test_scripts_end_to_end(trained_model_dir, tmp_path):
    training = json.loads((trained_model_dir / "training.json").read_text())
    assert 0 <= training["heldout_accuracy"] <= 1 and len(training["history"]) == 3
    assert training["n_train_triples"] + training["n_heldout_triples"] == 1000
    assert (trained_model_dir / "training_curves.png").stat().st_size > 1000
    arithmetic, simple = tmp_path / "arith", tmp_path / "simple"
    common = ["--model_path", trained_model_dir, "--layers", "2", "--low_rank_dims", "4", "--n_training", "256", "--n_testing", "200",
              "--batch_size", "128", "--epochs", "1", "--control", "none"]
    proc = run("run_das.py", *common, "--results_path", arithmetic)
    assert "(X+Y)+Z: IIA per layer x k" in proc.stdout
    run("run_das.py", *common, "--causal_model_type", "simple", "--results_path", simple)
    proc = run("evaluate_das.py", "--results_path", arithmetic, simple, "--n_testing", "300")
    evaluation = json.loads((arithmetic / "evaluation.json").read_text())
    assert evaluation["test_models"] == [m.name for f in ("arithmetic", "simple") for m in A.FAMILIES[f]]
    assert len(evaluation["cells"]) == 3 and evaluation["pairs"]["n"] == 300
    assert all(0 <= v <= 1 for cell in evaluation["cells"] for v in cell["iia"].values())
    assert (simple / "evaluation.json").is_file()
    # The saved W reproduces the sweep's own test numbers through the pyvene engine too.
    summary = json.loads((arithmetic / "summary.json").read_text())
    config = arithmetic_cells.load_sweep_config(arithmetic)
    model, tokenizer = arithmetic_decoder.load_classifier(trained_model_dir)
    _, test_ids = arithmetic_cells.sweep_pairs(config)
    network = arithmetic_network.Network.load(model, arithmetic_decoder.encode_prompts(tokenizer), [2])
    cell = summary["cells"][0]
    trained = engine.TrainedIntervention.load(arithmetic / "interventions" / arithmetic_cells.cell_name(cell["causal_model"], 2, 4))
    family = A.FAMILIES["arithmetic"]
    fast, = arithmetic_network.evaluate_cells(network, arithmetic_decoder.site(model, 2), [trained], test_ids, family, "fast")
    slow, = arithmetic_network.evaluate_cells(network, arithmetic_decoder.site(model, 2), [trained], test_ids, family, "pyvene")
    assert fast == slow == cell["iia"]


def test_thesis_preset_keeps_the_sizes_given_beside_it(trained_model_dir, tmp_path):
    """--preset thesis fills in the thesis's sizes; a size flag given beside it wins (a small thesis-shaped run)."""
    out = tmp_path / "thesis"
    run("run_das.py", "--model_path", trained_model_dir, "--preset", "thesis", "--layers", "2", "--low_rank_dims", "4", "--n_training", "256",
        "--n_testing", "200", "--batch_size", "128", "--epochs", "1", "--control", "none", "--results_path", out)
    config = arithmetic_cells.load_sweep_config(out)
    assert (config.n_training, config.batch_size, config.epochs, config.low_rank_dims) == (256, 128, 1, (4,))
    assert config.lr == arithmetic_cells.THESIS_PRESET["lr"] and config.preset == "thesis"


def test_finetune_a_pretrained_gpt2_from_a_local_directory(tmp_path, tokenizer):
    """--base_model: the thesis recipe on a tiny GPT-2 language model saved with save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel

    base = tmp_path / "tiny-gpt2"
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=None, eos_token_id=None)
    GPT2LMHeadModel(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    # A language model is not a sequence classifier: run_das refuses it with one line.
    proc = run("run_das.py", "--model_path", base, "--results_path", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "not a sequence classifier" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    out = tmp_path / "finetuned"
    proc = run("train_gpt2.py", "--base_model", base, "--output_dir", out, "--epochs", "1")
    record = json.loads((out / "training.json").read_text())
    assert record["mode"] == "finetune" and record["config"]["lr"] == 2e-5 and record["config"]["warmup_fraction"] == 0.0
    model, _ = arithmetic_decoder.load_classifier(out)
    assert model.config.num_labels == 28 and model.config.n_layer == 2


BAD_INPUTS = [
    (["--model_path", "{tmp}/nowhere"], "does not exist"),
    (["--layers", "3"], "do not exist"),
    (["--low_rank_dims", "97"], "must be in 1..96"),
    (["--causal_model_type", "geometric"], "invalid choice"),
    (["--positions", "0", "9"], "positions"),
    (["--n_training", "0"], "positive"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_run_das_bad_input(trained_model_dir, tmp_path, args, message):
    out = tmp_path / "results"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = run("run_das.py", "--model_path", trained_model_dir, "--results_path", out, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


def test_evaluate_das_bad_input(trained_model_dir, tmp_path):
    proc = run("evaluate_das.py", "--results_path", tmp_path / "empty", check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # A sweep directory whose saved W is damaged: one line naming the file.
    sweep = tmp_path / "sweep"
    arithmetic_sweep.run_sweep(small_sweep(trained_model_dir, sweep, layers=(0,), low_rank_dims=(4,), control="none", causal_model_type="arithmetic"))
    weights = next((sweep / "interventions").rglob("weights.safetensors"))
    weights.write_bytes(b"garbage")
    proc = run("evaluate_das.py", "--results_path", sweep, check=False)
    assert proc.returncode == 2 and "corrupt" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (sweep / "evaluation.json").exists()
    shutil.rmtree(sweep)
