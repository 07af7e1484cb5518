"""Factorized word embeddings (ALBERT-style): the ``V x H`` table replaced by ``V x r`` then ``r x H``.

From the truncated SVD of the trained table ``E = U S V^T``: ``first = U_r sqrt(S_r)`` (an ``nn.Embedding`` of width
``r``) and ``second = sqrt(S_r) V_r^T`` (an ``nn.Linear`` ``r -> H`` without bias), so that
``second(first(ids)) = E_r[ids]``, the best rank-``r`` approximation of the rows (Eckart-Young). Parameters go from
``V H`` to ``r (V + H)``. In ONNX: a ``Gather`` of the narrow table (int8 per row in int8 exports) and a MatMul.
The rank is recorded in the model config (``lowrank_embedding_rank``) so that
:func:`~hf_compress.lowrank.load_lowrank` rebuilds the structure.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..modules import SettingError
from .layers import break_even_rank, choose_rank

__all__ = ["EMBEDDING_CONFIG_KEY", "FactorizedEmbedding", "apply_embedding_structure", "factorize_embeddings"]

EMBEDDING_CONFIG_KEY = "lowrank_embedding_rank"


class FactorizedEmbedding(nn.Module):
    """``second(first(ids))``: ``first`` an ``nn.Embedding(V, r)``, ``second`` an ``nn.Linear(r, H)`` without bias."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None, **kwargs):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.rank, self.padding_idx = (
            num_embeddings,
            embedding_dim,
            rank,
            padding_idx,
        )
        self.first = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx, **kwargs)
        self.second = nn.Linear(rank, embedding_dim, bias=False, **kwargs)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(input_ids))

    def merged_weight(self) -> torch.Tensor:
        """The ``V x H`` table the factors stand for."""
        return self.first.weight @ self.second.weight.t()

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"


@torch.no_grad()
def factorize_embeddings(
    model: nn.Module, rank: int | None = None, rank_ratio: float | None = None, energy: float | None = None
) -> dict[str, Any]:
    """Replace ``model.get_input_embeddings()`` by a :class:`FactorizedEmbedding` from its truncated SVD, in place;
    return the report (rank, parameters before and after, relative Frobenius error). A rank that would not save
    parameters (``r >= V H / (V + H)``) raises :class:`~hf_compress.modules.SettingError`."""
    table = model.get_input_embeddings()
    if not isinstance(table, nn.Embedding):
        raise SettingError("embeddings", type(table).__name__, "factorizes an nn.Embedding input table")
    weight = table.weight.detach()
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    r = choose_rank(s, rank, rank_ratio, energy)
    v, h = weight.shape
    if r >= break_even_rank(v, h):
        raise SettingError(
            "embeddings", r, f"a rank below V H / (V + H) = {break_even_rank(v, h):.0f} (else nothing is saved)"
        )
    root = s[:r].sqrt()
    new = FactorizedEmbedding(v, h, r, table.padding_idx, device=weight.device, dtype=weight.dtype)
    new.first.weight.copy_((u[:, :r] * root[None, :]).to(weight.dtype))
    new.second.weight.copy_((vh[:r].t() * root[None, :]).to(weight.dtype))
    model.set_input_embeddings(new)
    setattr(model.config, EMBEDDING_CONFIG_KEY, r)
    dropped = float(s[r:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt())
    return {
        "rank": r,
        "shape": [v, h],
        "parameters_before": v * h,
        "parameters_after": r * (v + h),
        "relative_error": dropped,
    }


def apply_embedding_structure(model: nn.Module, rank: int) -> None:
    """Replace the input embeddings by an (uninitialised) :class:`FactorizedEmbedding` of ``rank``, to load weights."""
    table = model.get_input_embeddings()
    weight = table.weight
    model.set_input_embeddings(
        FactorizedEmbedding(*weight.shape, rank, table.padding_idx, device=weight.device, dtype=weight.dtype)
    )
    setattr(model.config, EMBEDDING_CONFIG_KEY, rank)


@torch.no_grad()
def merge_embeddings(model: nn.Module) -> bool:
    """Fold a :class:`FactorizedEmbedding` back into one ``nn.Embedding``, in place; whether there was one."""
    table = model.get_input_embeddings()
    if not isinstance(table, FactorizedEmbedding):
        return False
    merged = table.merged_weight()
    dense = nn.Embedding(*merged.shape, padding_idx=table.padding_idx, device=merged.device, dtype=merged.dtype)
    dense.weight.copy_(merged)
    model.set_input_embeddings(dense)
    if hasattr(model.config, EMBEDDING_CONFIG_KEY):
        delattr(model.config, EMBEDDING_CONFIG_KEY)
    return True
