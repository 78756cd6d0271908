"""The bad-input catalogue: every script's CLI driven with wrong inputs.

Each case must exit non-zero with exactly one line on stderr that names the problem (checked by a
fragment of the expected message), no traceback, and no new or changed file anywhere under the
test's directories (the fixtures' result directories included). Scripts run in-process through
`runpy` exactly as `python script.py ...` would run them, so a case costs milliseconds to seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_GPT2 = ["--width", "16", "--n_layers", "3", "--n_heads", "2", "--epochs", "1"]


def run_cli(script: str, args: list[str]) -> tuple[int, str, str]:
    """Runs `python <script> <args>` in this process; returns (exit code, stdout, stderr)."""
    argv, out, err = sys.argv, io.StringIO(), io.StringIO()
    sys.argv = [str(ROOT / script), *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def subprocess_run(script: str, *args) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    """Small real artefacts of every kind the scripts read: MLP run, GPT-2, sweep, graphs, CNN."""
    root = tmp_path_factory.mktemp("bad_input")
    paths = {"root": root, "gpt2": root / "gpt2", "sweep": root / "sweep", "mlp": root / "mlp", "cnn": root / "cnn",
             "analysis": root / "analysis", "file": root / "a_file.txt"}
    subprocess_run("train_gpt2.py", "--output_dir", paths["gpt2"], *TINY_GPT2)
    subprocess_run("run_das.py", "--model_path", paths["gpt2"], "--results_path", paths["sweep"], "--layers", "0", "--low_rank_dims", "4",
                   "--n_training", "64", "--n_testing", "32", "--epochs", "1", "--control", "none")
    subprocess_run("disentangle_causal_models.py", "graphs", "--sweep_path", paths["sweep"], "--results_path", paths["analysis"],
                   "--layers", "0", "--low_rank_dim", "4")
    subprocess_run("reproduce_das_experiment.py", "--quick", "--layers", "0", "--control", "none", "--results_path", paths["mlp"])
    subprocess_run("cnn/train_cnn.py", "--quick", "--output_dir", paths["cnn"])
    paths["file"].write_text("not a directory\n")
    return paths


# -- ways to break a copy of a fixture ------------------------------------------------------------


def copy_of(fixtures, name: str, tmp_path: Path) -> Path:
    target = tmp_path / f"{name}_copy"
    shutil.copytree(fixtures[name], target)
    return target


def truncate(path: Path, keep: int = 20) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def broken(kind: str, fixtures, tmp_path: Path) -> Path:
    """A damaged copy of a fixture directory; `kind` says which damage."""
    if kind == "sweep_bad_summary":
        d = copy_of(fixtures, "sweep", tmp_path)
        (d / "summary.json").write_text('{"cells": [')
    elif kind == "sweep_no_summary":
        d = copy_of(fixtures, "sweep", tmp_path)
        (d / "summary.json").unlink()
    elif kind == "sweep_truncated_w":
        d = copy_of(fixtures, "sweep", tmp_path)
        truncate(next((d / "interventions").rglob("weights.safetensors")))
    elif kind == "mlp_bad_results":
        d = copy_of(fixtures, "mlp", tmp_path)
        truncate(d / "results.json", 30)
    elif kind == "mlp_truncated_w":
        d = copy_of(fixtures, "mlp", tmp_path)
        truncate(d / "interventions" / "L0" / "weights.safetensors")
    elif kind == "mlp_truncated_model":
        d = copy_of(fixtures, "mlp", tmp_path)
        truncate(d / "model" / "mlp.safetensors")
    elif kind == "gpt2_truncated_weights":
        d = copy_of(fixtures, "gpt2", tmp_path)
        truncate(d / "model.safetensors")
    elif kind == "gpt2_bad_config":
        d = copy_of(fixtures, "gpt2", tmp_path)
        (d / "config.json").write_text("{not json")
    elif kind == "graphs_truncated":
        d = copy_of(fixtures, "analysis", tmp_path)
        truncate(next((d / "graphs").rglob("*.npz")), 100)
    elif kind == "cnn_truncated":
        d = copy_of(fixtures, "cnn", tmp_path)
        truncate(d / "model.safetensors")
    elif kind == "cnn_wrong_kind":
        d = copy_of(fixtures, "cnn", tmp_path)
        (d / "cnn.json").write_text(json.dumps({"kind": "something_else"}))
    elif kind == "encoder_classifier":  # not a decoder: BERT's classifier reads its first token through `classifier`, not `score`
        from transformers import BertConfig, BertForSequenceClassification

        d = copy_of(fixtures, "gpt2", tmp_path)
        for weights in d.glob("*.safetensors"):
            weights.unlink()
        config = BertConfig(vocab_size=13, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=28)
        BertForSequenceClassification(config).save_pretrained(d)
    elif kind == "bare_decoder":  # a decoder without any head: neither a sequence classifier nor a causal LM
        d = copy_of(fixtures, "gpt2", tmp_path)
        config = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2Model"]}))
    elif kind == "digit_tokenizer":  # a tokenizer that splits 10 into 1 and 0, as many pretrained ones do
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        d = copy_of(fixtures, "gpt2", tmp_path)
        vocab = {"[PAD]": 0, **{str(i): i + 1 for i in range(10)}, "+": 11, "=": 12}
        digits = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
        digits.pre_tokenizer = pre_tokenizers.Split(Regex(r"\d|[+=]"), behavior="isolated")
        PreTrainedTokenizerFast(tokenizer_object=digits, pad_token="[PAD]").save_pretrained(d)
    elif kind == "empty_dir":
        d = tmp_path / "empty"
        d.mkdir()
    else:
        raise KeyError(kind)
    return d


# -- the catalogue ---------------------------------------------------------------------------------
# (script, arguments, fragment of the expected one-line message). In arguments, "{name}" is a
# fixture path, "{broken:kind}" a damaged copy, "{out}" a fresh results path that must stay empty.

CASES = [
    # reproduce_das_experiment.py (hierarchical equality)
    ("reproduce_das_experiment.py", ["--engine", "jax"], "invalid choice"),
    ("reproduce_das_experiment.py", ["--subspace_dims", "8", "8", "8"], "needs 2 sizes"),
    ("reproduce_das_experiment.py", ["--subspace_dims", "12", "12"], "need 24 dimensions"),
    ("reproduce_das_experiment.py", ["--layers", "5"], "do not exist"),
    ("reproduce_das_experiment.py", ["--object_dim", "0"], "must be a positive integer"),
    ("reproduce_das_experiment.py", ["--das_lr", "-0.1"], "must be a positive number"),
    ("reproduce_das_experiment.py", ["--mlp_epochs", "two"], "invalid positive_int value"),
    ("reproduce_das_experiment.py", ["--results_path", "{file}"], "is a file"),
    ("reproduce_das_experiment.py", ["--results_path", "/proc/nope"], "cannot be created"),
    ("reproduce_das_experiment.py", ["--das_lr", "inf"], "must be a finite number"),
    ("reproduce_das_experiment.py", ["--mlp_lr", "nan"], "must be a finite number"),
    ("reproduce_das_experiment.py", ["--quick", "--layers", "0", "--control", "none", "--mlp_lr", "1e30", "--results_path", "{out}"],
     "training of the MLP classifier diverged at epoch 1"),
    # lr 1e38: the fused Adam's first step overflows to inf/nan weights, so the second loss is nan (--device cpu: one known path).
    ("reproduce_das_experiment.py", ["--quick", "--layers", "0", "--control", "none", "--mlp_lr", "1e38", "--results_path", "{out}", "--device", "cpu"],
     "diverged at epoch 1 step 2 (loss nan); lower the MLP learning rate (--mlp_lr)"),
    ("reproduce_das_experiment.py", ["--evaluate_saved", "--results_path", "{broken:empty_dir}"], "does not exist"),
    ("reproduce_das_experiment.py", ["--evaluate_saved", "--results_path", "{broken:mlp_bad_results}"], "is not valid JSON"),
    ("reproduce_das_experiment.py", ["--evaluate_saved", "--results_path", "{broken:mlp_truncated_w}"], "corrupt"),
    ("reproduce_das_experiment.py", ["--evaluate_saved", "--results_path", "{broken:mlp_truncated_model}"], "missing or corrupt"),
    # mlp/
    ("mlp/pattern_matching_das.py", ["--layers", "-1"], "do not exist"),
    ("mlp/pattern_matching_das.py", ["--control", "shuffled"], "invalid choice"),
    ("mlp/wrong_causal_graph_ablation_study.py", ["--layer", "3"], "do not exist"),
    ("mlp/wrong_causal_graph_ablation_study.py", ["--das_epochs", "0"], "must be a positive integer"),
    ("mlp/pattern_matching_das.py", ["--das_lr=-inf"], "must be a finite number"),
    ("mlp/pattern_matching_das.py", ["--results_path", "{file}"], "is a file"),
    ("mlp/pattern_matching_das.py", ["--results_path", "/proc/nope"], "cannot be created"),
    ("mlp/wrong_causal_graph_ablation_study.py", ["--mlp_lr", "inf"], "must be a finite number"),
    ("mlp/wrong_causal_graph_ablation_study.py", ["--results_path", "{file}"], "is a file"),
    ("mlp/wrong_causal_graph_ablation_study.py", ["--results_path", "/proc/nope"], "cannot be created"),
    # train_gpt2.py
    ("train_gpt2.py", ["--warmup_fraction", "1.5", "--output_dir", "{out}"], "--warmup_fraction must be in [0, 1)"),
    ("train_gpt2.py", ["--heldout_fraction", "0", "--output_dir", "{out}"], "--heldout_fraction must be in (0, 1)"),
    ("train_gpt2.py", ["--width", "0", "--output_dir", "{out}"], "must be a positive integer"),
    ("train_gpt2.py", ["--base_model", "{broken:empty_dir}", "--output_dir", "{out}"], "base_model"),
    ("train_gpt2.py", ["--output_dir", "{file}"], "is a file"),
    # Needs the other change's fix in arithmetic_training.train_and_save (it failed with FileNotFoundError before it).
    ("train_gpt2.py", ["--output_dir", "/proc/nope"], "cannot be created"),
    ("train_gpt2.py", ["--base_model", "{gpt2}/config.json", "--output_dir", "{out}"], "is a file, not a model directory"),
    ("train_gpt2.py", ["--base_model", "{file}", "--output_dir", "{out}"], "is a file, not a model directory"),
    ("train_gpt2.py", ["--base_model", "{broken:encoder_classifier}", "--output_dir", "{out}"], "no sequence_classification head found"),
    ("train_gpt2.py", ["--base_model", "{broken:digit_tokenizer}", "--output_dir", "{out}"], "not one token: '10'"),
    ("train_gpt2.py", ["--lr", "inf", "--output_dir", "{out}"], "must be a finite number"),
    ("train_gpt2.py", ["--weight_decay", "nan", "--output_dir", "{out}"], "must be a finite number"),
    ("train_gpt2.py", ["--weight_decay", "-0.5", "--output_dir", "{out}"], "must be a number >= 0"),
    ("train_gpt2.py", ["--warmup_fraction", "nan", "--output_dir", "{out}"], "must be a finite number"),
    ("train_gpt2.py", ["--heldout_fraction=-inf", "--output_dir", "{out}"], "must be a finite number"),
    ("train_gpt2.py", [*TINY_GPT2, "--lr", "1e30", "--output_dir", "{out}"], "training of the GPT-2 classifier diverged at epoch 1"),
    ("train_gpt2.py", [*TINY_GPT2, "--lr", "1e38", "--output_dir", "{out}", "--device", "cpu"], "(loss nan); lower the learning rate (--lr)"),
    # run_das.py
    ("run_das.py", ["--model_path", "{root}/no_such_model", "--results_path", "{out}"], "does not exist"),
    ("run_das.py", ["--model_path", "{cnn}", "--results_path", "{out}"], "no readable model config"),
    ("run_das.py", ["--model_path", "{broken:gpt2_bad_config}", "--results_path", "{out}"], "no readable model config"),
    ("run_das.py", ["--model_path", "{broken:gpt2_truncated_weights}", "--results_path", "{out}"], "could not be loaded"),
    ("run_das.py", ["--model_path", "{broken:encoder_classifier}", "--results_path", "{out}"], "no sequence_classification head found"),
    ("run_das.py", ["--model_path", "{broken:bare_decoder}", "--results_path", "{out}"], "neither a sequence classifier nor a causal LM"),
    ("run_das.py", ["--model_path", "{broken:digit_tokenizer}", "--results_path", "{out}"], "not one token: '10'"),
    ("run_das.py", ["--model_path", "{gpt2}", "--layers", "7", "--results_path", "{out}"], "layer"),
    ("run_das.py", ["--model_path", "{gpt2}", "--low_rank_dims", "5000", "--results_path", "{out}"], "5000"),
    ("run_das.py", ["--model_path", "{gpt2}", "--positions", "9", "--results_path", "{out}"], "position"),
    ("run_das.py", ["--causal_model_type", "geometric"], "invalid choice"),
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "{file}"], "is a file"),
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "/proc/nope"], "cannot be created"),
    ("run_das.py", ["--model_path", "{gpt2}/config.json", "--results_path", "{out}"], "is a file, not a model directory"),
    ("run_das.py", ["--model_path", "{file}", "--results_path", "{out}"], "is a file, not a model directory"),
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "{out}", "--lr", "inf"], "must be a finite number"),
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "{out}", "--lr", "nan"], "must be a finite number"),
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "{out}", "--lr", "one"], "must be a number"),
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "{out}", "--executor", "spark"], "invalid choice"),
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "{out}", "--executor", "ray", "--ray_cpus", "0"], "must be a positive integer"),
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "{out}", "--executor", "processes", "--workers", "0"], "must be a positive integer"),
    # run_das.py --position_sets
    ("run_das.py", ["--model_path", "{gpt2}", "--position_sets", "2-9", "--results_path", "{out}"], "not a set of token positions"),
    ("run_das.py", ["--model_path", "{gpt2}", "--position_sets", "3", "--low_rank_dims", "4", "8", "--results_path", "{out}"], "one --low_rank_dims"),
    ("run_das.py", ["--model_path", "{gpt2}", "--position_sets", "3", "--low_rank_dims", "16", "--results_path", "{out}"], "below one token's width"),
    ("run_das.py", ["--model_path", "{gpt2}", "--position_sets", "3", "--causal_models", "X*Y", "--results_path", "{out}"], "unknown causal model"),
    ("run_das.py", ["--model_path", "{gpt2}", "--position_sets", "3", "--positions", "4", "--results_path", "{out}"], "drop --positions"),
    ("run_das.py", ["--model_path", "{gpt2}", "--causal_models", "(X)+Y+Z", "--results_path", "{out}"], "add --position_sets"),
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "{out}", "--max_cells_per_pass", "0"], "must be a positive integer"),
    # evaluate_das.py
    ("evaluate_das.py", ["--results_path", "{root}/no_such_sweep"], "no_such_sweep"),
    ("evaluate_das.py", ["--results_path", "{broken:sweep_no_summary}"], "summary.json"),
    ("evaluate_das.py", ["--results_path", "{broken:sweep_bad_summary}"], "is not valid JSON"),
    ("evaluate_das.py", ["--results_path", "{broken:sweep_truncated_w}"], "corrupt"),
    ("evaluate_das.py", ["--results_path", "{sweep}", "--trained_on", "X*Y*Z"], "invalid choice"),
    ("evaluate_das.py", ["--results_path", "{sweep}", "--model_path", "{cnn}"], "no readable model config"),
    ("evaluate_das.py", ["--results_path", "{sweep}", "--model_path", "{gpt2}/config.json"], "is a file, not a model directory"),
    # visualizations.py
    ("visualizations.py", ["--experiment", "everything"], "invalid choice"),
    ("visualizations.py", ["--experiment", "sanity_check", "--results_path", "{broken:empty_dir}"], "run_das.py"),
    ("visualizations.py", ["--experiment", "training", "--results_path", "{broken:empty_dir}"], "train_gpt2.py"),
    ("visualizations.py", ["--experiment", "positions", "--results_path", "{broken:empty_dir}"], "--position_sets"),
    ("visualizations.py", ["--experiment", "all", "--formats", "gif"], "invalid choice"),
    ("visualizations.py", ["--experiment", "all", "--results_path", "{file}"], "is not a directory"),
    ("visualizations.py", ["--experiment", "all", "--results_path", "/proc/nope"], "is not a directory"),
    # disentangle_causal_models.py
    ("disentangle_causal_models.py", [], "required"),
    ("disentangle_causal_models.py", ["graphs", "--sweep_path", "{broken:empty_dir}", "--results_path", "{out}"], "no run_das.py results"),
    ("disentangle_causal_models.py", ["graphs", "--sweep_path", "{sweep}", "--layers", "5", "--results_path", "{out}"], "layer"),
    ("disentangle_causal_models.py", ["graphs", "--sweep_path", "{file}", "--results_path", "{out}"], "no run_das.py results"),
    ("disentangle_causal_models.py", ["graphs", "--sweep_path", "{sweep}/summary.json", "--results_path", "{out}"], "no run_das.py results"),
    ("disentangle_causal_models.py", ["graphs", "--sweep_path", "{sweep}", "--model_path", "{gpt2}/config.json", "--results_path", "{out}"],
     "is a file, not a model directory"),
    ("disentangle_causal_models.py", ["cliques", "--exact_nodes", "1.5", "--results_path", "{analysis}"], "invalid non_negative_int value"),
    ("disentangle_causal_models.py", ["cliques", "--exact_nodes", "-1", "--results_path", "{analysis}"], "must be a non-negative integer"),
    ("disentangle_causal_models.py", ["cliques", "--results_path", "{file}"], "no IIA graphs"),
    ("disentangle_causal_models.py", ["cliques", "--results_path", "/proc/nope"], "no IIA graphs"),
    ("disentangle_causal_models.py", ["divide", "--faithfulness", "nan", "--results_path", "{analysis}"], "[0, 1]"),
    ("disentangle_causal_models.py", ["divide", "--faithfulness", "0.8", "--results_path", "/proc/nope"], "no IIA graphs"),
    ("disentangle_causal_models.py", ["classify", "--test_fraction", "inf", "--results_path", "{analysis}"], "(0, 1)"),
    ("disentangle_causal_models.py", ["classify", "--results_path", "/proc/nope"], "division.json"),
    ("disentangle_causal_models.py", ["cliques", "--results_path", "{broken:empty_dir}"], "graphs"),
    ("disentangle_causal_models.py", ["cliques", "--results_path", "{broken:graphs_truncated}"], "npz"),
    ("disentangle_causal_models.py", ["divide", "--results_path", "{analysis}"], "--faithfulness"),
    ("disentangle_causal_models.py", ["divide", "--faithfulness", "1.5", "--results_path", "{analysis}"], "[0, 1]"),
    ("disentangle_causal_models.py", ["divide", "--faithfulness", "0.8", "--order", "X+Y", "--results_path", "{analysis}"], "X+Y"),
    ("disentangle_causal_models.py", ["divide", "--faithfulness", "0.8", "--rule", "median", "--results_path", "{analysis}"], "median"),
    ("disentangle_causal_models.py", ["divide", "--faithfulness", "0.8", "--resamples", "-1", "--results_path", "{analysis}"], "non-negative"),
    ("disentangle_causal_models.py", ["classify", "--results_path", "{analysis}"], "division"),
    ("disentangle_causal_models.py", ["classify", "--splits", "-2", "--results_path", "{analysis}"], "non-negative"),
    ("disentangle_causal_models.py", ["cliques", "--resamples", "-1", "--results_path", "{analysis}"], "non-negative"),
    ("disentangle_causal_models.py", ["seeds", "--results_paths", "{analysis}", "/proc/nope", "--output", "seeds.json"], "no division.json"),
    ("disentangle_causal_models.py", ["seeds", "--results_paths", "{out}"], "--output"),
    ("disentangle_causal_models.py", ["predict", "11,1,1", "--results_path", "{analysis}"], "11,1,1"),
    ("disentangle_causal_models.py", ["predict", "three", "--results_path", "{analysis}"], "three"),
    # cnn/
    ("cnn/train_cnn.py", ["--lr", "0", "--output_dir", "{out}"], "must be a positive number"),
    ("cnn/train_cnn.py", ["--output_dir", "{file}", "--quick"], "--output_dir"),
    ("cnn/train_cnn.py", ["--output_dir", "/proc/nope", "--quick"], "cannot be created"),
    ("cnn/train_cnn.py", ["--lr", "inf", "--output_dir", "{out}"], "must be a finite number"),
    ("cnn/train_cnn.py", ["--quick", "--lr", "1e30", "--output_dir", "{out}"], "training of the CNN diverged at epoch 1"),
    ("cnn/train_cnn.py", ["--quick", "--lr", "1e38", "--output_dir", "{out}", "--device", "cpu"], "(loss nan); lower the learning rate (--lr)"),
    ("cnn/ellipse_das.py", ["--model_path", "{cnn}", "--results_path", "{out}", "--lr", "nan"], "must be a finite number"),
    ("cnn/ellipse_das.py", ["--model_path", "{cnn}", "--results_path", "{file}"], "is a file"),
    ("cnn/ellipse_das.py", ["--model_path", "{cnn}", "--results_path", "/proc/nope"], "cannot be created"),
    ("cnn/ellipse_das.py", ["--model_path", "{cnn}/model.safetensors", "--results_path", "{out}"], "is a file, not a model directory"),
    ("cnn/ellipse_das.py", ["--model_path", "{cnn}", "--results_path", "{out}", "--variables", "size"], "unknown variable"),
    ("cnn/ellipse_das.py", ["--model_path", "{cnn}", "--results_path", "{out}", "--intervention_size", "449"], "do not fit the conv1 site"),
    ("cnn/ellipse_das.py", ["--model_path", "{cnn}", "--results_path", "{out}", "--mode", "multi", "--variables", "area"], "at least two variables"),
    ("cnn/ellipse_das.py", ["--model_path", "{gpt2}", "--results_path", "{out}"], "holds no ellipse CNN"),
    ("cnn/ellipse_das.py", ["--model_path", "{broken:cnn_wrong_kind}", "--results_path", "{out}"], "of another kind"),
    ("cnn/ellipse_das.py", ["--model_path", "{broken:cnn_truncated}", "--results_path", "{out}"], "missing or corrupt"),
    # compare_results.py
    ("compare_results.py", ["--run", "{root}/no_such_run"], "is not a directory"),
    ("compare_results.py", ["--run", "{gpt2}", "--reference", "{gpt2}"], "the same directory"),
    ("compare_results.py", ["--run", "{broken:empty_dir}", "--reference", "{root}"], "no result in common"),
    ("compare_results.py", ["--run", "{root}", "--reference", "{root}/mlp", "--output", "/proc/nope/c.json"], "cannot be created"),
    # graphs and evaluate_das.py: output places that cannot be used, refused before anything is computed
    ("disentangle_causal_models.py", ["graphs", "--sweep_path", "{sweep}", "--results_path", "/proc/nope"], "cannot be created"),
    ("disentangle_causal_models.py", ["graphs", "--sweep_path", "{sweep}", "--results_path", "{file}"], "is a file"),
    ("evaluate_das.py", ["--results_path", "{sweep}", "--output_name", "/proc/nope/x.json"], "cannot be created"),
    ("evaluate_das.py", ["--results_path", "{file}"], "is a file"),
    # run_pipeline.py
    ("run_pipeline.py", ["--only", "everything"], "invalid choice"),
    ("run_pipeline.py", ["--results_path", "{file}"], "is a file"),
    ("run_pipeline.py", ["--results_path", "/proc/nope"], "cannot be created"),
    ("run_pipeline.py", ["--device", "tpu"], "invalid choice"),
    ("run_pipeline.py", ["--jobs", "0"], "--jobs: must be a positive integer"),
    # --device / --precision (every script that runs a network)
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "{out}", "--device", "gpu"], "invalid choice"),
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "{out}", "--device", "cpu", "--precision", "tf32"], "tf32 is a CUDA mode"),
    ("mlp/wrong_causal_graph_ablation_study.py", ["--results_path", "{out}", "--device", "cpu", "--precision", "tf32"], "tf32 is a CUDA mode"),
    ("cnn/train_cnn.py", ["--output_dir", "{out}", "--precision", "fp16"], "invalid choice"),
]

# `--device cuda` on a machine whose torch sees no GPU (skipped where one is visible).
NO_GPU = "sees no CUDA GPU"
CUDA_CASES = [
    ("reproduce_das_experiment.py", ["--quick", "--results_path", "{out}", "--device", "cuda"], NO_GPU),
    ("mlp/pattern_matching_das.py", ["--quick", "--results_path", "{out}", "--device", "cuda"], NO_GPU),
    ("mlp/wrong_causal_graph_ablation_study.py", ["--quick", "--results_path", "{out}", "--device", "cuda"], NO_GPU),
    ("train_gpt2.py", ["--output_dir", "{out}", "--device", "cuda"], NO_GPU),
    ("run_das.py", ["--model_path", "{gpt2}", "--results_path", "{out}", "--device", "cuda"], NO_GPU),
    ("evaluate_das.py", ["--results_path", "{sweep}", "--device", "cuda"], NO_GPU),
    ("disentangle_causal_models.py", ["graphs", "--sweep_path", "{sweep}", "--results_path", "{out}", "--device", "cuda"], NO_GPU),
    ("cnn/train_cnn.py", ["--output_dir", "{out}", "--device", "cuda"], NO_GPU),
    ("cnn/ellipse_das.py", ["--model_path", "{cnn}", "--results_path", "{out}", "--device", "cuda"], NO_GPU),
]


def _expand(args, fixtures, tmp_path):
    out = []
    for arg in args:
        if arg.startswith("{broken:"):
            out.append(str(broken(arg[len("{broken:"):-1], fixtures, tmp_path)))
        elif arg == "{out}":
            out.append(str(tmp_path / "out"))
        else:
            out.append(arg.format(**{k: str(v) for k, v in fixtures.items()}))
    return out


def _snapshot(*roots: Path) -> dict:
    files = {}
    for root in roots:
        if root.exists():
            for p in root.rglob("*"):
                if p.is_file():
                    files[p] = (p.stat().st_size, p.stat().st_mtime_ns)
    return files


def _cases():
    import torch

    skip = pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a GPU here")
    return [*CASES, *(pytest.param(*case, marks=skip) for case in CUDA_CASES)]


@pytest.mark.parametrize("script,args,fragment", _cases(), ids=[f"{i:02d}-{c[0]}" for i, c in enumerate([*CASES, *CUDA_CASES])])
def test_bad_input_is_one_line_and_writes_nothing(fixtures, tmp_path, monkeypatch, script, args, fragment):
    monkeypatch.chdir(tmp_path)  # default result paths land here, never in the repository
    argv = _expand(args, fixtures, tmp_path)
    before = _snapshot(fixtures["root"], tmp_path)
    code, _, err = run_cli(script, argv)
    assert code != 0, f"exit code 0 for {script} {argv}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert _snapshot(fixtures["root"], tmp_path) == before, "a result file was written or changed"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
    assert not (tmp_path / "results").exists()


def test_the_catalogue_covers_every_script():
    scripts = {c[0] for c in CASES}
    expected = {p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("*.py"), *ROOT.glob("mlp/*.py"), *ROOT.glob("cnn/*.py")]}
    assert scripts == expected
    network_scripts = expected - {"visualizations.py", "run_pipeline.py", "compare_results.py"}
    assert {c[0] for c in CUDA_CASES} == network_scripts
    assert len(CASES) + len(CUDA_CASES) >= 40
