"""Device discipline without a GPU: every script and the engine's parts run with `--device cuda` on a
simulated second device (tests/simulated_device.py) that raises wherever CUDA would, and give the
CPU's numbers there (the simulated device computes with the CPU's kernels)."""

from __future__ import annotations

import copy
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from simulated_device import DEVICE, DeviceMixError, simulated_device

from causal_das.causal_model import sample_counterfactuals
from causal_das.das import baselines, engine
from causal_das.models.mlp import MLPClassifier, MLPSite
from causal_das.runtime import devices
from causal_das.studies import arithmetic_decoder, arithmetic_network
from causal_das.studies.four_objects_mlp import to_interchange
from causal_das.tasks.four_objects import get_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def simulated_cuda(monkeypatch):
    """`--device cuda` resolves to the simulated device; yields its host-sync counter."""
    resolve = devices.resolve
    monkeypatch.setattr(devices, "resolve", lambda name: DEVICE if name == "cuda" else resolve(name))
    try:
        with simulated_device() as counter:
            yield counter
    finally:
        devices.setup("cpu", "fp32")


def run_script(script: str, *args) -> None:
    """Runs a script in this process (so the simulated device reaches it); fails on a non-zero exit."""
    argv = sys.argv
    sys.argv = [script, *map(str, args)]
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as stop:
        assert stop.code in (0, None), f"{script} exited with {stop.code}"
    finally:
        sys.argv = argv


def test_the_simulated_device_is_as_strict_as_cuda():
    with simulated_device() as counter:
        x = torch.randn(4, 3).to(DEVICE)
        assert x.device == DEVICE and (x * torch.tensor(2.0)).device == DEVICE  # CPU scalars are allowed
        assert x[torch.tensor([0, 2])].device == DEVICE  # CPU indices into a device tensor are allowed
        for mixed in (lambda: x @ torch.randn(3, 2), lambda: torch.arange(4)[torch.arange(2, device=DEVICE)],
                      lambda: torch.searchsorted(x[:, 0].sort().values, torch.tensor(0.5)),
                      lambda: torch.randperm(4, generator=torch.Generator(), device=DEVICE)):
            with pytest.raises(DeviceMixError):
                mixed()
        with pytest.raises(TypeError, match="Use Tensor.cpu"):
            x.numpy()
        before = counter["host_syncs"]
        x.sum().item()
        x.cpu()
        assert counter["host_syncs"] == before + 2
        linear = torch.nn.Linear(3, 2).to(DEVICE)
        linear(x).sum().backward()
        assert linear.weight.grad.device == DEVICE


def _mlp_and_data():
    torch.manual_seed(0)
    task = get_task("hierarchical_equality")
    cf = sample_counterfactuals(task.causal_model(), task.sampler(4), 512, np.random.default_rng(0))
    return MLPClassifier(16, n_layers=3).eval(), to_interchange(cf)


def test_engine_cells_and_baselines_on_the_device_equal_the_cpu(simulated_cuda):
    model, data = _mlp_and_data()
    configs = [engine.DASConfig((8, 8), epochs=2, batch_size=64, lr=5e-2, seed=s) for s in (0, 1)]
    models = {"cpu": model, "device": copy.deepcopy(model).to(DEVICE)}
    outputs = {}
    for where in ("cpu", "device"):
        site = MLPSite(models[where], 1)
        before = simulated_cuda["host_syncs"]
        trained = engine.train_cells(site, [engine.Cell(data, config, f"cell {i}") for i, config in enumerate(configs)])
        if where == "device":
            # One read per cell and epoch (its history) and one per W handed back: none per step.
            assert simulated_cuda["host_syncs"] - before <= len(configs) * (configs[0].epochs + 2)
        activations = engine.cache_activations(site, data.inputs)
        span = baselines.activation_span(activations)
        fixed = [baselines.full_patch(site), *baselines.random_subspaces(site, (8, 8), 2, seed=0),
                 baselines.principal_subspace(site, activations, 16), baselines.project_onto_span(site, trained[0], span)]
        masks = baselines.train_neuron_masks(site, [data], configs[:1], (8, 8), activations, site.suffix)
        check = baselines.illusion_check(trained[0], activations, span)
        predictions = engine.predict_cells(site, [*trained, *fixed, *masks], data)
        pyvene = engine.train(site, data, configs[0], "pyvene")
        outputs[where] = ([t.weight for t in trained], predictions, check, engine.predict(site, pyvene, data, "pyvene"))
    cpu, device = outputs["cpu"], outputs["device"]
    assert all(w.device.type == "cpu" for w in device[0])
    assert all(torch.equal(a, b) for a, b in zip(cpu[0], device[0], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(cpu[1], device[1], strict=True))
    assert cpu[2] == device[2] and torch.equal(cpu[3], device[3])


def test_every_site_type_and_an_iia_graph_pass_on_the_device(simulated_cuda, tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from causal_das.analysis import graphs
    from causal_das.models import cnn
    from causal_das.tasks import arithmetic

    tokenizer = arithmetic_decoder.build_tokenizer()
    ids = arithmetic_decoder.encode_prompts(tokenizer)
    rng = np.random.default_rng(0)
    pairs = engine.InterchangeData(ids, torch.as_tensor(rng.integers(0, 1000, 128)), torch.as_tensor(rng.integers(0, 1000, (128, 1))),
                                   torch.as_tensor(rng.integers(0, 28, 128)))
    config = engine.DASConfig((4,), epochs=1, batch_size=32, lr=1e-2)
    llama = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, num_labels=28, pad_token_id=0, max_position_embeddings=16)).eval()
    tiny_gpt2 = arithmetic_decoder.build_default_model(tokenizer, width=16, n_layers=2, n_heads=2, seed=0).eval()
    sites = [arithmetic_decoder.site(tiny_gpt2.to(DEVICE), 1), arithmetic_decoder.site(tiny_gpt2, 0, (3, 5)), arithmetic_decoder.site(llama.to(DEVICE), 0, (5,))]
    for site in sites:
        trained = engine.train(site, pairs, config)
        assert engine.predict(site, trained, pairs).shape == (128,)
    torch.manual_seed(0)
    net = cnn.EllipseCNN().eval().to(DEVICE)
    images = torch.randn(64, 1, 28, 28)
    image_pairs = engine.InterchangeData(images, torch.arange(64), torch.arange(64).roll(1)[:, None], torch.zeros(64, dtype=torch.long))
    for view in ("rows", "flat"):
        site = cnn.CNNSite(net, "conv1", view)
        trained = engine.train(site, image_pairs, engine.DASConfig((4,), epochs=1, batch_size=32, lr=1e-2))
        assert engine.predict(site, trained, image_pairs).shape == (64,)
    # An IIA-graph pass over the first 50 triples: every one as base against every one as source.
    network = arithmetic_network.Network.load(tiny_gpt2, ids[:50], [1])
    site = arithmetic_decoder.site(tiny_gpt2, 1)
    trained = engine.train(site, pairs, config)
    correct, = graphs.correct_matrices(network, site, [trained], [arithmetic.FAMILIES["arithmetic"][0]], arithmetic.counterfactual_labels)
    assert correct.shape == (50, 50)


def _numbers(path: Path) -> dict:
    """A result file without what names the run rather than its numbers."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in {"seconds", "train_seconds", "command", "results_path", "device", "compute"}}
        return [strip(v) for v in value] if isinstance(value, list) else value
    return strip(json.loads(path.read_text()))


def test_every_script_runs_with_device_cuda(simulated_cuda, tmp_path):
    """The scripts the main job runs, at tiny sizes, with --device cuda on the simulated device: MLP
    (fast and pyvene engines), CNN (rows and flat), GPT-2 training with IIT (the known-answer
    network), the DAS sweep, the position sweep (every baseline, the illusion check) and the
    evaluation. The MLP run's numbers equal the CPU's."""
    out = tmp_path
    run_script("reproduce_das_experiment.py", "--quick", "--layers", "0", "--results_path", out / "he", "--device", "cuda")
    run_script("reproduce_das_experiment.py", "--quick", "--layers", "0", "--results_path", out / "he_cpu", "--device", "cpu")
    assert _numbers(out / "he" / "results.json") == _numbers(out / "he_cpu" / "results.json")
    assert json.loads((out / "he" / "results.json").read_text())["compute"]["device"] == str(DEVICE)
    run_script("mlp/pattern_matching_das.py", "--quick", "--layers", "1", "--engine", "pyvene", "--control", "none",
               "--results_path", out / "pm", "--device", "cuda")
    run_script("mlp/wrong_causal_graph_ablation_study.py", "--quick", "--results_path", out / "ab", "--device", "cuda")
    run_script("cnn/train_cnn.py", "--quick", "--output_dir", out / "cnn", "--device", "cuda")
    for view in ("rows", "flat"):
        run_script("cnn/ellipse_das.py", "--quick", "--model_path", out / "cnn", "--site_view", view, "--results_path", out / f"cnn_{view}",
                   "--device", "cuda")
    gpt2 = out / "gpt2"
    run_script("train_gpt2.py", "--output_dir", gpt2, "--epochs", "1", "--width", "16", "--n_layers", "3", "--n_heads", "2",
               "--induce", "(X+Y)+Z", "X+(Y+Z)", "--induce_site", "L0:3", "L1:4", "--induce_where", "X<=5", "X>5", "--device", "cuda")
    assert len(json.loads((gpt2 / "training.json").read_text())["inductions"]) == 2
    sizes = ["--layers", "1", "--n_training", "256", "--n_testing", "200", "--batch_size", "128", "--epochs", "1", "--device", "cuda"]
    run_script("run_das.py", "--model_path", gpt2, "--low_rank_dims", "4", *sizes, "--results_path", out / "sweep")
    run_script("run_das.py", "--model_path", gpt2, "--position_sets", "all", "3", *sizes, "--results_path", out / "positions")
    run_script("evaluate_das.py", "--results_path", out / "sweep", "--n_testing", "300", "--device", "cuda")
    assert (out / "sweep" / "evaluation.json").is_file() and (out / "positions" / "summary.json").is_file()


def test_w_and_the_interchange_stay_ieee_fp32_under_tf32(simulated_cuda, monkeypatch):
    """With TF32 on (--precision auto/tf32 on CUDA) the network's products may use it, but W's
    orthonormalisation, the interchange and their backward pass run with it off."""
    model, data = _mlp_and_data()
    model = model.to(DEVICE)
    seen = {"interchange": set(), "suffix": set(), "w_grad": set()}
    interchange = engine.interchange
    monkeypatch.setattr(engine, "interchange", lambda *args: seen["interchange"].add(torch.backends.cuda.matmul.allow_tf32)
                        or interchange(*args))
    model.mlp.h[2].register_forward_hook(lambda *_: seen["suffix"].add(torch.backends.cuda.matmul.allow_tf32))
    weights_of = engine.weights_of
    monkeypatch.setattr(engine, "weights_of", lambda interventions: _spy_on_w_grad(interventions, seen["w_grad"]) or weights_of(interventions))
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        trained = engine.train(MLPSite(model, 1), data, engine.DASConfig((8, 8), epochs=1, batch_size=64, lr=5e-2))
        engine.predict(MLPSite(model, 1), trained, data)
        assert torch.backends.cuda.matmul.allow_tf32  # restored
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    assert seen == {"interchange": {False}, "suffix": {True}, "w_grad": {False}}


def _spy_on_w_grad(interventions, seen: set) -> None:
    for intervention in interventions:
        if intervention.rotation.unconstrained.requires_grad:
            intervention.rotation.unconstrained.register_hook(lambda grad: seen.add(torch.backends.cuda.matmul.allow_tf32))
