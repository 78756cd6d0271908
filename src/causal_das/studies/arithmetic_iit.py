"""Interchange intervention training (IIT; Geiger et al. 2022): a GPT-2 (or any supported decoder)
trained so that a chosen causal model is implemented at a chosen site, on a chosen region of the
inputs. The network whose answer is known, against which the position sweep and the disentangling
are checked.

An induction is (causal model, site, region): the site is the block output of one layer at some
token positions, the region a condition on the triple (`X<=5`, `X>Y`, ...). Beside the task loss,
each training step draws, for every induction, pairs of a base from its region and any source (both
training triples), runs the base with the source's block output swapped in at the site, and adds
the cross-entropy against the causal model's counterfactual label for the pair: the network must
then carry the model's intermediate variable at that site and read it from there alone. Where
regions are disjoint and cover different causal models, the network uses different mechanisms on
different inputs, at sites known in advance.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from causal_das.studies import arithmetic_decoder
from causal_das.tasks import arithmetic


@dataclass(frozen=True)
class Induction:
    causal_model: str
    layer: int
    positions: tuple[int, ...]
    where: str  # a condition on X, Y, Z (see `region`)

    @classmethod
    def parse(cls, causal_model: str, site: str, where: str, n_layers: int) -> Induction:
        """From the flags `--induce MODEL --induce_site L2:3 --induce_where "X<=5"`; ValueError naming
        what is wrong."""

        arithmetic.get_model(causal_model)  # unknown names fail here, with the list of models
        if causal_model not in arithmetic.MODELS or "P" not in arithmetic.get_model(causal_model).mechanisms:
            raise ValueError(f"--induce {causal_model!r} has no intermediate variable to induce; choose an arithmetic or single-input model")
        layer_text, _, positions_text = site.partition(":")
        try:
            layer = int(layer_text.removeprefix("L"))
        except ValueError:
            raise ValueError(f"--induce_site {site!r} is not LAYER:POSITIONS (e.g. L2:3, 2:4-5)") from None
        if not 0 <= layer < n_layers - 1:
            raise ValueError(f"--induce_site {site!r}: layer {layer} must be in 0..{n_layers - 2} (a block must follow the site)")
        try:
            positions = arithmetic_decoder.parse_positions(positions_text.removeprefix("pos"), "--induce_site")
        except ValueError:
            raise ValueError(f"--induce_site {site!r}: {positions_text!r} is not a set of token positions in 0..5 (e.g. L2:3, L1:all, L0:4-5)") from None
        induction = cls(causal_model, layer, positions, where)
        induction.region()  # a bad condition fails here
        return induction

    def region(self) -> np.ndarray:
        """(1000,) bool: the triples the condition holds for."""
        x, y, z = (arithmetic.TRIPLES[:, i] for i in range(3))
        return np.broadcast_to(np.asarray(evaluate_condition(self.where, {"X": x, "Y": y, "Z": z}), dtype=bool), x.shape).copy()

    @property
    def site(self) -> str:
        return f"L{self.layer}:" + ("all" if len(self.positions) == 6 else ",".join(map(str, self.positions)))

    def describe(self) -> dict:
        return {"causal_model": self.causal_model, "site": self.site, "layer": self.layer, "positions": list(self.positions),
                "where": self.where, "n_triples": int(self.region().sum())}


_OPERATORS = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Mod: np.mod,
    ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal, ast.Eq: np.equal, ast.NotEq: np.not_equal,
}


def evaluate_condition(text: str, names: dict[str, np.ndarray]):
    """A condition over X, Y, Z with + - * %, comparisons, `and`, `or`, `not` and integers, evaluated
    elementwise; ValueError for anything else (no Python is run)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"--induce_where {text!r} is not a condition such as X<=5, X>Y or X+Y<=10 and Z%2==0") from None

    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.Compare):
            result, left = True, value(node.left)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                if type(op) not in _OPERATORS:
                    break
                right = value(comparator)
                result, left = np.logical_and(result, _OPERATORS[type(op)](left, right)), right
            else:
                return result
        if isinstance(node, ast.BoolOp):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            result = value(node.values[0])
            for other in node.values[1:]:
                result = combine(result, value(other))
            return result
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return np.logical_not(value(node.operand))
        raise ValueError(f"--induce_where {text!r}: only X, Y, Z, integers, + - * %, comparisons, and/or/not are allowed")

    return value(tree)


def check_disjoint(inductions: list[Induction]) -> None:
    """The regions form a partition of (part of) the triples: the known answer. ValueError otherwise."""
    covered = np.zeros(arithmetic.N_TRIPLES, dtype=int)
    for induction in inductions:
        region = induction.region()
        if region.sum() < 2:
            raise ValueError(f"--induce_where {induction.where!r} holds for {int(region.sum())} triple(s); an induction needs a region")
        covered += region
    if (covered > 1).any():
        raise ValueError(f"the --induce_where regions overlap on {int((covered > 1).sum())} triples; make them disjoint")


def induced_labels(inductions: list[dict]) -> list[str]:
    """The known answer for each triple: the causal model induced on its region, or "unexplained"."""
    labels = np.full(arithmetic.N_TRIPLES, "unexplained", dtype=object)
    x, y, z = (arithmetic.TRIPLES[:, i] for i in range(3))
    for induction in inductions:
        region = np.broadcast_to(np.asarray(evaluate_condition(induction["where"], {"X": x, "Y": y, "Z": z}), dtype=bool), x.shape)
        labels[region] = induction["causal_model"]
    return labels.tolist()


def interchange_logits(model, input_ids: torch.Tensor, base: torch.Tensor, source: torch.Tensor, layer: int, positions) -> torch.Tensor:
    """Logits of the bases run with the sources' block output of `layer` at `positions` swapped in
    (the whole vector at each position); differentiable through both runs. GPT-2 runs its own blocks
    (the sources stop at the site); any other supported decoder runs whole with the swap hooked in."""
    from causal_das.models import decoder, gpt2

    # The prompts may live on the CPU while the pairs' indices live on the network's device: index
    # where the prompts are, then move the (few) selected rows.
    ids = input_ids[torch.cat([base, source]).to(input_ids.device)].to(base.device)
    if model.config.model_type != "gpt2":
        return decoder.interchange_logits(model, ids, len(base), layer, positions)
    n = len(base)
    hidden = gpt2.run_blocks(model, gpt2.embed(model, ids), 0, layer + 1)
    base_hidden, source_hidden = hidden[:n], hidden[n:]
    swap = torch.zeros(hidden.shape[1], dtype=torch.bool, device=hidden.device)
    swap[list(positions)] = True
    mixed = torch.where(swap[None, :, None], source_hidden, base_hidden)
    return gpt2.head(model, mixed, layer)


class InterchangeLoss:
    """The IIT term of a training step: for each induction, `batch_size` pairs (a base from its
    region, any source, both from `train_idx`), drawn from one generator seeded once."""

    def __init__(self, inductions: list[Induction], train_idx: np.ndarray, batch_size: int, seed: int, device):
        self.inductions, self.batch_size, self.device = inductions, batch_size, device
        train = np.zeros(arithmetic.N_TRIPLES, dtype=bool)
        train[train_idx] = True
        self.bases = [torch.as_tensor(np.flatnonzero(train & induction.region())) for induction in inductions]
        self.sources = torch.as_tensor(np.flatnonzero(train))
        self.models = [arithmetic.get_model(induction.causal_model) for induction in inductions]
        self.generator = torch.Generator().manual_seed(seed + 104729)

    def __call__(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for induction, bases, causal_model in zip(self.inductions, self.bases, self.models, strict=True):
            base = bases[torch.randint(len(bases), (self.batch_size,), generator=self.generator)]
            source = self.sources[torch.randint(len(self.sources), (self.batch_size,), generator=self.generator)]
            labels = torch.as_tensor(arithmetic.counterfactual_labels(causal_model, base.numpy(), source.numpy()), device=self.device)
            logits = interchange_logits(model, input_ids, base.to(self.device), source.to(self.device), induction.layer, induction.positions)
            total = total + nn.functional.cross_entropy(logits, labels)
        return total


@torch.no_grad()
def interchange_accuracy(model, input_ids: torch.Tensor, induction: Induction, bases: np.ndarray, n_pairs: int = 2000, seed: int = 0) -> float:
    """The fraction of `n_pairs` pairs (a base from `bases` within the region, any source) whose
    interchange at the induced site gives the causal model's counterfactual label."""
    bases = bases[induction.region()[bases]]
    if len(bases) == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    base, source = rng.choice(bases, n_pairs), rng.integers(0, arithmetic.N_TRIPLES, n_pairs)
    was_training = model.training
    model.eval()
    predicted = torch.cat([interchange_logits(model, input_ids, torch.as_tensor(base[i : i + 500], device=model.device),
                                              torch.as_tensor(source[i : i + 500], device=model.device), induction.layer,
                                              induction.positions).argmax(-1).cpu() for i in range(0, n_pairs, 500)])
    model.train(was_training)
    expected = arithmetic.counterfactual_labels(arithmetic.get_model(induction.causal_model), base, source)
    return float(np.mean(predicted.numpy() == expected))
