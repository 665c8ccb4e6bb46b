"""Byte-level secret-span datasets: carrier files with planted secrets, decoys and exact byte labels.

See `generate` for how a file is drawn (with a worked example), `formats` for the secret formats
and their published regexes, `decoys` for the look-alikes, `kinds` for the carrier files, `hard`
for the hard cases (split, encoded, escaped and minified secrets) and `storage` for the on-disk
layout and the verified loaders.
"""

from align_mamba.secrets.data.config import SECRET_SPLITS, TEST_SPLITS, SecretDataConfig
from align_mamba.secrets.data.decoys import DECOY_KINDS, DECOYS, DecoyKind
from align_mamba.secrets.data.formats import FORMAT_NAMES, FORMATS, SecretFormat, github_checksum, secret_span
from align_mamba.secrets.data.generate import draw_file, generate_split
from align_mamba.secrets.data.hard import HARD_CASE_NAMES, HARD_CASES
from align_mamba.secrets.data.kinds import CARRIER_KINDS, CARRIERS
from align_mamba.secrets.data.layout import decile_window
from align_mamba.secrets.data.storage import (load_secret_split, load_split_mask, read_file_bytes,
                                              read_secret_manifest, write_secret_dataset)

__all__ = [
    "CARRIERS",
    "CARRIER_KINDS",
    "DECOYS",
    "DECOY_KINDS",
    "FORMATS",
    "FORMAT_NAMES",
    "HARD_CASES",
    "HARD_CASE_NAMES",
    "SECRET_SPLITS",
    "TEST_SPLITS",
    "DecoyKind",
    "SecretDataConfig",
    "SecretFormat",
    "decile_window",
    "draw_file",
    "generate_split",
    "github_checksum",
    "load_secret_split",
    "load_split_mask",
    "read_file_bytes",
    "read_secret_manifest",
    "secret_span",
    "write_secret_dataset",
]
