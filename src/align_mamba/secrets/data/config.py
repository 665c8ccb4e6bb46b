"""SecretDataConfig: the parameters of a secret-span dataset, validated with one line naming the field."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from align_mamba.secrets.data.formats import FORMAT_NAMES
from align_mamba.secrets.data.kinds import CARRIER_KINDS
from align_mamba.core.errors import ConfigError

SECRET_SPLITS = ("train", "validation", "test", "test_unseen", "test_decoys")
# Splits whose files train or select a model: held-out formats must never reach them.
SEEN_SPLITS = ("train", "validation")
# Splits every system (tagger or scanner) is scored on by default.
TEST_SPLITS = ("test", "test_unseen", "test_decoys")
MIN_LENGTH = 512
MAX_LENGTH = 64 << 20
_SPLIT_SIZE_FIELDS = {"train": "train_files", "validation": "val_files", "test": "test_files",
                      "test_unseen": "unseen_files", "test_decoys": "decoy_files"}


def _as_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _as_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value <= 1:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _as_names(name: str, value: object, known: tuple[str, ...], allow_empty: bool) -> tuple[str, ...]:
    # A bare string would otherwise be read as a list of one-letter names.
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise ConfigError(f"{name} must be a list of names, got {value!r}")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ConfigError(f"{name}: unknown name(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{name} must not repeat a name, got {list(value)}")
    if not value and not allow_empty:
        raise ConfigError(f"{name} must name at least one of {', '.join(known)}")
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class SecretDataConfig:
    """Parameters of a secret-span dataset (see `generate.generate_split` for what they control).

    length_buckets: target file lengths in bytes; each file draws one and its length lies within
    ±length_jitter of it. train_max_length: train and validation files use only buckets <= it.
    secrets_per_file: (min, max) secrets drawn per secret-bearing file (fewer when they do not fit
    in the file's target decile). heldout_formats: the only formats of test_unseen, never in train
    or validation. kinds: the carrier kinds files are drawn from. hard_fraction: the probability
    that a planted secret is written as a hard case (`hard`: a split literal, base64 or URL
    encoding, a JSON-escaped PEM key, a minified line); 0 plants every secret plainly.
    """

    seed: int
    train_files: int = 200
    val_files: int = 40
    test_files: int = 40
    unseen_files: int = 40
    decoy_files: int = 40
    length_buckets: tuple[int, ...] = (1024, 8192, 65536, 1048576)
    train_max_length: int = 8192
    length_jitter: float = 0.1
    secrets_per_file: tuple[int, int] = (1, 4)
    decoys_per_file: int = 2
    # 0 by default so that code drawing files directly (tests, the throughput benchmark) keeps its
    # files; params.yaml sets the study's value.
    hard_fraction: float = 0.0
    heldout_formats: tuple[str, ...] = ("gitlab_pat", "stripe_live")
    kinds: tuple[str, ...] = CARRIER_KINDS

    def __post_init__(self) -> None:
        for name, minimum in (("seed", 0), ("train_files", 1), ("val_files", 0), ("test_files", 0),
                              ("unseen_files", 0), ("decoy_files", 0), ("decoys_per_file", 0)):
            object.__setattr__(self, name, _as_int(name, getattr(self, name), minimum))
        self._check_lengths()
        self._check_secrets_per_file()
        object.__setattr__(self, "hard_fraction", _as_fraction("hard_fraction", self.hard_fraction))
        heldout = _as_names("heldout_formats", self.heldout_formats, FORMAT_NAMES, allow_empty=True)
        if len(heldout) == len(FORMAT_NAMES):
            raise ConfigError("heldout_formats must leave at least one format for train/validation/test")
        if self.unseen_files and not heldout:
            raise ConfigError(f"unseen_files={self.unseen_files} needs heldout_formats (test_unseen holds only them)")
        object.__setattr__(self, "heldout_formats", heldout)
        object.__setattr__(self, "kinds", _as_names("kinds", self.kinds, CARRIER_KINDS, allow_empty=False))
        if self.decoy_files and not self.decoys_per_file:
            raise ConfigError(f"decoy_files={self.decoy_files} needs decoys_per_file >= 1 (its files hold only decoys)")

    def _check_lengths(self) -> None:
        buckets = self.length_buckets
        if isinstance(buckets, (str, int)) or not isinstance(buckets, (tuple, list)) or not buckets:
            raise ConfigError(f"length_buckets must be a non-empty list of byte lengths, got {buckets!r}")
        buckets = tuple(sorted(_as_int("length_buckets", b, MIN_LENGTH) for b in buckets))
        if buckets[-1] > MAX_LENGTH:
            raise ConfigError(f"length_buckets must be <= {MAX_LENGTH}, got {buckets[-1]}")
        if len(set(buckets)) != len(buckets):
            raise ConfigError(f"length_buckets must not repeat a length, got {list(self.length_buckets)}")
        object.__setattr__(self, "length_buckets", buckets)
        limit = _as_int("train_max_length", self.train_max_length, 1)
        if limit < buckets[0]:
            raise ConfigError(f"train_max_length={limit} is below the smallest length bucket {buckets[0]}")
        object.__setattr__(self, "train_max_length", limit)
        jitter = self.length_jitter
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float, np.number)) \
                or not math.isfinite(jitter) or not 0 <= jitter <= 0.5:
            raise ConfigError(f"length_jitter must be a number in [0, 0.5], got {jitter!r}")
        object.__setattr__(self, "length_jitter", float(jitter))

    def _check_secrets_per_file(self) -> None:
        pair = self.secrets_per_file
        if isinstance(pair, str) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ConfigError(f"secrets_per_file must be two integers (min, max), got {pair!r}")
        low, high = (_as_int("secrets_per_file", v, 0) for v in pair)
        if low > high:
            raise ConfigError(f"secrets_per_file: min {low} > max {high}")
        if high < 1:
            raise ConfigError("secrets_per_file: max must be >= 1")
        object.__setattr__(self, "secrets_per_file", (low, high))

    @property
    def train_formats(self) -> tuple[str, ...]:
        """The in-distribution formats (of train, validation and test): all but the held-out ones."""
        return tuple(name for name in FORMAT_NAMES if name not in self.heldout_formats)

    def split_files(self, split: str) -> int:
        check_split(split)
        return getattr(self, _SPLIT_SIZE_FIELDS[split])

    def split_formats(self, split: str) -> tuple[str, ...]:
        """Formats planted in `split` (none in test_decoys)."""
        check_split(split)
        return {"test_unseen": self.heldout_formats, "test_decoys": ()}.get(split, self.train_formats)

    def split_buckets(self, split: str) -> tuple[int, ...]:
        check_split(split)
        if split in SEEN_SPLITS:
            return tuple(b for b in self.length_buckets if b <= self.train_max_length)
        return self.length_buckets

    def to_dict(self) -> dict:
        """JSON-ready parameters (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def check_split(split: str) -> None:
    if split not in SECRET_SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SECRET_SPLITS)}, got {split!r}")
