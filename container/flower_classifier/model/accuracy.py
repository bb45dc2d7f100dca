"""Top-1 and top-5 accuracy, computed one way for training's validation, its fine-tuning and
the evaluate command.
"""
from __future__ import annotations

import torch
from torch import nn

TOP = 5  # top-5 accuracy, as the Udacity project reports it


def top_hits(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the TOP best classes of each row, best first; whether each is the row's target)."""
    top = scores.topk(min(TOP, scores.shape[1]), dim=1).indices
    return top, top == targets[:, None]


def validation_scores(log_probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Validation loss (NLL of log-probabilities), top-1 and top-5 accuracy."""
    _, hits = top_hits(log_probs, targets)
    return {"valid_loss": float(nn.functional.nll_loss(log_probs, targets)),
            "top1": float(hits[:, 0].float().mean()), "top5": float(hits.any(1).float().mean())}
