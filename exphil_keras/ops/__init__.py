"""Backend-specific kernels behind backend-agnostic functions."""

from exphil_keras.ops.compiled import compile_function, device_kind
from exphil_keras.ops.selective_scan import (
    selective_scan,
    selective_scan_ref,
    selective_scan_step,
)

__all__ = [
    "compile_function",
    "device_kind",
    "selective_scan",
    "selective_scan_ref",
    "selective_scan_step",
]
