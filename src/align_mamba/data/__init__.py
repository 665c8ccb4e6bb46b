"""Synthetic recall data: MQAR generation, compact storage and verified loading."""

from align_mamba.data.mqar import (
    BOS,
    EOS,
    FILLER_RANGE,
    IGNORE_INDEX,
    KEY_RANGE,
    LAYOUTS,
    NUM_KEYS,
    PAD,
    RESERVED_RANGE,
    SEP,
    SPLITS,
    VALUE_RANGE,
    VOCAB_SIZE,
    MQARConfig,
    generate_mqar,
)
from align_mamba.data.storage import MQARSplit, load_mqar, read_manifest, write_mqar

__all__ = [
    "BOS",
    "EOS",
    "FILLER_RANGE",
    "IGNORE_INDEX",
    "KEY_RANGE",
    "LAYOUTS",
    "NUM_KEYS",
    "PAD",
    "RESERVED_RANGE",
    "SEP",
    "SPLITS",
    "VALUE_RANGE",
    "VOCAB_SIZE",
    "MQARConfig",
    "MQARSplit",
    "generate_mqar",
    "load_mqar",
    "read_manifest",
    "write_mqar",
]

from align_mamba.data.secrets import (  # noqa: E402  (the secret-span generator, appended)
    CARRIER_KINDS,
    DECOY_KINDS,
    FORMAT_NAMES,
    FORMATS,
    SECRET_SPLITS,
    SecretDataConfig,
    SecretFormat,
    decile_window,
    load_secret_split,
    load_split_mask,
    read_file_bytes,
    read_secret_manifest,
    write_secret_dataset,
)

__all__ += [
    "CARRIER_KINDS",
    "DECOY_KINDS",
    "FORMAT_NAMES",
    "FORMATS",
    "SECRET_SPLITS",
    "SecretDataConfig",
    "SecretFormat",
    "decile_window",
    "load_secret_split",
    "load_split_mask",
    "read_file_bytes",
    "read_secret_manifest",
    "write_secret_dataset",
]
