"""The baselines a DAS alignment is judged against, and the illusion check, on planted networks whose
answer is known by construction."""

import numpy as np
import pytest
import torch
from torch import nn

from causal_das.das import baselines, engine
from causal_das.das.site import SiteName


class PlantedSite:
    """A site whose prefix is a fixed table of hidden states (one per input id) and whose suffix is a
    given function of the hidden state: a network built by hand."""

    def __init__(self, hidden: torch.Tensor, read):
        self.model = nn.Linear(1, 1)  # a module for `engine.frozen` and the device; the suffix is `read`
        self.hidden, self.read = hidden, read
        self.n = hidden.shape[1]
        self.name = SiteName("planted", "hidden", 0)

    def prefix(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hidden[ids.long()]

    def suffix(self, state: torch.Tensor) -> torch.Tensor:
        return self.read(state)


def bit_logits(y: torch.Tensor) -> torch.Tensor:
    """Two classes: 1 when y > 0.5, with a sharp margin."""
    return torch.stack([0.5 - y, y - 0.5], dim=1) * 20


def pairs(n_inputs: int, n_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, n_inputs, n_pairs)
    source = (base + rng.integers(1, n_inputs, n_pairs)) % n_inputs
    return torch.as_tensor(base), torch.as_tensor(source)


def iia(site, trained, bits, base, source) -> float:
    ids = torch.arange(len(site.hidden))
    data = engine.InterchangeData(ids, base, source[:, None], torch.as_tensor(bits[source.numpy()]))
    predicted = engine.predict_cells(site, [trained], data)[0]
    return float((predicted == data.labels).float().mean())


def test_illusion_check_flags_a_dormant_direction_and_not_the_real_one():
    # Makelov, Lange & Nanda's MLP-in-the-middle shape: the bit b is written to e1 (read downstream)
    # and to e2 (read by nothing), each with its own small noise; e3 is read downstream (twice as
    # strongly) but never active. Patching along (e2 + e3)/sqrt(2) copies the source's bit into the
    # dormant e3: the output follows the source although nothing the network computes changed.
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, 200)
    noise = rng.uniform(-0.1, 0.1, (200, 2))
    hidden = torch.tensor(np.stack([bits + noise[:, 0], bits + noise[:, 1], np.zeros(200)], axis=1), dtype=torch.float32)
    site = PlantedSite(hidden, lambda h: bit_logits(h[:, 0] + 2 * h[:, 2]))
    base, source = pairs(200, 2000)
    real = baselines.fixed(site, torch.tensor([[1.0], [0.0], [0.0]]), "planted_real")
    illusory = baselines.fixed(site, torch.tensor([[0.0], [1.0], [1.0]]) / 2 ** 0.5, "planted_illusion")
    span = baselines.activation_span(hidden)
    assert span.shape[1] == 2  # e1 and e2 vary; e3 never does
    no_intervention = float(np.mean(bits[base.numpy()] == bits[source.numpy()]))
    for trained, should_flag in ((real, False), (illusory, True)):
        full = iia(site, trained, bits, base, source)
        projected = iia(site, baselines.project_onto_span(site, trained, span), bits, base, source)
        assert full == 1.0  # both patches "work"
        assert baselines.illusion_flag(full, projected, no_intervention) is should_flag, (full, projected, no_intervention)
    check = baselines.illusion_check(illusory, hidden, span)
    assert check["weight_in_span"] == pytest.approx(0.5, abs=1e-6)  # half of W lies in the dormant e3
    assert baselines.illusion_check(real, hidden, span)["weight_in_span"] == pytest.approx(1.0, abs=1e-6)


def test_fixed_baselines_are_orthonormal_reproducible_and_find_the_variance():
    rng = np.random.default_rng(1)
    n = 6
    hidden = torch.tensor(rng.normal(0, 0.01, (300, n)), dtype=torch.float32)
    hidden[:, 4] += torch.tensor(rng.normal(0, 1, 300), dtype=torch.float32)  # nearly all the variance on neuron 4
    site = PlantedSite(hidden, lambda h: bit_logits(h[:, 0]))
    draws = baselines.random_subspaces(site, (2,), 3, seed=0)
    for one in draws:
        assert torch.allclose(one.weight.T @ one.weight, torch.eye(2), atol=1e-5)
    assert not torch.allclose(draws[0].weight, draws[1].weight)
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(draws, baselines.random_subspaces(site, (2,), 3, seed=0), strict=True))
    pca = baselines.principal_subspace(site, hidden, 1)
    assert abs(float(pca.weight[4, 0])) > 0.999 and pca.history["variance_explained"] > 0.99
    assert baselines.variance_fraction(pca.weight, hidden) == pytest.approx(pca.history["variance_explained"], abs=1e-6)
    assert baselines.full_patch(site).module().full_swap
    assert baselines.activation_span(hidden, 0.9).shape[1] == 1


def test_neuron_mask_finds_the_neuron_that_carries_the_variable():
    # Six neurons; the output reads neuron 2 (the bit) and neuron 5 (noise the bit does not set).
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 2, 100)
    hidden = torch.tensor(rng.normal(0, 0.05, (100, 6)), dtype=torch.float32)
    hidden[:, 2] += torch.tensor(bits, dtype=torch.float32)
    site = PlantedSite(hidden, lambda h: bit_logits(h[:, 2] + 0.2 * h[:, 5]))
    base, source = pairs(100, 1024, seed=3)
    data = engine.InterchangeData(torch.arange(100), base, source[:, None], torch.as_tensor(bits[source.numpy()]))
    config = engine.DASConfig((1,), epochs=2, batch_size=64, lr=0.05, seed=0)
    with engine.frozen(site.model):
        (mask,) = baselines.train_neuron_masks(site, [data], [config], (1,), hidden, site.suffix)
    assert mask.history["neurons"] == [2]
    test_base, test_source = pairs(100, 1000, seed=4)
    assert iia(site, mask, bits, test_base, test_source) == 1.0
