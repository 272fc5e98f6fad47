"""Reading an extractor's released checkpoint into a state dict, with one message for a file that is not one."""
from __future__ import annotations

from pathlib import Path

import torch

from evaluators.imagenet.errors import ImageNetEvalError


def read_state_dict(path, what: str) -> dict:
    """The tensors of a `.safetensors` file or a `torch.load(weights_only=True)` pickle; `what` names the network
    in the error (e.g. "DINOv2 ViT-L/14")."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:       # noqa: BLE001 - torch / safetensors raise many kinds for a file that is not a checkpoint
        raise ImageNetEvalError(f"{path} is not a readable {what} checkpoint: {str(error).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise ImageNetEvalError(f"{path} is not a {what} checkpoint: it holds a {type(state).__name__}, not a state dict")
    return state
