"""One epoch of optimizer steps, the loop that training a head (trainer.py) and fine-tuning
(fine_tune.py) share: zero the gradients, a batch's loss, backward, step; running mean loss.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm


def run_epoch(bar: tqdm, optimizer: torch.optim.Optimizer,
              loss_of: Callable[[object], tuple[torch.Tensor, int]]) -> float:
    """For each batch of `bar`: zero the gradients, `loss_of(batch)` -> (mean loss, batch size),
    backward, one optimizer step; the bar shows the running mean loss, which is returned."""
    loss_sum, count = 0.0, 0
    for batch in bar:
        optimizer.zero_grad()
        loss, size = loss_of(batch)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * size
        count += size
        bar.set_postfix(loss=f"{loss_sum / count:.3f}")
    return loss_sum / count


