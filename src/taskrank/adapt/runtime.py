"""What ``adapt`` and ``train_ranker`` share while they run: seeds and the progress switch.

Every random choice of a training step is drawn from generators seeded with
:func:`derived_seed` of ``(seed, step, …)``, inside :func:`local_rng`, so a run is repeatable
and leaves the caller's global RNG state alone.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import numpy as np
import torch

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def local_rng(device: torch.device) -> Iterator[None]:
    """Run a block with torch's global RNGs forked: seeding inside it leaves the caller's state alone."""
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (``(seed, step, micro-batch)``)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


@contextlib.contextmanager
def hf_progress_bars(enabled: bool) -> Iterator[None]:
    """Hide transformers' own progress bars (loading, writing shards) inside a block when ``enabled``
    is false, and put the switch back as it was afterwards."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if was and not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not enabled:
            hf_logging.enable_progress_bar()


def follows_progress(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function with a ``progress`` argument so that transformers' bars follow it too."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with hf_progress_bars(bool(bound.arguments["progress"])):
            return fn(*args, **kwargs)

    return wrapper


__all__ = ["derived_seed", "follows_progress", "hf_progress_bars", "local_rng"]
