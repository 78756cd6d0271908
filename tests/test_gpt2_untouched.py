"""The GPT-2 suffix that reuses the untouched first tokens' keys and values (`models.gpt2_untouched`)
gives the logits, the trained W and the predictions of the suffix on every position."""

import numpy as np
import pytest
import torch

from causal_das.das import engine
from causal_das.models import gpt2_untouched
from causal_das.studies import arithmetic_cells, arithmetic_decoder, arithmetic_network
from causal_das.tasks import arithmetic


@pytest.fixture(scope="module")
def tiny():
    model = arithmetic_decoder.build_default_model(arithmetic_decoder.build_tokenizer(), width=16, n_layers=4, n_heads=2, seed=1).eval()
    return model, arithmetic_decoder.encode_prompts(arithmetic_decoder.build_tokenizer())


def full_suffix_site(model, layer, positions, monkeypatch):
    monkeypatch.setattr(gpt2_untouched, "REUSE_UNTOUCHED_KEYS", False)
    site = arithmetic_decoder.site(model, layer, positions)
    monkeypatch.setattr(gpt2_untouched, "REUSE_UNTOUCHED_KEYS", True)
    return site


@pytest.mark.parametrize("positions", [(1,), (3,), (2, 3), (4, 5), (5,), (1, 3, 5)])
def test_cached_keys_suffix_gives_the_full_suffixs_logits(tiny, positions, monkeypatch):
    model, ids = tiny
    rng = np.random.default_rng(len(positions))
    base, source = torch.as_tensor(rng.integers(0, 1000, 200)), torch.as_tensor(rng.integers(0, 1000, (200, 1)))
    for layer in range(4):
        site, full = arithmetic_decoder.site(model, layer, positions), full_suffix_site(model, layer, positions, monkeypatch)
        assert site.untouched == (min(positions) if layer < 3 else 0)  # after the last block nothing follows
        intervention = engine.initial_intervention(site, engine.DASConfig((12,), seed=layer))
        with torch.no_grad():
            logits = [s.suffix(engine.interchange(s, intervention, states[base], states[source], intervention.weight()))
                      for s, states in ((site, engine.cache_activations(site, ids)), (full, engine.cache_activations(full, ids)))]
            plain = model(input_ids=ids[base]).logits
        assert (logits[0] - logits[1]).abs().max().item() < 1e-5, layer
        if layer < 3 or 5 in positions:  # after the last block only the last position is read
            assert (logits[0] - plain).abs().max().item() > 1e-4  # the intervention did something


def test_cells_trained_with_cached_keys_equal_the_full_suffixs(tiny, monkeypatch):
    """Two cells at positions 4-5 (250 steps): the same W, losses and predictions either way."""
    model, ids = tiny
    train_ids, test_ids = arithmetic_cells.sweep_pairs(arithmetic_cells.SweepConfig(n_training=4000, n_testing=500))
    site, full = arithmetic_decoder.site(model, 1, (4, 5)), full_suffix_site(model, 1, (4, 5), monkeypatch)
    assert site.untouched == 4 and full.untouched == 0
    cells = [engine.Cell(arithmetic_network.interchange_data(ids, train_ids, m), engine.DASConfig((k,), 2, 32, 0.01, 0))
             for m, k in zip(arithmetic.get_family("arithmetic")[:2], (4, 8), strict=True)]
    reused, recomputed = engine.train_cells(site, cells), engine.train_cells(full, cells)
    for one, other in zip(reused, recomputed, strict=True):
        assert (one.weight - other.weight).abs().max().item() <= 1e-5
        assert [e["loss"] for e in one.history["epochs"]] == pytest.approx([e["loss"] for e in other.history["epochs"]], abs=1e-5)
    test = arithmetic_network.interchange_data(ids, test_ids, arithmetic.get_model("(X+Y)+Z"))
    assert torch.equal(engine.predict(site, reused[0], test), engine.predict(full, reused[0], test))
