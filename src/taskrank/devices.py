"""Where a model runs and in which precision: resolved once, here, for scoring, adapt and train.

Library code receives a ``torch.device`` and a ``torch.dtype`` from these two functions and
never picks a device on its own (no ``.cuda()``), so every command agrees on what ``auto`` means.
A dtype of ``auto`` is bfloat16 where the hardware computes in it natively (a GPU that supports
it, a CPU with AMX or AVX-512 BF16: detected by :func:`cpu_bf16_feature`) and float32 elsewhere;
:func:`choose_dtype` also says why, for ``environment.json`` and the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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


#: The CPU features that make bfloat16 matrix products native, in the order ``auto`` prefers them:
#: AMX tiles (Sapphire Rapids and later Xeons) and AVX-512 BF16 (Cooper Lake, Zen 4). Without
#: either, oneDNN emulates bfloat16 with float32 instructions and conversions: slower than float32.
CPU_BF16_FEATURES: tuple[str, ...] = ("amx_bf16", "avx512_bf16")
#: Where the Linux kernel lists the CPU's flags (the fallback detection, for a torch without
#: capability queries); a module constant so that tests can point it at a fake file.
PROC_CPUINFO = Path("/proc/cpuinfo")


def _torch_cpu_flags() -> dict[str, bool] | None:
    """The bf16 features as torch (and so oneDNN) sees them; ``None`` for a torch too old to say.

    ``torch.cpu.get_capabilities()`` where torch has it, else the private ``_is_amx_tile_supported``
    and ``_is_avx512_bf16_supported`` of older releases (looked up with ``getattr``): both read
    CPUID through cpuinfo, as torch's own kernel dispatch does."""
    import torch

    cpu = getattr(torch, "cpu", None)
    capabilities = getattr(cpu, "get_capabilities", None)
    if callable(capabilities):
        found = capabilities()
        return {name: bool(found.get(name, False)) for name in CPU_BF16_FEATURES}
    amx = getattr(cpu, "_is_amx_tile_supported", None)
    avx = getattr(cpu, "_is_avx512_bf16_supported", None)
    if callable(amx) and callable(avx):  # every AMX CPU has AMX-BF16 with its tiles
        return {"amx_bf16": bool(amx()), "avx512_bf16": bool(avx())}
    return None


def _cpuinfo_flags() -> dict[str, bool]:
    """The bf16 features in ``/proc/cpuinfo``'s flags (Linux); none where the file is not there."""
    try:
        text = PROC_CPUINFO.read_text(encoding="ascii", errors="replace")
    except OSError:
        return dict.fromkeys(CPU_BF16_FEATURES, False)  # not Linux: nothing known, so no bf16
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
            break
    return {name: name in flags for name in CPU_BF16_FEATURES}


def _amx_usable() -> bool:
    """Whether this process may use the AMX tiles: Linux hands out their state only on request
    (``arch_prctl(ARCH_REQ_XCOMP_PERM)``), which ``torch.cpu._init_amx`` makes, as oneDNN does
    before its AMX kernels. A CPU flag alone says nothing about the kernel's consent."""
    import torch

    init = getattr(getattr(torch, "cpu", None), "_init_amx", None)
    return bool(init()) if callable(init) else True  # an older torch: the CPUID flag is all there is


def cpu_bf16_feature() -> str | None:
    """The feature that gives this machine's CPU native bfloat16 matrix products, ``"amx_bf16"``
    or ``"avx512_bf16"``, or ``None`` when it has neither (bfloat16 is then emulated, and slower
    than float32).

    Detected, not guessed: from what torch reports (the CPUID reading oneDNN's dispatch relies
    on), with AMX also granted by the operating system; from ``/proc/cpuinfo`` only where torch
    cannot say. Non-x86 CPUs (ARM, Apple silicon) give ``None``: ``auto`` keeps float32 there.

    Example::

        cpu_bf16_feature()  # "amx_bf16" on a Sapphire Rapids Xeon, None on a Skylake one
    """
    flags = _torch_cpu_flags()
    if flags is None:
        flags = _cpuinfo_flags()
    if flags["amx_bf16"] and _amx_usable():
        return "amx_bf16"
    return "avx512_bf16" if flags["avx512_bf16"] else None


def _cuda_bf16() -> bool:
    """Whether the GPU computes in bfloat16 natively (Ampere and later), not by emulation."""
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no emulation and no such argument
        return bool(torch.cuda.is_bf16_supported())


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved dtype and why it was chosen (what ``environment.json`` and the report say).

    ``name`` is the torch name (``"bfloat16"``); ``reason`` is ``"the default"``, ``"as asked"``
    or ``"auto: …"`` with the capability that decided."""

    name: str
    reason: str

    @property
    def auto(self) -> bool:
        """Whether ``auto`` chose it."""
        return self.reason.startswith("auto")

    def describe(self) -> str:
        """``"bfloat16 (auto: the CPU has amx_bf16)"``."""
        return f"{self.name} ({self.reason})"


def _auto_choice(device: torch.device, training: bool) -> DtypeChoice:
    if device.type == "cuda":
        if _cuda_bf16():
            return DtypeChoice("bfloat16", "auto: the GPU supports bfloat16")
        return DtypeChoice("float32", "auto: the GPU has no native bfloat16")
    if device.type != "cpu":
        return DtypeChoice("float32", f"auto: float32 on {device.type}")
    if training:
        return DtypeChoice("float32", "auto: training uses bfloat16 on a GPU only")
    feature = cpu_bf16_feature()
    if feature is not None:
        return DtypeChoice("bfloat16", f"auto: the CPU has {feature}")
    return DtypeChoice(
        "float32", "auto: the CPU has neither AMX nor avx512_bf16, where bfloat16 is emulated and slower"
    )


def choose_dtype(
    dtype: str | torch.dtype | None, device: torch.device | None = None, *, training: bool = False
) -> DtypeChoice:
    """The dtype ``dtype`` stands for on ``device`` (the CPU when ``None``), and why: see
    :func:`resolve_dtype`.

    ``None`` is float32, ``"the default"`` (a checkpoint is loaded in float32 unless told
    otherwise).

    Example::

        choose_dtype("auto", torch.device("cpu")).describe()
        # "bfloat16 (auto: the CPU has amx_bf16)" on a Sapphire Rapids Xeon
    """
    import torch

    device = device if device is not None else torch.device("cpu")
    if dtype is None:
        return DtypeChoice("float32", "the default")
    if isinstance(dtype, torch.dtype):
        choice = DtypeChoice(canonical_dtype(str(dtype).removeprefix("torch.")), "as asked")
    elif str(dtype).strip().lower() == "auto":
        choice = _auto_choice(device, training)
    else:
        choice = DtypeChoice(canonical_dtype(str(dtype)), "as asked")
    if choice.name == "float16" and device.type == "cpu":
        raise ConfigError("dtype float16 is not supported on the CPU; use float32 or bfloat16")
    return choice


def resolve_dtype(
    dtype: str | torch.dtype | None, device: torch.device, *, training: bool = False
) -> torch.dtype | None:
    """Turn a dtype name (``"float32"``, ``"bf16"``…), ``"auto"`` or a ``torch.dtype`` into a ``torch.dtype``.

    ``None`` keeps the default (float32 for a checkpoint; the current dtype of a model in
    memory). ``"auto"`` is bfloat16 where it is native: on a CUDA device that supports it, and
    on a CPU with AMX or AVX-512 BF16 (:func:`cpu_bf16_feature`); float32 elsewhere (MPS, ARM,
    older x86, where bfloat16 is emulated and slower). With ``training=True`` (the precision
    of ``adapt`` and ``train``'s autocast) ``auto`` considers GPUs only. float16 is refused on
    the CPU, where it is slow or unsupported; bfloat16 is allowed everywhere.
    :func:`choose_dtype` also says why.

    Example::

        resolve_dtype("bf16", torch.device("cuda"))  # torch.bfloat16
    """
    import torch

    if dtype is None:
        return None
    return getattr(torch, choose_dtype(dtype, device, training=training).name)


__all__ = [
    "CPU_BF16_FEATURES",
    "DtypeChoice",
    "choose_dtype",
    "cpu_bf16_feature",
    "resolve_device",
    "resolve_dtype",
]
