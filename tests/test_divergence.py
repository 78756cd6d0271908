"""A training that diverges stops with one line naming the step and what to change, and leaves no
result behind; non-finite float flags never reach a training loop."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from test_bad_input import TINY_GPT2, run_cli

from causal_das.causal_model import sample_counterfactuals
from causal_das.das import engine
from causal_das.models.mlp import MLPClassifier, MLPSite, MLPTrainConfig, train_classifier
from causal_das.runtime import cli
from causal_das.studies.four_objects_mlp import to_interchange
from causal_das.tasks.four_objects import get_task

WIDTH = 16


@pytest.fixture(scope="module")
def data():
    task = get_task("hierarchical_equality")
    cf = sample_counterfactuals(task.causal_model(), task.sampler(4), 300, np.random.default_rng(0))
    return to_interchange(cf)


def site():
    torch.manual_seed(0)
    return MLPSite(MLPClassifier(WIDTH, n_layers=3).eval(), 1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_optimise_stops_on_a_non_finite_loss(data, bad):
    weight = torch.nn.Parameter(torch.zeros(2))
    steps = []

    def logits_for(idx):
        steps.append(len(idx))
        logits = weight.expand(len(idx), 2) + 0.0
        # Finite for the first two steps, then the loss turns non-finite at the third.
        return logits if len(steps) < 3 else logits * bad

    config = engine.DASConfig((8,), epochs=2, batch_size=64, lr=1e-3)
    with pytest.raises(ValueError) as caught:
        engine.optimise([weight], logits_for, data, config, "X+Y L0 k4")
    message = str(caught.value)
    assert message.startswith("DAS training of X+Y L0 k4 diverged at epoch 1 step 3 (loss ")
    assert message.endswith("; lower the DAS learning rate (--lr / --das_lr)")
    # The loss is read from the device once per epoch, so the rest of epoch 1 (5 steps) runs, and
    # the message still names the step where it diverged; epoch 2 never starts.
    assert "\n" not in message and len(steps) == 5


@pytest.mark.parametrize("name", ["fast", "pyvene"])
def test_both_engines_report_an_overflowing_step(data, name):
    """lr 1e38: Adam's first step, lr / (1 - beta1), overflows float32 inside torch (a RuntimeError)."""
    config = engine.DASConfig((4, 4), epochs=1, batch_size=64, lr=1e38)
    with pytest.raises(ValueError, match=r"^DAS training of layer 1 diverged at epoch 1 step 1 \(the optimiser step overflows float32\)"):
        engine.train(site(), data, config, name, desc="DAS layer 1")


def test_other_runtime_errors_are_not_swallowed():
    class Broken(torch.optim.SGD):
        def step(self, closure=None):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    guard = engine.DivergenceGuard("training", "lower --lr")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        guard.step(Broken([torch.nn.Parameter(torch.zeros(1))], lr=0.1), 1, 1)
    guard.check(0.5, 1, 1)  # a finite loss passes


def test_mlp_classifier_training_stops(data):
    torch.manual_seed(0)
    model = MLPClassifier(WIDTH, n_layers=3)
    inputs, labels = data.inputs[data.base].numpy(), data.labels.numpy()
    with pytest.raises(ValueError, match=r"^training of the MLP classifier diverged at epoch 1 step \d+ \(loss nan\); lower the MLP"):
        train_classifier(model, inputs, labels, MLPTrainConfig(epochs=2, batch_size=16, lr=1e30))


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "NaN", "1e400"])
def test_float_types_refuse_non_finite_values(text):
    for parse in (cli.finite_float, cli.positive_float, cli.non_negative_float):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number"):
            parse(text)


def test_float_types_accept_and_bound():
    assert cli.finite_float("-2.5") == -2.5 and cli.positive_float("1e-5") == 1e-5 and cli.non_negative_float("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match="must be a positive number"):
        cli.positive_float("0")
    with pytest.raises(argparse.ArgumentTypeError, match=">= 0"):
        cli.non_negative_float("-1")
    with pytest.raises(argparse.ArgumentTypeError, match="must be a number"):
        cli.finite_float("fast")


def test_a_diverged_das_sweep_writes_no_cell(tmp_path, monkeypatch):
    """run_das.py writes a cell (its JSON and its saved W) only after training returns. Only the
    sweep's hidden per-cell lock files remain, which `sweep.claim` keeps on purpose."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    model, out = tmp_path / "gpt2", tmp_path / "sweep"
    code, _, err = run_cli("train_gpt2.py", ["--output_dir", model, *TINY_GPT2])
    assert code == 0, err
    code, _, err = run_cli("run_das.py", ["--model_path", model, "--results_path", out, "--layers", "0", "--low_rank_dims", "4",
                                          "--n_training", "64", "--n_testing", "32", "--epochs", "1", "--control", "none", "--lr", "1e38",
                                          "--device", "cpu"])
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and "diverged at epoch 1 step 1" in err and "Traceback" not in err
    left = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    assert all(p.rsplit("/", 1)[-1].startswith(".") and p.endswith(".lock") for p in left), left
