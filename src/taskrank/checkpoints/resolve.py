"""Turning a checkpoint reference (directory or hub id) into a local directory."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError
from .layout import HUB_FILES


def looks_local(ref: str) -> bool:
    """Whether ``ref`` can only be a path, never a hub id (``org/name``): it starts with ``.``,
    ``/`` or ``~``, has more than one ``/``, or holds a backslash.

    >>> looks_local("./models/ranker"), looks_local("castorini/monot5-base-msmarco")
    (True, False)
    """
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref


def local_checkpoint(ref: str | os.PathLike[str]) -> Path | None:
    """The directory a checkpoint reference names, or ``None`` when it is a hub id.

    A reference that exists must be a directory; one that does not exist must not look like a
    path (:func:`looks_local`). Either failure is a :class:`CheckpointError`. Nothing is fetched.

    Example::

        local_checkpoint("castorini/monot5-base-msmarco")  # None: a hub id
    """
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"checkpoint {text!r} is a file; expected a model directory or a hub id")
        return path
    if looks_local(text):
        raise CheckpointError(f"checkpoint directory {text!r} does not exist")
    return None


def resolve_checkpoint(ref: str | os.PathLike[str], revision: str | None = None) -> Path:
    """Return the local directory of a checkpoint given as a directory or a hub id.

    Hub ids are fetched into (or found in) the Hugging Face cache; with ``HF_HUB_OFFLINE=1``
    only the cache is used. Only one weight format is fetched (safetensors when the repository
    has it, else ``.bin``).

    Example::

        path = resolve_checkpoint("castorini/monot5-base-msmarco")
    """
    text = os.fspath(ref)
    path = local_checkpoint(text)
    if path is not None:
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        snap = Path(snapshot_download(text, revision=revision, allow_patterns=[*HUB_FILES, "*.safetensors"]))
        if not any(snap.glob("*.safetensors")):
            snap = Path(snapshot_download(text, revision=revision, allow_patterns=[*HUB_FILES, "*.bin"]))
    except HFValidationError as exc:
        raise CheckpointError(
            f"checkpoint {text!r} is neither an existing directory nor a valid hub id"
        ) from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise CheckpointError(
            f"checkpoint {text!r} is not a local directory and is not in the Hugging Face cache, "
            "and the hub cannot be reached (offline or HF_HUB_OFFLINE=1); download it once with network "
            "access or pass a local directory"
        ) from exc
    except GatedRepoError as exc:
        raise CheckpointError(f"hub repository {text!r} is gated: log in with `hf auth login` first") from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointError(f"hub repository {text!r} not found (or private)") from exc
    except RevisionNotFoundError as exc:
        raise CheckpointError(f"revision {revision!r} of hub repository {text!r} not found") from exc
    except OSError as exc:  # network failures surface as OSError subclasses (HTTP, connection)
        raise CheckpointError(f"could not fetch checkpoint {text!r} from the hub: {exc}") from exc
    return snap
