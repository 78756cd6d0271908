"""The DAS training loop both engines share (`optimise` over `batch_order`'s batches), and the
divergence guard every training loop of the package uses. Imports no engine: both engines import it."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from causal_das.das.data import DASConfig, InterchangeData
from causal_das.runtime import progress

log = logging.getLogger(__name__)


def batch_order(n: int, batch_size: int, epoch: int, seed: int) -> list[torch.Tensor]:
    """The shuffled batches of one epoch; both engines use these so they see the same data."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def optimise(parameters, logits_for, data: InterchangeData, config: DASConfig, desc: str) -> dict:
    """The DAS training loop both engines share: Adam on cross-entropy against the counterfactual
    labels, over `batch_order`'s batches. `logits_for(idx)` runs the intervened network on them.
    Divergence (see `DivergenceGuard`) raises ValueError: training on would only write garbage."""
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    # Callers' descs often start with "DAS" ("DAS layer 0"); the message says it once.
    guard = DivergenceGuard(f"DAS training of {desc.removeprefix('DAS ')}", "lower the DAS learning rate (--lr / --das_lr)")
    history = {"epochs": []}
    for epoch in range(config.epochs):
        total_loss, correct = 0.0, 0
        batches = batch_order(len(data), config.batch_size, epoch, config.seed)
        for step, idx in enumerate(progress.inner(batches, desc=f"{desc} epoch {epoch + 1}/{config.epochs}"), 1):
            idx = idx.to(data.labels.device)
            logits = logits_for(idx)
            loss = nn.functional.cross_entropy(logits, data.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            guard.step(optimizer, epoch + 1, step)
            value = loss.item()  # the one sync per step the loop already had
            guard.check(value, epoch + 1, step)
            total_loss += value * len(idx)
            correct += (logits.argmax(-1) == data.labels[idx]).sum().item()
        history["epochs"].append({"loss": total_loss / len(data), "train_iia": correct / len(data)})
        log.info("%s epoch %d: loss %.4f, train IIA %.4f", desc, epoch + 1, *history["epochs"][-1].values())
    return history


@dataclass(frozen=True)
class DivergenceGuard:
    """Stops a training loop that diverged with one line naming the step and what to change: a loss
    that is NaN or infinite, or an optimiser step too large for float32 (Adam's first step is
    lr / (1 - beta1), so an lr above ~3e37 overflows inside torch with a RuntimeError)."""

    what: str  # "DAS training of X+Y L0 k4"
    remedy: str  # "lower the learning rate (--lr)"

    def step(self, optimizer: torch.optim.Optimizer, epoch: int, step: int) -> None:
        try:
            optimizer.step()
        except RuntimeError as error:
            if "overflow" not in str(error):
                raise
            raise ValueError(self._message(epoch, step, "the optimiser step overflows float32")) from None

    def check(self, loss: float, epoch: int, step: int) -> None:
        if not math.isfinite(loss):
            raise ValueError(self._message(epoch, step, f"loss {loss}"))

    def _message(self, epoch: int, step: int, why: str) -> str:
        return f"{self.what} diverged at epoch {epoch} step {step} ({why}); {self.remedy}"
