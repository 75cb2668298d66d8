"""The sequence model: an item tower with content, and a causal self-attention user encoder.

Item vector = id embedding + W * mean(content token embeddings) (pocketrank.server.training.content);
during training the id part is dropped for a random share of products, so a
product never seen in training gets a useful vector from content alone.

User vector = the encoder's output at the newest of the user's last
`max_len` events, each event entered as its item vector, its type (view,
click, search, cart, purchase) and the time since the event before it. The
encoder takes item VECTORS, not item ids: the server feeds it the vectors of
its catalogue and the device the vectors of its signed item entries, so the
one exported graph runs in both places (and a product added after training
enters a history through its content vector). Scores are inner products
with the item vectors, trained with a full softmax over the catalogue (a
sampled softmax with logQ correction above `full_softmax_max` products).

The attention is written out with matmuls (no fused torch kernels) so it
exports to a plain ONNX graph that dynamic int8 quantization can take.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pocketrank.shared.errors import ModelError
from pocketrank.shared.sequence import N_GAPS, N_TYPE_INPUTS

from .content_fit import CONTENT_RIDGE

MASKED = -1e4  # additive attention mask: finite, so an int8 graph and fp16 never see inf - inf


LR_SCHEDULES = ("constant", "linear")
# auto: the hard-negative ranker ships if it beats retrieval order on validation (server/training/seqranker.py)
RANKER_CHOICES = ("auto", "learned", "retrieval")
# SeqConfig's fields that belong to the data or to the run, not to the settings a user gives or a retrain carries.
NOT_SETTINGS = frozenset({"n_items", "n_tokens", "seed", "kind"})


@dataclass
class SeqConfig:
    n_items: int
    n_tokens: int = 0
    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.3
    id_dropout: float = 0.1  # share of products whose id part is dropped per batch
    content_ridge: float = CONTENT_RIDGE  # after training, the content map refitted to the vectors (0: keep the trained tower)
    lr: float = 2e-3
    lr_schedule: str = "constant"  # or "linear": decays to 0 at the last epoch (a fixed budget of epochs)
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 60  # at most; early stopping on a validation carve picks the epoch
    patience: int = 6
    full_softmax_max: int = 50_000
    negatives: int = 1024  # sampled softmax's shared negatives above full_softmax_max
    ranker: str = "auto"  # RANKER_CHOICES
    seed: int = 42
    kind: str = field(default="sequence")

    def __post_init__(self) -> None:
        # Checked here, not after a run: a bad value found at save time would throw the whole run away.
        r = self.content_ridge
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0:
            raise ModelError(f"content_ridge must be a finite number >= 0 (0 keeps the trained tower), not {r!r}")
        if self.heads < 1 or self.dim % self.heads:
            raise ModelError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ModelError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {self.lr_schedule!r}")
        if self.ranker not in RANKER_CHOICES:
            raise ModelError(f"ranker must be one of {', '.join(RANKER_CHOICES)}, not {self.ranker!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class MaskDropout(nn.Module):
    """nn.Dropout's function, with the mask drawn by `rand_like` instead of `bernoulli_`: torch's CPU
    `bernoulli_` took 13% of a MovieLens-1M training step, `rand_like` and a compare about 60% of its time.
    No parameters and identity in eval, so the state dict and the exported graph are nn.Dropout's."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ModelError(f"dropout must be in [0, 1], not {p!r}")
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0:
            return x
        if self.p >= 1:
            return x * 0.0
        return x * ((torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p)))


class SelfAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ff1, self.ff2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.drop = MaskDropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask, dim=-1)
        h = (self.drop(att) @ v).transpose(1, 2).reshape(B, L, D)
        x = x + self.drop(self.proj(h))
        return x + self.drop(self.ff2(F.gelu(self.ff1(self.norm2(x)))))


class UserEncoder(nn.Module):
    """forward(items (B, L, dim), types (B, L) int64, gaps (B, L) int64) -> (B, L, dim) states.

    Histories are left-padded to L (type 0 = padding); the user vector is the last position's state.
    """

    def __init__(self, c: SeqConfig):
        super().__init__()
        self.dim = c.dim
        self.pos = nn.Parameter(torch.randn(c.max_len, c.dim) * 0.02)
        # Zero-initialised: an event type or gap the training data never had adds nothing.
        self.type_emb = nn.Embedding(N_TYPE_INPUTS, c.dim)
        self.gap_emb = nn.Embedding(N_GAPS, c.dim)
        nn.init.zeros_(self.type_emb.weight)
        nn.init.zeros_(self.gap_emb.weight)
        self.blocks = nn.ModuleList(SelfAttentionBlock(c.dim, c.heads, c.dropout) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)
        self.drop = MaskDropout(c.dropout)
        causal = torch.triu(torch.full((c.max_len, c.max_len), MASKED), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def states(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        L = items.shape[1]
        real = (types > 0).unsqueeze(-1).to(items.dtype)
        x = items * math.sqrt(self.dim) + self.pos[-L:] + self.type_emb(types) + self.gap_emb(gaps)
        x = self.drop(x) * real
        # Causal, and no event attends to padding: a history's vector does not depend on how far it
        # was padded (positions count back from the newest event), so any length up to max_len agrees.
        causal = cast(torch.Tensor, self.causal)
        mask = causal[-L:, -L:] + (types == 0).to(items.dtype).unsqueeze(1).unsqueeze(1) * MASKED
        for block in self.blocks:
            x = block(x, mask) * real
        return self.norm(x)

    def forward(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """The user vectors (B, dim): the state at the newest event."""
        return self.states(items, types, gaps)[:, -1]


class SequenceRecommender(nn.Module):
    """Item tower (id + content) and user encoder. Item row r is model row r (0-based); table row 0 is padding."""

    def __init__(self, c: SeqConfig, item_tokens: np.ndarray | None = None):
        super().__init__()
        self.config = c
        self.item_id = nn.Embedding(c.n_items + 1, c.dim, padding_idx=0)
        nn.init.normal_(self.item_id.weight, std=0.05)
        self.token = nn.Embedding(max(c.n_tokens, 0) + 1, c.dim, padding_idx=0)
        nn.init.normal_(self.token.weight, std=0.05)
        self.content_proj = nn.Linear(c.dim, c.dim, bias=False)
        with torch.no_grad():
            self.item_id.weight[0].zero_()
            self.token.weight[0].zero_()
        tok = np.zeros((c.n_items + 1, 1), np.int64) if item_tokens is None else np.vstack(
            [np.zeros((1, item_tokens.shape[1]), np.int64), item_tokens])
        self.register_buffer("item_tokens", torch.from_numpy(tok), persistent=True)
        self.encoder = UserEncoder(c)

    def content(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(n_items + 1, dim), or (len(rows), dim) for those table rows: each product's content part (row 0 and
        token-less products: 0)."""
        tok = cast(torch.Tensor, self.item_tokens)
        if rows is not None:
            tok = tok[rows]
        emb = self.token(tok)  # padding rows are 0
        n = (tok > 0).sum(dim=1, keepdim=True).clamp_min(1).to(emb.dtype)
        return self.content_proj(emb.sum(dim=1) / n)

    def table(self, id_dropout: float = 0.0, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(n_items + 1, dim) item vectors with the padding row, or (len(rows), dim): those table rows alone
        (a sampled softmax's step reads a few thousand of a large catalogue's rows: building every row, content
        tower included, cost seconds a step at 100,000 products); `id_dropout` > 0 drops id parts at random,
        one draw a row."""
        ids = self.item_id.weight if rows is None else self.item_id(rows)
        if id_dropout > 0:
            keep = (torch.rand(ids.shape[0], 1) >= id_dropout).to(ids.dtype)
            ids = ids * keep
        return ids + self.content(rows)

    def item_vectors(self) -> torch.Tensor:
        """(n_items, dim); index r is model row r."""
        return self.table()[1:]

    def user_states(self, table: torch.Tensor, rows: torch.Tensor, types: torch.Tensor,
                    gaps: torch.Tensor) -> torch.Tensor:
        """(B, L) 1-based item rows (0 = padding) -> (B, L, dim) encoder states."""
        return self.encoder.states(table[rows], types, gaps)


def save(model: SequenceRecommender, path: Path, extra: dict | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path / "model.pt")
    (path / "config.json").write_text(json.dumps({"config": model.config.to_dict(), **(extra or {})}, indent=2))


def load(path: Path) -> tuple[SequenceRecommender, dict]:
    try:
        meta = json.loads((path / "config.json").read_text())
        state = torch.load(path / "model.pt", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"no trained model at {path}; run `pocketrank train` first") from exc
    try:
        config = SeqConfig(**meta["config"])
    except TypeError as exc:  # a setting this version does not know: written by a newer pocketrank
        raise ModelError(f"the model at {path} was trained by another pocketrank version ({exc}); "
                         "retrain it, or run the version that trained it") from exc
    model = SequenceRecommender(config, state["item_tokens"].numpy()[1:])
    model.load_state_dict(state)
    model.eval()
    return model, meta
