"""What ``export.int8`` may name: the :class:`Int8Route` interface and the registry of routes.

A route turns the fp32 ONNX export into the int8 model. The export pipeline ships ``dynamic`` and ``static``
(:mod:`hf_compress.export.int8`); a technique may register its own (``qat``: :mod:`hf_compress.quantization.route`).
The recipe and the export entry turn the name into the route object with :func:`resolve_int8_route`, the one
lookup and the one error message; everything after that is handed the object. Like the technique registry
(:mod:`~hf_compress.technique`), this module sits below the recipe and the export pipeline, so both can read it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checks import RecipeError
from .int8_formats import resolve_reduce_range

if TYPE_CHECKING:
    from .configs import CalibrationConfig

__all__ = ["INT8_ROUTES", "Int8Route", "register_int8_route", "resolve_int8_route"]


class Int8Route:
    """One way to make the int8 model from the fp32 ONNX export. Register an instance in :data:`INT8_ROUTES`
    (:func:`register_int8_route`); ``export.int8`` names it and
    :func:`resolve_int8_route` turns that name into the route, once."""

    #: The value of ``export.int8``.
    name: str = ""
    #: How the model card says what the route did.
    description: str = ""
    #: Whether the route quantizes a graph fused by :func:`~hf_compress.export.fusion.fuse_transformer_graph`
    #: (``export.fuse``; ``quantize`` is then told ``fused``). QDQ routes keep the exported graph: ONNX
    #: Runtime fuses what it can around the Q/DQ pairs when it loads the model.
    fuses_graph: bool = False

    @property
    def card_tags(self) -> list[str]:
        """The model-card tags of an export made this way."""
        return ["int8", f"quantization-{self.name}"]

    def check_recipe(self, recipe: Any) -> None:
        """Raise :class:`~hf_compress.configs.RecipeError` when the recipe cannot use this route."""

    def check_inputs(self, artifacts: dict[str, Any], calibration_dataset) -> None:
        """Raise ``ValueError`` before any export work when the model or data cannot go this way."""

    def check_saved(self, folder: str | os.PathLike) -> None:
        """Raise when a model folder (``hf-compress export``) lacks what this route needs beside the weights."""

    def targets(self, model, artifacts: dict[str, Any]) -> list[str]:
        """The linears to quantize: by default every ``nn.Linear`` inside the transformer layers."""
        from .targets import match_linears

        return list(match_linears(model, None))

    def trained_reduce_range(self, artifacts: dict[str, Any]) -> bool | None:
        """The weight range training used, if the route follows training (``None``: see :meth:`weight_range`)."""
        return None

    def weight_range(
        self, requested: bool | str, trained: bool | None, kernel_saturates: bool
    ) -> tuple[bool, str | None]:
        """The ``reduce_range`` to quantize with (7-bit weights) and a warning, if any: ``requested`` (``export.
        reduce_range``; ``auto``: 7-bit exactly when this machine's kernel saturates). ``trained``: what
        :meth:`trained_reduce_range` found."""
        return (kernel_saturates if requested == "auto" else resolve_reduce_range(requested)), None

    def embedding_tables(self, model, artifacts: dict[str, Any], embeddings: str) -> dict[str, str]:
        """The embedding tables (initializer -> format) to store quantized, for ``export.embeddings`` (``int8``,
        ``int4`` or ``fp32``): the word embeddings in that format, every other embedding table (positions, token
        types) int8 per row."""
        if embeddings == "fp32" or not hasattr(model, "get_input_embeddings"):
            return {}
        from torch import nn

        table = model.get_input_embeddings()  # an nn.Embedding, or factorized: its narrow nn.Embedding is the table
        words = {id(m) for m in table.modules() if isinstance(m, nn.Embedding)}
        return {
            f"{name}.weight": embeddings if id(module) in words else "int8"
            for name, module in model.named_modules()
            if isinstance(module, nn.Embedding)
        }

    def quantize(
        self,
        fp32_dir: str,
        out_dir: str,
        fused: bool,
        nodes: dict,
        reduce_range: bool,
        artifacts,
        calibration_dataset,
        calibration: CalibrationConfig,
    ) -> tuple[Path, dict[str, Any]]:
        """Write the int8 model of ``fp32_dir`` into ``out_dir``; return its path and details for the report.

        ``fused``: ``fp32_dir`` holds the graph fused by
        :func:`~hf_compress.export.fusion.fuse_transformer_graph` (only for routes with ``fuses_graph``); ``nodes``:
        module name -> the (MatMul or Attention node, its input tensor) of each of its calls
        (:func:`~hf_compress.export.graph.matmul_calls`)."""
        raise NotImplementedError


#: The int8 routes by name (``export.int8``); adding one is one entry (:func:`register_int8_route`).
INT8_ROUTES: dict[str, Int8Route] = {}


def register_int8_route(route: Int8Route) -> Int8Route:
    """Make ``route`` available as ``export.int8: <route.name>``."""
    INT8_ROUTES[route.name] = route
    return route


def resolve_int8_route(name: str) -> Int8Route | None:
    """The route ``export.int8`` names (``None`` for ``none``); :class:`RecipeError` naming ``int8``, the value and
    the registered routes when there is no such route."""
    if name == "none":
        return None
    route = INT8_ROUTES.get(name)
    if route is None:
        raise RecipeError("int8", name, f"allowed: none, {', '.join(INT8_ROUTES)}")
    return route
