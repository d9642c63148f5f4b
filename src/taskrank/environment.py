"""The versions every output records (results folders, model cards, adapt and train records)."""

from __future__ import annotations

import platform


def versions() -> dict[str, str]:
    """taskrank's, torch's, transformers' and Python's versions, and the platform.

    Imports torch and transformers: call it where a model is already loaded or about to be.
    """
    import torch
    import transformers

    from . import __version__

    return {
        "taskrank": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


__all__ = ["versions"]
