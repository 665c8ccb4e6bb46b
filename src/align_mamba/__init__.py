"""align-mamba: capacity cliffs of selective state-space models on associative recall."""

__version__ = "0.1.0"
