"""MQAR model checkpoints (core.checkpoint's format) that load on either backend and any device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from align_mamba.core.backends import resolve_backend
from align_mamba.core.checkpoint import load_checkpoint, load_weights, require_finite, save_checkpoint
from align_mamba.core.errors import ConfigError, DataIntegrityError
from align_mamba.core.params import from_mapping
from align_mamba.recall.config import ModelConfig
from align_mamba.recall.models import RecallModel, build_model


def save_model(path: Path, model: RecallModel, state_dict: dict, meta: dict[str, Any]) -> None:
    """The final checkpoint: weights (fp32, CPU), the model config, and what produced them.

    Refuses (NonFiniteLossError, nothing written) unless every weight is finite."""
    weights = {k: v.detach().to("cpu", torch.float32) for k, v in state_dict.items()}
    require_finite(weights, f"{meta.get('cell', 'cell')} model.pt")
    save_checkpoint(path, {"model_config": dict(model.config.__dict__), "state_dict": weights, "meta": meta})


def load_model(path: Path, backend: str, device: torch.device) -> tuple[RecallModel, dict[str, Any]]:
    """Rebuild a saved model on `backend` (auto | kernels | reference) and `device`.

    Returns the model in eval mode and the checkpoint's meta, with the backend that now runs it.
    A missing, corrupt or mismatched file is one DataIntegrityError line naming it.
    """
    payload = load_checkpoint(path, "align-mamba checkpoint")
    try:
        config = from_mapping(ModelConfig, payload["model_config"], "model_config")
        state_dict, meta = payload["state_dict"], payload["meta"]
    except (ConfigError, KeyError, TypeError) as err:
        raise DataIntegrityError(f"{path} is not an align-mamba checkpoint ({type(err).__name__}: {err})") from None
    resolved = resolve_backend(backend, device, config.mixer)
    model = build_model(config, resolved)
    load_weights(model, state_dict, path)
    return model.to(device).eval(), meta
