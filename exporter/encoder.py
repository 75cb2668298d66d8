"""The user tower as a graph: recent events' item vectors -> the user vector.

The user vector is not a learned network but pocketrank.shared.features' fold: a
decayed, event-type weighted mean of the item vectors of the user's events.
Folded over a sequence it has a closed form, S / W with S = sum(w_i v_i) and
W = sum(w_i), where w_i are pocketrank.shared.features.sequence_weights of the events
that move the fold (pocketrank.exporter.parity.encoder_inputs builds the feed). This
module is that closed form as a torch module, so it exports to ONNX beside the
ranker and a device without Python (or without shared) computes the same
vector.

It stays fp32: it has no weights at all (the per-event weights are inputs),
so int8 would shrink nothing and would only add rounding to the inputs of
every later ranking.
"""

from __future__ import annotations

import torch
from torch import nn

# pocketrank.shared.features.user_vector returns zeros when the total weight is at most
# this (no weighted event yet); the graph does the same.
EMPTY_WEIGHT = 1e-9


class SequenceEncoder(nn.Module):
    """forward(items (L, dim), weights (L,)) -> user (1, dim)."""

    def forward(self, items: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        total = weights.sum()
        s = weights.unsqueeze(0) @ items  # (1, dim)
        return torch.where(total > EMPTY_WEIGHT, s / total.clamp_min(EMPTY_WEIGHT), torch.zeros_like(s))
