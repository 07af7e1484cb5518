"""Low-rank reparameterization: ``nn.Linear`` layers replaced by two thinner ones from a truncated SVD.

For ``W`` (``m x n``, out x in) with SVD ``W = U S V^T``, rank ``r`` keeps the ``r`` largest singular values:

    W ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T),    ||W - W_r||_F = sqrt(sum_{i > r} s_i^2)   (Eckart-Young)

so ``y = x W^T + b`` becomes ``y = (x A^T) B^T + b`` with ``A = sqrt(S_r) V_r^T`` (``r x n``) and
``B = U_r sqrt(S_r)`` (``m x r``): ``r (m + n)`` parameters and multiply-adds per token instead of ``m n``, a saving
only when ``r < m n / (m + n)``. In ONNX the layer is two MatMuls, so the saving is real in ONNX Runtime.

The factorized ranks are recorded in the model config (``config.lowrank_ranks``); :func:`load_lowrank` rebuilds
the structure and loads the weights. :func:`merge_lowrank` folds the factors back into one dense layer, after
which the model is an ordinary one again.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import logging

from ..modules import SettingError, replace_module
from ..tables import markdown_table

logger = logging.get_logger(__name__)

__all__ = [
    "LowRankLinear",
    "choose_rank",
    "factorize_linear",
    "factorize_model",
    "lowrank_report",
    "merge_lowrank",
]

CONFIG_KEY = "lowrank_ranks"


class LowRankLinear(nn.Module):
    """``y = second(first(x))``: ``first`` is ``n -> r`` without bias, ``second`` is ``r -> m`` with the bias."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.second = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    def merged_weight(self) -> torch.Tensor:
        return self.second.weight @ self.first.weight

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def break_even_rank(out_features: int, in_features: int) -> float:
    """The rank ``m n / (m + n)`` at which a factorization stops saving parameters and FLOPs."""
    return out_features * in_features / (out_features + in_features)


def choose_rank(
    singular_values: torch.Tensor,
    rank: int | None = None,
    rank_ratio: float | None = None,
    energy: float | None = None,
) -> int:
    """The rank from exactly one rule: a fixed ``rank``; ``rank_ratio`` of the full rank (rounded, at least 1); or
    the smallest rank whose singular values keep ``energy`` of ``sum s_i^2``."""
    given = [x is not None for x in (rank, rank_ratio, energy)]
    if sum(given) != 1:
        raise ValueError("give exactly one of rank, rank_ratio, energy")
    full = singular_values.numel()
    if rank is not None:
        return min(rank, full)
    if rank_ratio is not None:
        return max(1, min(full, round(rank_ratio * full)))
    squares = singular_values.double() ** 2
    kept = torch.cumsum(squares, 0) / squares.sum()
    return min(full, int(torch.searchsorted(kept, torch.tensor(energy, dtype=kept.dtype) - 1e-12)) + 1)


@torch.no_grad()
def factorize_linear(
    linear: nn.Linear,
    rank: int | None = None,
    rank_ratio: float | None = None,
    energy: float | None = None,
    require_savings: bool = True,
) -> LowRankLinear | None:
    """A :class:`LowRankLinear` from the truncated SVD of ``linear``; ``None`` (with the reason logged) when the
    chosen rank would not reduce parameters and FLOPs (``r >= m n / (m + n)``) and ``require_savings`` is set."""
    weight = linear.weight.detach()
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    r = choose_rank(s, rank, rank_ratio, energy)
    m, n = weight.shape
    if require_savings and r >= break_even_rank(m, n):
        logger.info(f"not factorized: rank {r} >= m n / (m + n) = {break_even_rank(m, n):.1f} for {m}x{n}")
        return None
    root = s[:r].sqrt()
    new = LowRankLinear(n, m, r, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
    new.first.weight.copy_((root[:, None] * vh[:r]).to(weight.dtype))
    new.second.weight.copy_((u[:, :r] * root[None, :]).to(weight.dtype))
    if linear.bias is not None:
        new.second.bias.copy_(linear.bias)
    return new


@dataclass
class LayerFactorization:
    """One row of the low-rank report."""

    name: str
    shape: tuple[int, int]
    rank: int | None
    parameters_before: int
    parameters_after: int
    flops_before: int  # multiply-adds per token
    flops_after: int
    reason: str = ""


def factorize_model(
    model: nn.Module,
    targets: list[str],
    rank: int | None = None,
    rank_ratio: float | None = None,
    energy: float | None = None,
) -> list[LayerFactorization]:
    """Factorize every ``nn.Linear`` whose name matches a ``targets`` pattern, in place; return the report rows.

    The ranks go to ``model.config.lowrank_ranks`` so that :func:`load_lowrank` can rebuild the model. A pattern
    that matches no linear raises :class:`~hf_compress.modules.SettingError`.
    """
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    names = [n for n in linears if any(fnmatch.fnmatchcase(n, p) for p in targets)]
    for pattern in targets:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in linears):
            raise SettingError(
                "targets",
                pattern,
                f"matches no nn.Linear (names look like: {', '.join(list(linears)[:3])}, ...)",
            )
    rows, ranks = [], dict(getattr(model.config, CONFIG_KEY, None) or {})
    for name in names:
        linear = linears[name]
        m, n = linear.weight.shape
        new = factorize_linear(linear, rank, rank_ratio, energy)
        params_before = m * n + (m if linear.bias is not None else 0)
        if new is None:
            rows.append(
                LayerFactorization(
                    name,
                    (m, n),
                    None,
                    params_before,
                    params_before,
                    m * n,
                    m * n,
                    f"rank would be >= m n / (m + n) = {break_even_rank(m, n):.0f}",
                )
            )
            continue
        replace_module(model, name, new)
        ranks[name] = new.rank
        r = new.rank
        rows.append(
            LayerFactorization(
                name, (m, n), r, params_before, r * (m + n) + (params_before - m * n), m * n, r * (m + n)
            )
        )
    if ranks:
        setattr(model.config, CONFIG_KEY, ranks)
    return rows


def lowrank_report(rows: list[LayerFactorization]) -> dict:
    """Per layer and total: rank, parameters and multiply-adds per token before and after."""
    total = {
        key: sum(getattr(r, key) for r in rows)
        for key in ("parameters_before", "parameters_after", "flops_before", "flops_after")
    }
    return {"layers": [vars(r) | {"shape": list(r.shape)} for r in rows], "total": total}


def lowrank_table(report: dict) -> str:
    """The report as a Markdown table."""
    rows = [
        (
            r["name"],
            f"{r['shape'][0]}x{r['shape'][1]}",
            r["rank"] or f"- ({r['reason']})",
            f"{r['parameters_before']:,}",
            f"{r['parameters_after']:,}",
            f"{r['flops_before']:,}",
            f"{r['flops_after']:,}",
        )
        for r in report["layers"]
    ]
    t = report["total"]
    rows.append(
        (
            "total",
            "",
            "",
            *(f"{t[k]:,}" for k in ("parameters_before", "parameters_after", "flops_before", "flops_after")),
        )
    )
    header = ("layer", "shape", "rank", "params before", "params after", "MACs/token before", "after")
    return markdown_table(header, rows)


@torch.no_grad()
def merge_lowrank(model: nn.Module) -> int:
    """Fold every :class:`LowRankLinear` back into one ``nn.Linear`` (``W = B A``), in place; return how many."""
    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LowRankLinear):
            dense = nn.Linear(
                module.in_features,
                module.out_features,
                bias=module.second.bias is not None,
                device=module.first.weight.device,
                dtype=module.first.weight.dtype,
            )
            dense.weight.copy_(module.merged_weight())
            if module.second.bias is not None:
                dense.bias.copy_(module.second.bias)
            replace_module(model, name, dense)
            merged += 1
    if merged and hasattr(model, "config") and hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)
    return merged


def apply_lowrank_structure(model: nn.Module, ranks: dict[str, int]) -> None:
    """Replace the named linears by (uninitialised) :class:`LowRankLinear` of the given ranks, to load weights."""
    for name, rank in ranks.items():
        linear = model.get_submodule(name)
        m, n = linear.weight.shape
        replace_module(
            model,
            name,
            LowRankLinear(
                n, m, rank, bias=linear.bias is not None, device=linear.weight.device, dtype=linear.weight.dtype
            ),
        )
    setattr(model.config, CONFIG_KEY, dict(ranks))


def is_factorized(model: nn.Module) -> bool:
    """Whether ``model`` has :class:`LowRankLinear` layers."""
    return any(isinstance(m, LowRankLinear) for m in model.modules())


def default_targets(model: nn.Module) -> list[str]:
    """The FFN linears of every transformer layer by exact name, from the architecture description (BERT:
    ``intermediate.dense`` and ``output.dense``)."""
    from ..structures import find_structures

    groups, reason = find_structures(model, "neurons")
    if groups is None:
        raise SettingError("targets", None, f"no FFN linears found in {type(model).__name__} ({reason}): give targets")
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(s.owner)] for g in groups for s in g.slices]
