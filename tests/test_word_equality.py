"""Hierarchical equality in words: the task, the causal-LM trainer, the script's --quick mode end to
end, and its notebook at the same small sizes (reusing the model the script trained)."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_das.models import causal_lm_training, prompts
from causal_das.tasks import word_equality

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "word_equality_das.py"
NOTEBOOK = ROOT / "notebooks" / "word_equality_das.ipynb"
TINY = causal_lm_training.LlamaShape(width=16, n_layers=2, n_heads=2, mlp=32)


# -- the task --------------------------------------------------------------------------------------


def test_the_causal_model_matches_its_truth_table():
    words = np.array(["red", "blue"])
    rows = [(w, x, y, z) for w in range(2) for x in range(2) for y in range(2) for z in range(2)]
    setting = {v: words[[r[i] for r in rows]] for i, v in enumerate(word_equality.VARIABLES)} | {"T": np.zeros(16, dtype=int)}
    out = word_equality.causal_model().run_forward(setting)
    for i, (w, x, y, z) in enumerate(rows):
        assert (out["WX"][i], out["YZ"][i], out["O"][i]) == (w == x, y == z, (w == x) == (y == z))


def test_interchanging_a_comparison_keeps_the_base_template():
    causal = word_equality.causal_model()
    base = {"W": np.array(["red"]), "X": np.array(["red"]), "Y": np.array(["blue"]), "Z": np.array(["gold"]), "T": np.array([2])}
    source = {"W": np.array(["pink"]), "X": np.array(["gray"]), "Y": np.array(["blue"]), "Z": np.array(["blue"]), "T": np.array([0])}
    out = causal.run_interchange(base, {"WX": source})
    assert (bool(out["WX"][0]), bool(out["O"][0]), int(out["T"][0])) == (False, True, 2)  # base: WX True, O False


def test_the_held_out_split_is_fixed_and_disjoint_from_training():
    key = lambda s: set(zip(*(s[v].tolist() for v in (*word_equality.VARIABLES, "T")), strict=True))  # noqa: E731
    train = word_equality.sample_inputs(np.random.default_rng(0), 3000, "train")
    heldout = word_equality.sample_inputs(np.random.default_rng(1), 3000, "heldout")
    assert key(train) and key(heldout) and not key(train) & key(heldout)
    again = word_equality.sample_inputs(np.random.default_rng(1), 3000, "heldout")
    assert all(np.array_equal(heldout[v], again[v]) for v in heldout)
    out = word_equality.causal_model().run_forward(word_equality.sample_inputs(np.random.default_rng(2), 20000))
    p = word_equality.EQUAL_PROBABILITY
    for variable, expected in (("WX", p), ("YZ", p), ("O", p * p + (1 - p) ** 2)):
        assert abs(out[variable].mean() - expected) <= 0.02, variable
    with pytest.raises(ValueError, match="split"):
        word_equality.sampler("test")


def test_templates_differ_in_length_and_positions_follow_the_words():
    tokenizer = causal_lm_training.word_tokenizer(word_equality.vocabulary())
    encoder = prompts.PromptEncoder(tokenizer, word_equality.render, {v: prompts.token_of(v) for v in word_equality.VARIABLES})
    n = len(word_equality.TEMPLATES)
    setting = {"W": np.array(["red"] * n), "X": np.array(["blue"] * n), "Y": np.array(["gold"] * n), "Z": np.array(["gray"] * n),
               "T": np.arange(n)}
    ids, mask, positions = prompts.unpack(encoder(setting), 4)
    assert len(set(mask.sum(1).tolist())) == n >= 3  # every template has its own length
    words = [tokenizer.convert_ids_to_tokens(row[pos].tolist()) for row, pos in zip(ids, positions, strict=True)]
    assert words == [["red", "blue", "gold", "gray"]] * n


# -- the causal-LM trainer ---------------------------------------------------------------------------


def test_padding_side_and_batch_do_not_change_the_next_token_logits():
    tokenizer = causal_lm_training.word_tokenizer(word_equality.vocabulary())
    model = causal_lm_training.build_llama(tokenizer, TINY).eval()
    texts = ["red red blue gray ?", "compare red with blue and gold with gold : same ?"]
    alone = torch.cat([causal_lm_training.next_token_logits(model, *causal_lm_training.encode(tokenizer, [t])) for t in texts])
    right = causal_lm_training.next_token_logits(model, *causal_lm_training.encode(tokenizer, texts))
    tokenizer.padding_side = "left"
    left = causal_lm_training.next_token_logits(model, *causal_lm_training.encode(tokenizer, texts))
    torch.testing.assert_close(right, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(left, alone, rtol=0, atol=1e-5)


def test_an_answer_must_be_one_token():
    tokenizer = causal_lm_training.word_tokenizer(["a", "b"])
    assert causal_lm_training.answer_ids(tokenizer, ["b", "a"]).tolist() == [2, 1]
    with pytest.raises(ValueError, match="single tokens"):
        causal_lm_training.answer_ids(tokenizer, ["a b"])


def test_train_or_load_trains_saves_and_reuses(tmp_path):
    shape = TINY
    config = causal_lm_training.LMTrainConfig(epochs=1, batch_size=32, seed=0)
    calls = []

    def examples():
        calls.append(1)
        return word_equality.language_examples(np.random.default_rng(0), 64, 32)

    def build():
        return causal_lm_training.tiny_llama(word_equality.vocabulary(), shape)

    model, tokenizer, record = causal_lm_training.train_or_load(tmp_path, build, examples, config, {"shape": asdict(shape)})
    assert [r["epoch"] for r in record["history"]] == [1] and 0 <= record["heldout_accuracy"] <= 1 and len(calls) == 1
    again, _, same = causal_lm_training.train_or_load(tmp_path, build, examples, config, {"shape": asdict(shape)})
    assert len(calls) == 1 and same == record  # reused, not retrained
    ids, mask = causal_lm_training.encode(tokenizer, ["red red blue gray ?"])
    torch.testing.assert_close(causal_lm_training.next_token_logits(again, ids, mask), causal_lm_training.next_token_logits(model, ids, mask),
                               rtol=0, atol=0)
    causal_lm_training.train_or_load(tmp_path, build, examples, config, {"shape": asdict(shape), "other": 1})
    assert len(calls) == 2  # other settings: retrained


# -- the script and the notebook ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("word_equality")
    env = {**os.environ, "TQDM_DISABLE": "1"}  # the script runs torch on one thread (--threads 1, its default)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--output_dir", str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "results.json").read_text())


def test_the_quick_run_writes_results_and_a_heatmap(quick_run):
    out, result = quick_run
    config = result["config"]
    assert config["quick"] and result["layers"] == list(range(config["n_layers"]))
    assert set(result["cells"]) == {f"L{layer}.{position}" for layer in result["layers"] for position in config["positions"]}
    for cell in result["cells"].values():
        for variable in ("WX", "YZ"):
            evaluation = cell[variable]
            assert 0 <= evaluation["interval"]["low"] <= evaluation["iia"] <= evaluation["interval"]["high"] <= 1
            assert {"full_patch", "random_subspace", "network_no_intervention"} <= set(evaluation["baselines"])
            assert evaluation["n"] == config["n_test"] and set(evaluation["by_subset"]) == {"{" + variable + "}"}
    assert (out / "iia_heatmap.png").stat().st_size > 5000
    assert (out / "model" / "config.json").is_file() and (out / "model" / "training.json").is_file()


def test_the_quick_language_model_answers_unseen_prompts(quick_run):
    _, result = quick_run
    assert result["language_model"]["heldout_accuracy"] >= 0.9


def test_das_finds_each_comparison_somewhere(quick_run):
    # Where is the network's own business (at --quick: WX at X's token and YZ at Z's, after layer 0);
    # that DAS finds each variable at some site, well above random subspaces there, is the method's.
    _, result = quick_run
    for variable in ("WX", "YZ"):
        cells = {name: cell[variable] for name, cell in result["cells"].items()}
        margins = {name: c["iia"] - c["baselines"]["random_subspace"]["mean"] for name, c in cells.items()}
        best = max(margins, key=margins.get)
        assert margins[best] >= 0.1 and cells[best]["verdict"]["das_beats_baselines"], (variable, margins)


def test_the_notebook_runs_top_to_bottom(quick_run, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    out, result = quick_run
    c = result["config"]
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed without outputs
    [parameters] = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    # The script's --quick sizes, so the notebook reuses the model the script trained.
    parameters.source = (
        f'MODEL = "{out / "model"}"\n'
        f'WIDTH, N_LAYERS, N_HEADS = {c["width"]}, {c["n_layers"]}, {c["n_heads"]}\n'
        f'LM_TRAIN, LM_HELDOUT, LM_EPOCHS, LM_LR, BATCH = {c["lm_train"]}, {c["lm_heldout"]}, {c["lm_epochs"]}, {c["lm_lr"]}, {c["batch_size"]}\n'
        f'K, N_TRAIN, N_TEST, DAS_EPOCHS, DAS_LR = {c["k"]}, 256, 128, 1, {c["das_lr"]}\n'
        f'SEED = {c["seed"]}'
    )
    monkeypatch.setenv("TQDM_DISABLE", "1")
    # One torch thread in the kernel too: on shared cores two threads of this tiny model spin against
    # other work (the script's --threads says how much that costs).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    images = sum("image/png" in o.get("data", {}) for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert images == 1, text
    assert f"held-out accuracy {result['language_model']['heldout_accuracy']:.3f}" in text, text  # the script's model, reused
    assert "DAS IIA" in text and text.count(" WX ") >= c["n_layers"] * len(c["positions"]), text
