"""Model checkpoints that load on either backend and any device."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from align_mamba.core.atomic import atomic_write_bytes
from align_mamba.core.backends import resolve_backend
from align_mamba.core.params import from_mapping
from align_mamba.recall.config import ModelConfig
from align_mamba.core.errors import ConfigError, DataIntegrityError
from align_mamba.recall.models import RecallModel, build_model


def atomic_torch_save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_model(path: Path, model: RecallModel, state_dict: dict, meta: dict[str, Any]) -> None:
    """The final checkpoint: weights (fp32, CPU), the model config, and what produced them."""
    payload = {
        "model_config": dict(model.config.__dict__),
        "state_dict": {k: v.detach().to("cpu", torch.float32) for k, v in state_dict.items()},
        "meta": meta,
    }
    atomic_torch_save(path, payload)


def load_model(path: Path, backend: str, device: torch.device) -> tuple[RecallModel, dict[str, Any]]:
    """Rebuild a saved model on `backend` (auto | kernels | reference) and `device`.

    Returns the model in eval mode and the checkpoint's meta, with the backend that now runs it.
    """
    if not Path(path).is_file():
        raise DataIntegrityError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        config = from_mapping(ModelConfig, payload["model_config"], "model_config")
        state_dict, meta = payload["state_dict"], payload["meta"]
    except (ConfigError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError, IndexError, EOFError) as err:
        raise DataIntegrityError(f"{path} is not an align-mamba checkpoint ({type(err).__name__}: {err})") from None
    resolved = resolve_backend(backend, device, config.mixer)
    model = build_model(config, resolved)
    model.load_state_dict(state_dict)
    return model.to(device).eval(), meta
