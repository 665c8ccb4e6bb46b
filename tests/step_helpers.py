"""What the training-step tests share: a tiny MQAR dataset and one cell of each layout."""

from __future__ import annotations

from pathlib import Path

from align_mamba.recall.config import ModelConfig
from align_mamba.recall.mqar import MQARConfig
from align_mamba.recall.storage import write_mqar

CELLS = {
    "decoder": ModelConfig(variant="mamba2", d_model=32, n_layers=1, d_state=8, headdim=16, chunk_size=8),
    "seq2seq": ModelConfig(
        variant="hybrid",
        hybrid_positions=(0,),
        d_model=32,
        n_layers=1,
        encoder_layers=1,
        d_state=8,
        headdim=16,
        chunk_size=8,
        n_heads=2,
    ),
}


def write_tiny_mqar(folder: Path) -> Path:
    """6 pairs, 40 tokens, 64/16/16 examples: enough for a step's structure, not for learning."""
    return write_mqar(
        MQARConfig(num_pairs=6, seq_len=40, num_queries=4, train_size=64, val_size=16, test_size=16, seed=0),
        folder / "np6",
    )
