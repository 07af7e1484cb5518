"""Quantization-aware training with the ranges ONNX Runtime's int8 kernels use.

``config.py`` is the recipe block, ``fake_quant.py`` and ``embeddings.py`` the torch mechanics (fake-quant linears
and embeddings, observers), ``technique.py`` the callback that maps training onto them, ``route.py`` the ``qat``
int8 route of the export (registered here). The int8 formats both halves use (weight levels, the kernel probe,
table formats) are :mod:`hf_compress.int8_formats`.
"""

from .config import QuantizationConfig
from .fake_quant import (
    FakeQuantLinear,
    Int8Kernel,
    QATRanges,
    activation_qparams,
    activation_ranges,
    convert_to_qat,
    int8_kernel,
    load_qat_state_dict,
    qat_modules,
    qat_phase,
    qat_reduce_range,
    qat_state_dict,
    remove_qat,
    resolve_reduce_range,
    saturating_matmul,
    set_qat_phase,
    synchronize_observers,
    weight_qmax,
    weight_scale,
)
from .route import QATRoute
from .technique import QATCallback

__all__ = [
    "FakeQuantLinear",
    "Int8Kernel",
    "QATCallback",
    "QATRanges",
    "QATRoute",
    "QuantizationConfig",
    "activation_qparams",
    "activation_ranges",
    "convert_to_qat",
    "int8_kernel",
    "load_qat_state_dict",
    "qat_modules",
    "qat_phase",
    "qat_reduce_range",
    "qat_state_dict",
    "remove_qat",
    "resolve_reduce_range",
    "saturating_matmul",
    "set_qat_phase",
    "synchronize_observers",
    "weight_qmax",
    "weight_scale",
]
