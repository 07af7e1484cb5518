"""The ``lowrank`` recipe block."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..checks import checked, count, number, text
from ..configs import RecipeError

__all__ = ["EmbeddingRankConfig", "LowRankConfig"]


@checked
@dataclass
class EmbeddingRankConfig:
    """The rank of factorized word embeddings (give exactly one rule).

    Attributes:
        rank: a fixed rank ``r`` (the table becomes ``V x r`` and ``r x H``).
        rank_ratio: a fraction of the hidden size ``H``.
        energy: keep the smallest rank whose singular values hold this fraction of ``sum s_i^2``.
    """

    rank: int | None = field(default=None, metadata=count())
    rank_ratio: float | None = field(default=None, metadata=number(0.0, 1.0, low_open=True))
    energy: float | None = field(default=None, metadata=number(0.0, 1.0, low_open=True))

    def __post_init__(self) -> None:
        _check_rank_rule(self)


def _check_rank_rule(config, required: bool = True) -> None:
    given = [k for k in ("rank", "rank_ratio", "energy") if getattr(config, k) is not None]
    if len(given) > 1 or (required and not given):
        raise RecipeError(
            "rank_ratio", config.rank_ratio, f"give exactly one of rank, rank_ratio, energy (got: {given or 'none'})"
        )


@checked
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
        embeddings: also factorize the word embeddings (ALBERT-style) with this rank rule; with it, the linears'
            rule may be left out to factorize the embeddings only.
    """

    targets: list[str] | None = field(default=None, metadata=text("a module-name pattern"))
    rank: int | None = field(default=None, metadata=count())
    rank_ratio: float | None = field(default=None, metadata=number(0.0, 1.0, low_open=True))
    energy: float | None = field(default=None, metadata=number(0.0, 1.0, low_open=True))
    merge: bool = False
    embeddings: EmbeddingRankConfig | None = None

    def __post_init__(self) -> None:
        _check_rank_rule(self, required=self.embeddings is None)

    @property
    def factorizes_linears(self) -> bool:
        return any(getattr(self, k) is not None for k in ("rank", "rank_ratio", "energy"))
