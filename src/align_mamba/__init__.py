"""align-mamba: capacity cliffs of selective state-space models on associative recall."""

from align_mamba import kernel_cache

__version__ = "0.1.0"

# Before any stage imports torch or Triton: they read their cache folders once (kernel_cache's doc).
kernel_cache.configure()
