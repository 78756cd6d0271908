"""The DAS training loop both engines share (`optimise_cells` over `batch_order`'s batches; `optimise`
is its one-cell case), and the divergence guard every training loop of the package uses. Imports no
engine: both engines import it."""

from __future__ import annotations

import functools
import logging
import math
import operator
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
    """The DAS training loop of one intervention: `optimise_cells` with one cell.
    `logits_for(idx)` runs the intervened network on the examples `idx`."""
    return optimise_cells([parameters], lambda batches: [logits_for(batches[0][1])], [data], [config], [desc])[0]


def optimise_cells(parameters, logits_for, datas, configs, descs, progress_desc: str | None = None, penalty=None) -> list[dict]:
    """The DAS training loop both engines share, for several interventions (cells) at once: Adam on
    cross-entropy against each cell's counterfactual labels, over each cell's own `batch_order`.

    `parameters[c]` are cell c's trainable parameters; `logits_for([(c, idx), ...])` runs the
    intervened network on batch `idx` of each listed cell (typically in one suffix pass) and returns
    their logits in that order. The loss is the sum of the cells' mean losses: cells share no
    parameter, so each cell's gradient, Adam state and W are those it would get trained alone (up to
    the last bits of the batched matrix products). One Adam updates every cell (a parameter group
    per cell; Adam is elementwise, so this is each cell's own Adam in one call). Cells with fewer
    steps drop out when done. `penalty(c)`, if given, is a term added to cell c's loss at each step
    (e.g. a mask's sparsity, `das.baselines`).

    A step never waits for the device: losses and correct counts stay there until a cell's epoch
    ends, when they are read in one transfer. So divergence (see `DivergenceGuard`) is noticed at
    the end of the epoch it happened in, and the error names the first non-finite step and the cell.
    Returns one history per cell: {"epochs": [{"loss", "train_iia"}, ...]}."""
    n_cells = len(datas)
    optimizer = torch.optim.Adam([{"params": list(params), "lr": config.lr} for params, config in zip(parameters, configs, strict=True)])
    # Callers' descs often start with "DAS" ("DAS layer 0"); the message says it once.
    guards = [DivergenceGuard(f"DAS training of {desc.removeprefix('DAS ')}", "lower the DAS learning rate (--lr / --das_lr)") for desc in descs]
    steps_per_epoch = [math.ceil(len(data) / config.batch_size) for data, config in zip(datas, configs, strict=True)]
    total_steps = [config.epochs * steps for config, steps in zip(configs, steps_per_epoch, strict=True)]
    histories = [{"epochs": []} for _ in range(n_cells)]
    # This epoch's per-step (loss, correct) of each cell, still on the device, and the batch sizes.
    pending: list[list[torch.Tensor]] = [[] for _ in range(n_cells)]
    sizes: list[list[int]] = [[] for _ in range(n_cells)]
    orders: list[list[torch.Tensor]] = [[] for _ in range(n_cells)]
    label = progress_desc or (descs[0] if n_cells == 1 else f"{n_cells} cells")
    for t in progress.inner(range(max(total_steps, default=0)), desc=label, unit="step"):
        batches = []
        for c in range(n_cells):
            if t >= total_steps[c]:
                continue
            epoch, step = divmod(t, steps_per_epoch[c])
            if step == 0:
                # The epoch's shuffled order goes to the device once, not once per step.
                order = batch_order(len(datas[c]), configs[c].batch_size, epoch, configs[c].seed)
                orders[c] = torch.cat(order).to(datas[c].labels.device).split([len(idx) for idx in order])
            batches.append((c, orders[c][step]))
        logits = logits_for(batches)
        losses = [nn.functional.cross_entropy(out, datas[c].labels[idx]) for (c, idx), out in zip(batches, logits, strict=True)]
        if penalty is not None:
            losses = [loss + penalty(c) for (c, _), loss in zip(batches, losses, strict=True)]
        optimizer.zero_grad(set_to_none=True)
        functools.reduce(operator.add, losses).backward()
        active = [c for c, _ in batches]
        _guard_for(guards, descs, active).step(optimizer, *(x + 1 for x in divmod(t, steps_per_epoch[active[0]])))
        with torch.no_grad():
            for (c, idx), out, loss in zip(batches, logits, losses, strict=True):
                pending[c].append(torch.stack([loss.detach().double(), (out.argmax(-1) == datas[c].labels[idx]).sum().double()]))
                sizes[c].append(len(idx))
        for c in active:
            epoch, step = divmod(t, steps_per_epoch[c])
            if step + 1 == steps_per_epoch[c]:
                histories[c]["epochs"].append(_epoch_record(guards[c], pending[c], sizes[c], epoch + 1))
                log.info("%s epoch %d: loss %.4f, train IIA %.4f", descs[c], epoch + 1, *histories[c]["epochs"][-1].values())
                pending[c], sizes[c] = [], []
    return histories


def _guard_for(guards, descs, active: list[int]) -> DivergenceGuard:
    """The guard that names what an optimiser step of the cells `active` would break."""
    if len(active) == 1:
        return guards[active[0]]
    names = ", ".join(descs[c].removeprefix("DAS ") for c in active)
    return DivergenceGuard(f"DAS training of {len(active)} cells trained together ({names})", guards[active[0]].remedy)


def _epoch_record(guard: DivergenceGuard, pending: list[torch.Tensor], sizes: list[int], epoch: int) -> dict:
    """{"loss", "train_iia"} of an epoch from its steps' (loss, correct) pairs, read from the device
    in one transfer; the loss summed in float64 step by step (the order the history always used)."""
    values = torch.stack(pending).cpu().tolist()
    total_loss, correct = 0.0, 0
    for step, ((loss, count), size) in enumerate(zip(values, sizes, strict=True)):
        guard.check(loss, epoch, step + 1)
        total_loss += loss * size
        correct += int(count)
    n = sum(sizes)
    return {"loss": total_loss / n, "train_iia": correct / n}


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
