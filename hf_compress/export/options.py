"""What an export does, settled once: the recipe's ``export`` block with the caller's overrides over it, the int8
route that block names (the route object, resolved here), and the folder an export goes to by default.

Every door into export (``hf-compress export``, :meth:`CompressionTrainer.export`, ``hf-compress train`` through
the trainer, :func:`hf_compress.export.export` itself) goes through :func:`export_plan` and
:func:`default_export_dir`; nothing after them looks a route up by name.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from ..configs import ExportConfig
from ..int8_routes import Int8Route, resolve_int8_route

__all__ = ["ExportPlan", "default_export_dir", "export_plan"]


@dataclass(frozen=True)
class ExportPlan:
    """An export's settings and the int8 route they name (``None``: fp32 only)."""

    config: ExportConfig
    route: Int8Route | None

    @property
    def folder_name(self) -> str:
        """``onnx`` for fp32, ``onnx-int8-<route>`` for int8."""
        return "onnx" if self.route is None else f"onnx-int8-{self.route.name}"


def export_plan(
    base: ExportConfig | None,
    *,
    int8: str | None = None,
    max_metric_drop: float | None = None,
    exporter: str | None = None,
) -> ExportPlan:
    """``base`` (a recipe's ``export`` block; default :class:`ExportConfig`) with the values given here over it, and
    its route: :class:`~hf_compress.checks.RecipeError` naming ``export.int8`` when no route has that name."""
    given = {"int8": int8, "max_metric_drop": max_metric_drop, "exporter": exporter}
    overrides = {k: v for k, v in given.items() if v is not None}
    config = base or ExportConfig()
    if overrides:  # (a config without overrides is used as given, not checked again)
        config = dataclasses.replace(config, **overrides)
    return ExportPlan(config, resolve_int8_route(config.int8))


def default_export_dir(parent: str | os.PathLike, plan: ExportPlan) -> str:
    """Where an export goes when no folder is given: ``parent/onnx`` or ``parent/onnx-int8-<route>``."""
    return str(Path(parent) / plan.folder_name)
