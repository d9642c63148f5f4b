"""Where a model runs and in which precision: resolved once, here, for scoring, adapt and train.

Library code receives a ``torch.device`` and a ``torch.dtype`` from these two functions and
never picks a device on its own (no ``.cuda()``), so every command agrees on what ``auto`` means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError, ModelError
from .vocabulary import DEVICE_PATTERN, DEVICES_TEXT, canonical_dtype

if TYPE_CHECKING:
    import torch


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` into a ``torch.device``.

    ``"auto"`` picks CUDA when available, else Apple's MPS, else the CPU (the order of
    sentence-transformers and transformers). Asking for a device that is not there is a
    :class:`ModelError`, raised before any model is loaded; a name that is no device is a
    :class:`ConfigError`.

    Example::

        resolve_device("cpu")  # device(type='cpu')
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    name = (device or "auto").strip().lower()
    if not DEVICE_PATTERN.match(name):
        raise ConfigError(f"unknown device {device!r}; valid: {DEVICES_TEXT}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r} was asked for but CUDA is not available on this machine")
        index = int(name.split(":")[1]) if ":" in name else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise ModelError(f"device {device!r} was asked for but only {count} CUDA device(s) exist")
        return torch.device("cuda", index)
    if name == "mps" and not _mps_available():
        raise ModelError("device 'mps' was asked for but MPS is not available on this machine")
    return torch.device(name)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """Turn a dtype name (``"float32"``, ``"bf16"``…), ``"auto"`` or a ``torch.dtype`` into a ``torch.dtype``.

    ``None`` keeps the default (float32 for a checkpoint; the current dtype of a model in
    memory). ``"auto"`` is bfloat16 on a CUDA device that supports it, else float32. float16 is
    refused on the CPU, where it is slow or unsupported; bfloat16 is allowed everywhere.

    Example::

        resolve_dtype("bf16", torch.device("cuda"))  # torch.bfloat16
    """
    import torch

    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        name = canonical_dtype(str(dtype).removeprefix("torch."))
    elif str(dtype).strip().lower() == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        name = "bfloat16" if bf16 else "float32"
    else:
        name = canonical_dtype(str(dtype))
    if name == "float16" and device.type == "cpu":
        raise ConfigError("dtype float16 is not supported on the CPU; use float32 or bfloat16")
    return getattr(torch, name)


__all__ = ["resolve_device", "resolve_dtype"]
