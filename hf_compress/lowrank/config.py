"""The ``lowrank`` recipe block."""

from __future__ import annotations

from dataclasses import dataclass

from ..configs import RecipeError, check_range

__all__ = ["LowRankConfig"]


@dataclass
class LowRankConfig:
    """Low-rank reparameterization: targeted linears replaced by the two factors of their truncated SVD.

    Give exactly one rank rule. A layer whose rank would not save parameters and FLOPs (``r >= m n / (m + n)``)
    is left dense, with the reason in the report.

    Attributes:
        targets: ``fnmatch`` patterns of the linears to factorize; default: the FFN linears of every layer
            (BERT: ``intermediate.dense`` and ``output.dense``).
        rank: a fixed rank.
        rank_ratio: a fraction of each layer's full rank ``min(m, n)``.
        energy: keep the smallest rank whose singular values hold this fraction of ``sum s_i^2``.
        merge: fold the factors back into one dense layer at the end of training (a plain model again, without
            the speed-up).
    """

    targets: list[str] | None = None
    rank: int | None = None
    rank_ratio: float | None = None
    energy: float | None = None
    merge: bool = False

    def __post_init__(self) -> None:
        given = [k for k in ("rank", "rank_ratio", "energy") if getattr(self, k) is not None]
        if len(given) != 1:
            raise RecipeError(
                "rank_ratio", self.rank_ratio, f"give exactly one of rank, rank_ratio, energy (got: {given or 'none'})"
            )
        if self.rank is not None:
            check_range("rank", self.rank, 1)
        if self.rank_ratio is not None:
            check_range("rank_ratio", self.rank_ratio, 0.0, 1.0, low_open=True)
        if self.energy is not None:
            check_range("energy", self.energy, 0.0, 1.0, low_open=True)
