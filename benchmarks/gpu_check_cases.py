"""The equivalence part of `gpu_check.py`: every site type x engine x precision on a device, against
the same DAS run on the CPU in fp32.

Each case is a tiny network, trained on the CPU in fp32 from a fixed seed (so the CPU run and the
device run see the same weights), its counterfactual data from the task's own builders, and one DAS
configuration. A run moves a copy of the network to the device, sets the precision
(`devices.setup`), trains W with `engine.train` and predicts the test pairs with `engine.predict`,
exactly as the scripts do. The check compares:

- the trained W with the CPU fp32 run's (max |dW|, within `W_TOLERANCE` of the precision);
- the predictions on the test pairs (at least `MIN_EQUAL_PREDICTIONS` of them equal);
- W's orthonormality (max |W^T W - I| in float64, `ORTHONORMALITY_TOLERANCE`): W and its QR stay fp32
  whatever the precision, so TF32 or bf16 reaching them shows here;
- the intervened states the fast engine computes on the device with the CPU's W against the same
  interchange in float64 on the CPU (`INTERCHANGE_TOLERANCE`, relative): it stays fp32 whatever the
  precision.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from causal_das.causal_model import sample_counterfactuals
from causal_das.das import engine, pyvene_engine
from causal_das.experiments import cnn_das
from causal_das.models import cnn
from causal_das.models.answer_head import pyvene_view
from causal_das.models.mlp import MLPSite
from causal_das.runtime import devices
from causal_das.studies import arithmetic_decoder, arithmetic_network
from causal_das.studies import four_objects_mlp as mlp_study
from causal_das.studies.ellipse_cnn import images_and_labels
from causal_das.tasks import arithmetic, ellipse
from causal_das.tasks.four_objects import get_task

# -- tolerances --------------------------------------------------------------------------------------
# Each case trains W for at most 16 Adam steps at lr 1e-3, so no entry of W moves by more than about
# 0.016 (Adam's step is about lr whatever the gradient's size): the bounds below are against that.
# max |W_device - W_cpu| after training, per precision:
# - fp32: another device's summation order changes the last bits (~1e-7 relative), and Adam turns
#   a last-bit change of a near-zero gradient entry into a fraction of a step: on the CPU alone,
#   weights multiplied by (1 + 1e-7 N(0,1)) move the MLP's trained W by 1.2e-4 and the CNN flat
#   case's by 1.6e-4 (an H200 in fp32: 1.23e-4, docs/engines.md#on-a-gpu). The interchange check,
#   not this bound, is what tells fp32 from TF32.
# - tf32 rounds the network's products to a 10-bit mantissa (~5e-4 relative), bf16 to an 8-bit one
#   (~4e-3). Adam turns a rounding-sized change of a small gradient entry into a whole step of the
#   other sign, so their W drift by up to a few steps: the CPU's own bf16 runs of these cases end at
#   max |dW| 5.5e-4 to 3.9e-3 (docs/engines.md#on-a-gpu). tf32 gets half the bf16 bound.
W_TOLERANCE = {"fp32": 5e-4, "tf32": 5e-3, "bf16": 1e-2}
# The share of test predictions equal to the CPU fp32 run's: the 98%, except for bf16, whose
# rounding alone (the CPU's own bf16 run with the CPU's W) changes up to 2.4% of the predictions of these
# small 28-class networks, whose interventions leave many near-ties between the top two logits.
MIN_EQUAL_PREDICTIONS = {"fp32": 0.98, "tf32": 0.98, "bf16": 0.95}
ORTHONORMALITY_TOLERANCE = 1e-5  # the engines' own invariant (docs/engines.md: |W^T W - I| < 1e-5)
# fp32 rounding of the interchange (QR, two products over n <= 12,544) stays below ~1e-5 relative;
# one TF32 or bf16 product in it would show as ~5e-4 or more, so 1e-4 separates the two.
INTERCHANGE_TOLERANCE = 1e-4

SEED = 0
# Sizes: a network trains in seconds on one CPU core, and a case's DAS takes 8 to 16 Adam steps,
# enough for the device's rounding to move W; the test pairs (`N_TEST`) resolve 98% to 1 in 500.
N_TEST = 500
MLP = mlp_study.MLPExperimentConfig(**mlp_study.QUICK, device="cpu", seed=SEED)  # the scripts' --quick MLP
CNN_TRAIN = dict(images=2048, epochs=1, batch_size=256, lr=1e-3)  # cnn/train_cnn.py --quick sizes, a faster lr
CNN_DAS = dict(pairs=1024, k=8, batch_size=128, epochs=1, lr=1e-3)
# Flat at conv3 (3,136 dims): pyvene at conv1's 12,544 took 564 s for 4 steps (docs/engines.md, the ellipse CNN).
CNN_LAYER = {"rows": "conv1", "flat": "conv3"}
GPT2_NETWORK = dict(width=16, n_layers=3, n_heads=2)  # run_pipeline.py --quick's GPT-2
# Forty epochs at a high learning rate: not accurate, but confident. bf16 rounding flips a prediction
# whose top two logits are nearly tied: after a 20-epoch, lr 1e-3 training the 5% smallest gaps were
# below 0.005 and the CPU's own bf16 run flipped 3% of the predictions; here at most 2.4%.
GPT2_TRAIN = arithmetic_decoder.TrainingSchedule(epochs=40, batch_size=128, lr=2e-2, seed=SEED)
# Layer 0: the suffix runs every later block (the two-layer decoders have one).
ARITHMETIC_DAS = dict(pairs=1024, k=8, batch_size=64, epochs=1, lr=engine.DASConfig.lr, layer=0, causal_model="(X+Y+Z)")
POSITIONS = (3, 4, 5)  # a position-sweep site: coordinates and the untouched tokens' cached keys
# Tiny decoders of the other families (tests/test_decoders.py's sizes): two layers, grouped-query
# attention where the family has it.
DECODER_CONFIG = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, head_dim=8)
DECODER_EXTRA = {"llama": dict(num_key_value_heads=2), "qwen2": dict(num_key_value_heads=2),
                 "gemma2": dict(num_key_value_heads=2, sliding_window=4), "gpt_neox": dict(rotary_pct=0.5)}


@dataclass
class Case:
    """One site type: a frozen CPU network, its site on a copy, its data and DAS configuration."""

    name: str
    model: torch.nn.Module
    site: Callable[[torch.nn.Module], object]
    train: engine.InterchangeData
    test: engine.InterchangeData
    config: engine.DASConfig
    pyvene: str | None  # None when the pyvene engine applies, else why not

    def engines(self) -> tuple[str, ...]:
        return ("fast",) if self.pyvene else ("fast", "pyvene")


def _mlp() -> Case:
    task = get_task(MLP.task)
    streams = mlp_study.rng_streams(MLP.seed)
    model, _ = mlp_study.train_task_mlp(task, MLP, streams["mlp_data"])
    sampler = task.sampler(MLP.object_dim)
    train = sample_counterfactuals(task.causal_model(), sampler, MLP.das_train_size, streams["das_train"])
    test = sample_counterfactuals(task.causal_model(), sampler, N_TEST, streams["das_test"])
    return Case("mlp", model.eval(), lambda m: MLPSite(m, 0), mlp_study.to_interchange(train), mlp_study.to_interchange(test),
                MLP.das_config(), None)


def _cnn_network():
    rng = np.random.default_rng(SEED)
    _, images, labels = images_and_labels(rng, CNN_TRAIN["images"])
    torch.manual_seed(SEED)
    model = cnn.EllipseCNN()
    cnn.train_cnn(model, images, labels, cnn.CNNTrainConfig(CNN_TRAIN["epochs"], CNN_TRAIN["batch_size"], CNN_TRAIN["lr"], SEED))
    latents, pool, _ = images_and_labels(rng, CNN_DAS["pairs"])
    return model.eval(), latents, torch.from_numpy(pool)


def _cnn(view: str, network) -> Case:
    model, latents, images = network
    rng = np.random.default_rng(SEED)  # the same pairs in both views
    variables = ("circularity", "colour")
    train = ellipse.sample_pairs(latents, variables, "single", CNN_DAS["pairs"], rng)
    test = ellipse.sample_pairs(latents, variables, "single", N_TEST, rng)
    config = engine.DASConfig((CNN_DAS["k"],), CNN_DAS["epochs"], CNN_DAS["batch_size"], CNN_DAS["lr"], SEED)
    layer = CNN_LAYER[view]
    return Case(f"cnn_{view}", model, lambda m: cnn.CNNSite(m, layer, view), cnn_das.to_interchange(images, train),
                cnn_das.to_interchange(images, test), config, None)


def _trained_decoder(model):
    tokenizer = arithmetic_decoder.build_tokenizer()
    ids = arithmetic_decoder.encode_prompts(tokenizer)
    train_idx, heldout_idx = arithmetic.heldout_split(np.random.default_rng(SEED), 0.2)
    arithmetic_decoder.train_classifier(model, ids, train_idx, heldout_idx, GPT2_TRAIN)
    return model.eval(), ids


def _arithmetic_case(name: str, model, ids, positions, pyvene: str | None) -> Case:
    rng = np.random.default_rng(SEED)
    train_ids = arithmetic.draw_pairs(rng, ARITHMETIC_DAS["pairs"])
    test_ids = arithmetic.draw_pairs(rng, N_TEST, exclude=train_ids)
    causal_model = arithmetic.get_model(ARITHMETIC_DAS["causal_model"])
    config = engine.DASConfig((ARITHMETIC_DAS["k"],), ARITHMETIC_DAS["epochs"], ARITHMETIC_DAS["batch_size"], ARITHMETIC_DAS["lr"], SEED)
    layer = ARITHMETIC_DAS["layer"]
    return Case(name, model, lambda m: arithmetic_decoder.site(m, layer, positions), arithmetic_network.interchange_data(ids, train_ids, causal_model),
                arithmetic_network.interchange_data(ids, test_ids, causal_model), config, pyvene)


def _decoder_model(model_type: str):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    tokenizer = arithmetic_decoder.build_tokenizer()
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), num_labels=arithmetic.N_CLASSES, pad_token_id=tokenizer.pad_token_id,
                                  max_position_embeddings=arithmetic_decoder.SEQ_LEN + 2, bos_token_id=None, eos_token_id=None,
                                  **DECODER_CONFIG, **DECODER_EXTRA[model_type])
    torch.manual_seed(SEED)
    return AutoModelForSequenceClassification.from_config(config)


SITE_TYPES = ("mlp", "cnn_rows", "cnn_flat", "gpt2", "gpt2_positions", *DECODER_EXTRA)  # the decoder families this check builds


def build_cases(names: list[str], progress: Callable[[str], None]) -> list[Case]:
    """The cases `names` (of SITE_TYPES), each network trained once on the CPU in fp32."""
    devices.setup("cpu", "fp32")
    cases, cnn_network, gpt2_network = [], None, None
    for name in names:
        started = time.perf_counter()
        if name == "mlp":
            cases.append(_mlp())
        elif name.startswith("cnn_"):
            cnn_network = cnn_network or _cnn_network()
            cases.append(_cnn(name.removeprefix("cnn_"), cnn_network))
        elif name.startswith("gpt2"):
            gpt2_network = gpt2_network or _trained_decoder(arithmetic_decoder.build_default_model(arithmetic_decoder.build_tokenizer(), seed=SEED, **GPT2_NETWORK))
            cases.append(_arithmetic_case(name, *gpt2_network, POSITIONS if name == "gpt2_positions" else None, None))
        else:
            model = _decoder_model(name)
            why = None if pyvene_engine.maps_model(pyvene_view(model)[0]) else f"pyvene 0.1.8 has no mapping for {type(model).__name__}"
            cases.append(_arithmetic_case(name, *_trained_decoder(model), None, why))
        progress(f"built {name}: {cases[-1].train.base.numel()} training pairs, k = {sum(cases[-1].config.subspace_sizes)}, "
                 f"{time.perf_counter() - started:.1f} s")
    return cases


@dataclass
class Outcome:
    trained: engine.TrainedIntervention  # W on the CPU
    predictions: torch.Tensor  # (N_TEST,) on the CPU
    seconds: float


def _on(device: str, precision: str, case: Case):
    """(device, the case's site on a copy of its network there), with `precision` set."""
    where = devices.setup(device, precision)
    return where, case.site(copy.deepcopy(case.model).to(where))


def run(case: Case, engine_name: str, device: str, precision: str) -> Outcome:
    """Trains and predicts `case` with `engine_name` on `device` at `precision`, on a copy of the network."""
    where, site = _on(device, precision, case)
    # pyvene's W is torch's orthogonal parametrisation, which completes the n x k start to a square
    # matrix with torch.randn on W's device: the global seed makes its run repeatable (the fast
    # engine draws nothing from it).
    torch.manual_seed(SEED)
    started = time.perf_counter()
    trained = engine.train(site, case.train, case.config, engine_name)
    predictions = engine.predict(site, trained, case.test, engine_name)
    if where.type == "cuda":
        torch.cuda.synchronize()
    return Outcome(trained, predictions.cpu(), time.perf_counter() - started)


def _keep(store: list, tensor: torch.Tensor) -> torch.Tensor:
    store.append(tensor.detach())
    return tensor


def predict_fixed(case: Case, trained: engine.TrainedIntervention, engine_name: str, device: str, precision: str):
    """(the test pairs' predictions with a given W (the CPU's) on `device` at `precision`, the
    interchange's relative error or None): for the fast engine the site's prefix and suffix are
    watched, so the activation cache the engine built and every intervened state it sent into the
    suffix are kept, and the states are compared with the same interchange of the same cache and W
    in float64 on the CPU (max |difference| / max |state|). What is checked is the engine's own
    interchange under its own precision settings."""
    _, site = _on(device, precision, case)
    states, hidden = [], []
    prefix, suffix = site.prefix, site.suffix
    site.prefix = lambda inputs: _keep(states, prefix(inputs))
    site.suffix = lambda state: suffix(_keep(hidden, state))
    predictions = engine.predict(site, trained, case.test, engine_name).cpu()
    if engine_name != "fast":
        return predictions, None  # pyvene intervenes inside its own forward pass: judged by the predictions
    table = torch.cat(states).float().cpu().double()  # the cache is kept in fp32, as `cache_activations` keeps it
    exact = trained.module().double()
    with torch.no_grad():
        reference = engine.interchange(site, exact, table[case.test.base], table[case.test.sources], exact.weight())
    observed = torch.cat(hidden).cpu().double()
    return predictions, float((observed - reference).abs().max() / reference.abs().max())


def orthonormality(weight: torch.Tensor) -> float:
    """max |W^T W - I|, computed in float64 so that the check itself adds no rounding."""
    w = weight.double()
    return float((w.T @ w - torch.eye(w.shape[1], dtype=torch.float64)).abs().max())


def comparable(engine_name: str, device: str) -> bool:
    """Whether a trained W can be compared with the CPU's. pyvene's cannot on another device: its
    parametrisation's random completion of W (see `run`) is drawn from that device's generator, a
    different stream from the CPU's, and the completion steers the training: two CPU runs of these
    cases with different global seeds end 0.03-0.06 apart in W and agree on 88-99% of the
    predictions (the MLP's square W has no completion and is unaffected)."""
    return engine_name == "fast" or torch.device(device).type == "cpu"


def judge(precision: str, measured: dict) -> list[str]:
    """What fails the tolerances, as short phrases (empty: the run passes). `measured` holds what
    `check` measured; entries that are None were not judged."""
    failures = []
    w_difference, equal, fixed = measured.get("w_max_abs_diff"), measured.get("predictions_equal"), measured["predictions_equal_fixed_w"]
    if w_difference is not None and not w_difference <= W_TOLERANCE[precision]:
        failures.append(f"max |dW| {w_difference:.2e} > {W_TOLERANCE[precision]:.0e}")
    for what, value in (("", equal), (" with the CPU's W", fixed)):
        if value is not None and not value >= MIN_EQUAL_PREDICTIONS[precision]:
            failures.append(f"{value:.1%} predictions equal{what} < {MIN_EQUAL_PREDICTIONS[precision]:.0%}")
    if not measured["orthonormality"] <= ORTHONORMALITY_TOLERANCE:
        failures.append(f"max |W^T W - I| {measured['orthonormality']:.2e} > {ORTHONORMALITY_TOLERANCE:.0e}")
    interchange = measured.get("interchange_rel_error")
    if interchange is not None and not interchange <= INTERCHANGE_TOLERANCE:
        failures.append(f"interchange relative error {interchange:.2e} > {INTERCHANGE_TOLERANCE:.0e} (not fp32)")
    return failures


def check(case: Case, engine_name: str, device: str, precision: str, reference: Outcome, repeat: bool = False) -> dict:
    """One (site, engine, precision) row of the report: what was measured against the CPU fp32 run
    `reference` of the same engine, and pass, fail (with the failures) or error (with its message).
    `repeat`: also run it a second time and report whether the two runs gave bit-identical W and
    the same predictions (determinism on the device; reported, not judged)."""
    row = {"site": case.name, "engine": engine_name, "device": device, "precision": precision}
    try:
        outcome = run(case, engine_name, device, precision)
        fixed, interchange = predict_fixed(case, reference.trained, engine_name, device, precision)
        if repeat:
            again = run(case, engine_name, device, precision)
            row["repeat_identical"] = bool(torch.equal(again.trained.weight, outcome.trained.weight)
                                           and torch.equal(again.predictions, outcome.predictions))
    except Exception as error:  # a package failure on the device is a finding to report, not a crash
        message = str(error).strip()
        return {**row, "status": "error", "error": f"{type(error).__name__}: {message.splitlines()[0] if message else ''}"}
    weight, same = outcome.trained.weight, comparable(engine_name, device)
    measured = {
        "w_max_abs_diff": float((weight - reference.trained.weight).abs().max()) if same else None,
        "predictions_equal": float((outcome.predictions == reference.predictions).double().mean()) if same else None,
        "predictions_equal_fixed_w": float((fixed == reference.predictions).double().mean()),
        "orthonormality": orthonormality(weight),
        "interchange_rel_error": interchange,
    }
    failures = judge(precision, measured)
    if not same:
        # Reported, not judged: how far the device's own training ended from the CPU's.
        measured["unjudged_w_max_abs_diff"] = float((weight - reference.trained.weight).abs().max())
    return {**row, "status": "fail" if failures else "pass", "failures": failures, **measured, "w_tolerance": W_TOLERANCE[precision],
            "min_equal_predictions": MIN_EQUAL_PREDICTIONS[precision], "seconds": outcome.seconds}
