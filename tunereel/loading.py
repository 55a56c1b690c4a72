"""Loading model weights without ever downloading: local folders, or hub ids already in the local cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["ModelMissing", "load_offline", "pick_device", "pick_dtype"]


class ModelMissing(RuntimeError):
    """The weights are not on this machine. The message says how to get them."""


def _how_to_get(source: str) -> str:
    if Path(source).is_absolute() or source.startswith("."):
        if Path(source).name.startswith("tiny-"):
            return f"model folder {source} does not exist: build the tiny models with `python -m tunereel.tiny --models-dir {Path(source).parent}` (or `make models`)"
        return f"model folder {source} does not exist or is incomplete: point the preset at a folder saved with save_pretrained"
    from tunereel.catalog import missing_weights_message  # the table's own download command for this repository

    return missing_weights_message(source)


def load_offline(loader: Callable[..., Any], source: str, **kwargs: Any) -> Any:
    """Call a `from_pretrained`-style loader on a folder or hub id, local files only."""
    if (Path(source).is_absolute() or source.startswith(".")) and not Path(source).is_dir():
        raise ModelMissing(_how_to_get(source))
    try:
        return loader(source, local_files_only=True, **kwargs)
    except (OSError, ValueError, EnvironmentError) as error:
        raise ModelMissing(f"{_how_to_get(source)} ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from error


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    # Half precision on CPU is slow or unsupported for several kernels; the CPU always runs float32.
    if device.type == "cpu":
        return torch.float32
    return getattr(torch, name)
