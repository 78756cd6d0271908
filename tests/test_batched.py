"""The batched fast engine: cells trained and evaluated together equal the same cells alone, on every
kind of site; the group runner claims cells one by one; the processes executor writes the local
executor's files."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_das.causal_model import sample_counterfactuals
from causal_das.das import engine, memory
from causal_das.models.cnn import CNNSite, EllipseCNN
from causal_das.models.mlp import MLPClassifier, MLPSite
from causal_das.runtime.sweep import claim, run_groups
from causal_das.studies import arithmetic_cells, arithmetic_decoder, arithmetic_network
from causal_das.studies.four_objects_mlp import to_interchange
from causal_das.tasks import arithmetic, ellipse
from causal_das.tasks.four_objects import get_task

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5


def assert_same(alone, together):
    for one, other in zip(alone, together, strict=True):
        assert one.subspace_sizes == other.subspace_sizes
        assert (one.weight - other.weight).abs().max().item() <= TOLERANCE
        assert [e["loss"] for e in one.history["epochs"]] == pytest.approx([e["loss"] for e in other.history["epochs"]], abs=1e-5)


@pytest.fixture(scope="module")
def tiny_gpt2():
    model = arithmetic_decoder.build_default_model(arithmetic_decoder.build_tokenizer(), width=16, n_layers=3, n_heads=2, seed=0).eval()
    return model, arithmetic_decoder.encode_prompts(arithmetic_decoder.build_tokenizer())


def test_gpt2_cells_of_different_models_and_k_trained_together_equal_each_alone(tiny_gpt2):
    """A few hundred steps (4000 pairs, batch 32, 2 epochs = 250 steps), three causal models, k in
    {4, 16, 96 = n (a full swap)}: the same W, losses and predictions as each cell trained alone."""
    model, ids = tiny_gpt2
    train_ids, test_ids = arithmetic_cells.sweep_pairs(arithmetic_cells.SweepConfig(n_training=4000, n_testing=500))
    site = arithmetic_decoder.site(model, 0)
    cells = [engine.Cell(arithmetic_network.interchange_data(ids, train_ids, m), engine.DASConfig((k,), 2, 32, 0.01, 0), f"{m.name} k{k}")
             for m, k in zip(arithmetic.get_family("arithmetic"), (4, 16, site.n), strict=True)]
    alone = [engine.train_cells(site, [cell])[0] for cell in cells]
    together = engine.train_cells(site, cells)
    assert_same(alone, together)
    assert [t.history.get("cells_in_pass") for t in together] == [2, 2, None]  # the full swap needs no pass
    assert (together[0].weight - engine.initial_intervention(site, cells[0].config).weight()).abs().max() > 1e-2  # it did train
    test = arithmetic_network.interchange_data(ids, test_ids, arithmetic.get_model("(X+Y)+Z"))
    each = [engine.predict(site, t, test) for t in together]
    for single, batched in zip(each, engine.predict_cells(site, together, test, batch_size=300), strict=True):
        assert torch.equal(single, batched)


def test_cells_with_different_step_counts_and_one_per_pass(tiny_gpt2):
    """Cells with other batch sizes, epochs and seeds drop out of the pass when done; a pass of one
    cell (max_cells_per_pass=1) is the same as a pass of all."""
    model, ids = tiny_gpt2
    train_ids, _ = arithmetic_cells.sweep_pairs(arithmetic_cells.SweepConfig(n_training=600, n_testing=10))
    site = arithmetic_decoder.site(model, 1, (2, 3, 4, 5))
    data = arithmetic_network.interchange_data(ids, train_ids, arithmetic.get_model("X+(Y+Z)"))
    cells = [engine.Cell(data, engine.DASConfig((8,), 1, 64, 0.01, 0)), engine.Cell(data, engine.DASConfig((8,), 3, 50, 0.02, 1)),
             engine.Cell(data, engine.DASConfig((3,), 2, 128, 0.005, 2))]
    together = engine.train_cells(site, cells)
    assert_same(engine.train_cells(site, cells, max_cells_per_pass=1), together)
    assert [len(t.history["epochs"]) for t in together] == [1, 3, 2]


def test_mlp_cells_with_several_subspaces_trained_together_equal_each_alone():
    torch.manual_seed(0)
    model = MLPClassifier(16, n_layers=3).eval()
    task = get_task("hierarchical_equality")
    data = to_interchange(sample_counterfactuals(task.causal_model(), task.sampler(4), 800, np.random.default_rng(0)))
    site = MLPSite(model, 1)
    cells = [engine.Cell(data, engine.DASConfig(sizes, 3, 32, 0.01, seed)) for sizes, seed in (((8, 8), 0), ((3, 5), 1), ((2, 2), 2))]
    assert_same([engine.train_cells(site, [c])[0] for c in cells], engine.train_cells(site, cells))


@pytest.mark.parametrize("view", ["rows", "flat"])
def test_cnn_cells_trained_together_equal_each_alone(view):
    torch.manual_seed(0)
    model = EllipseCNN().eval()
    pool = ellipse.sample_latents(np.random.default_rng(4), 48)
    images = torch.from_numpy(ellipse.render(pool))
    pairs = ellipse.sample_pairs(pool, ["circularity"], "single", 64, np.random.default_rng(5))
    data = engine.InterchangeData(images, torch.as_tensor(pairs.base), torch.as_tensor(pairs.sources), torch.as_tensor(pairs.labels))
    site = CNNSite(model, "conv1", view)
    cells = [engine.Cell(data, engine.DASConfig((k,), 2, 16, 0.01, seed)) for k, seed in ((2, 0), (5, 1))]
    assert_same([engine.train_cells(site, [c])[0] for c in cells], engine.train_cells(site, cells))


def test_cells_per_pass_follows_the_memory_budget(tiny_gpt2):
    model, ids = tiny_gpt2
    site, last = arithmetic_decoder.site(model, 0), arithmetic_decoder.site(model, 2)
    activations = engine.cache_activations(site, ids[:20])

    def suffix(at):
        return lambda hidden: engine.suffix_logits(at, hidden)

    with engine.frozen(model):
        per_row = memory.suffix_bytes_per_row(suffix(site), activations)
        # Block 0's suffix runs two blocks over 6 tokens x 16 wide: autograd keeps far more than the state.
        assert per_row > 2 * site.n * 4
        assert memory.suffix_bytes_per_row(suffix(last), activations) < per_row  # after the last block only the head runs
        assert memory.cells_per_pass(suffix(site), activations, 64, budget=per_row * 64 * 5) == 5
        assert memory.cells_per_pass(suffix(site), activations, 64, budget=1) == 1
        assert memory.cells_per_pass(suffix(site), activations, 64, budget=1 << 60) == memory.MAX_CELLS_PER_PASS


def test_group_runner_leaves_a_cell_another_run_holds_and_takes_it_over_when_released(tmp_path):
    """Cells claimed elsewhere are not computed while held; the rest of the group is computed
    together; once the holder lets go without finishing, this run computes the held cell."""
    groups = [[("a", 0), ("b", 0), ("c", 0)], [("a", 1), ("b", 1)]]
    computed, written = [], {}

    def path(key):
        return tmp_path / f"{key[0]}{key[1]}.json"

    def compute(keys):
        computed.append(list(keys))
        for key in keys:
            written[key] = {"key": key}
        return {key: written[key] for key in keys}

    held = threading.Event()
    release = threading.Event()

    def other_run():
        with claim(path(("b", 0))) as mine:
            assert mine
            held.set()
            release.wait(10)

    holder = threading.Thread(target=other_run)
    holder.start()
    held.wait(10)
    threading.Timer(0.5, release.set).start()
    started = time.perf_counter()
    records, n = run_groups(groups, path, written.get, compute, lambda groups: groups)
    holder.join()
    assert computed == [[("a", 0), ("c", 0)], [("a", 1), ("b", 1)], [("b", 0)]]
    assert n == 5 and set(records) == {key for group in groups for key in group}
    assert time.perf_counter() - started >= 0.4  # it waited for the holder


def test_group_runner_does_not_recompute_a_cell_finished_by_another_run(tmp_path):
    finished = {("a", 0): {"done": "elsewhere"}}
    computed = []

    def compute(keys):
        computed.extend(keys)
        return {key: {"done": "here"} for key in keys}

    records, n = run_groups([[("a", 0), ("b", 0)]], lambda key: tmp_path / f"{key[0]}.json", finished.get, compute, lambda g: g)
    assert computed == [("b", 0)] and n == 1 and records[("a", 0)] == {"done": "elsewhere"}


def test_processes_executor_writes_the_local_executors_files(tmp_path):
    from test_faults import contents

    model = tmp_path / "gpt2"
    subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--output_dir", str(model), "--epochs", "2", "--width", "16", "--n_layers", "2",
                    "--n_heads", "2"], check=True, capture_output=True, cwd=ROOT, timeout=600)
    runs = {}
    for executor in ("local", "processes"):
        out = tmp_path / executor
        proc = subprocess.run([sys.executable, str(ROOT / "run_das.py"), "--model_path", str(model), "--results_path", str(out), "--layers", "0", "1",
                               "--low_rank_dims", "4", "--n_training", "256", "--n_testing", "64", "--epochs", "1", "--executor", executor,
                               "--workers", "2"], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stderr
        runs[executor] = contents(out)
    assert runs["local"] == runs["processes"]
    assert sum(name.startswith("cells/") for name in runs["local"]) == 6


def test_one_batched_orthonormalisation_gives_each_cells_own_w_and_gradient():
    """`weights_of` stacks the rotations of one shape into one QR: the same bits as one QR per cell,
    forward and backward (so batching changes no result), and cells of other shapes kept apart."""
    from causal_das.das.intervention import DistributedInterchange, weights_of

    generator = torch.Generator().manual_seed(0)
    cells = [DistributedInterchange(48, sizes, generator) for sizes in [(4, 4), (4, 4), (6,), (48,), (4, 4)]]
    probes = [torch.randn(48, sum(c.subspace_sizes), generator=generator) for c in cells]
    grads = {}
    for how in ("alone", "batched"):
        for cell in cells:
            cell.zero_grad(set_to_none=True)
        weights = [c.weight() for c in cells] if how == "alone" else weights_of(cells)
        sum((w * p).sum() for w, p in zip(weights, probes, strict=True)).backward()
        grads[how] = ([w.detach() for w in weights], [c.rotation.unconstrained.grad for c in cells if c.trainable])
    assert all(torch.equal(a, b) for a, b in zip(grads["alone"][0], grads["batched"][0], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(grads["alone"][1], grads["batched"][1], strict=True))
