"""Multi-query associative recall (MQAR): one random draw per example, rendered in two layouts.

An example is N key-value pairs (the context) and M queried keys. The ``decoder`` layout is
Zoology's ``multiquery_ar`` (context then queries at power-law distributed gaps in one sequence);
the ``seq2seq`` layout puts the context in an encoder sequence and the queries in a short decoder
sequence. Both layouts of a split render the same draws, queries in the same order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from align_mamba.core.errors import ConfigError

VOCAB_SIZE = 8192
PAD, BOS, SEP, EOS = 0, 1, 2, 3
RESERVED_RANGE = range(4, 10)  # kept free for later generators' special tokens
FIRST_KEY = RESERVED_RANGE.stop
# The full vocabulary (num_keys unset): Zoology's 8192 tokens, keys below 4096, values above.
KEY_RANGE = range(FIRST_KEY, 4096)
VALUE_RANGE = range(4096, VOCAB_SIZE)
FILLER_RANGE = range(FIRST_KEY, VOCAB_SIZE)
NUM_KEYS = len(KEY_RANGE)
IGNORE_INDEX = -100

LAYOUTS = ("seq2seq", "decoder")
FILLERS = ("pad", "random")
SPLITS = ("train", "validation", "test")
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
# Held-out splits come first so that train is the one that drops and refills on a collision.
GENERATION_ORDER = ("test", "validation", "train")

TOKEN_DTYPE = np.int16  # holds ids up to 8191 and IGNORE_INDEX
META_DTYPE = np.int32

# A separate stream for filler tokens, so "pad" and "random" datasets hold the same pairs and queries.
_FILLER_STREAM = 1
_MAX_CHUNK_ROWS = 2048
# Caps the (rows, width) float64 score arrays of one chunk at 64 MiB.
_MAX_CHUNK_CELLS = 1 << 23


@dataclass(frozen=True)
class Tokens:
    """The token ranges of one dataset; ranges are half-open [start, stop).

    num_keys=None is the full vocabulary (KEY_RANGE, VALUE_RANGE, 8192 tokens). num_keys=K gives
    keys [10, 10+K), values [10+K, 10+2K) and a vocabulary of 10+2K tokens: a small vocabulary
    makes each embedding row see many examples, which is what lets a CPU-sized run learn MQAR.
    """

    key_range: range
    value_range: range

    @staticmethod
    def for_keys(num_keys: int | None) -> Tokens:
        if num_keys is None:
            return Tokens(KEY_RANGE, VALUE_RANGE)
        return Tokens(range(FIRST_KEY, FIRST_KEY + num_keys), range(FIRST_KEY + num_keys, FIRST_KEY + 2 * num_keys))

    @property
    def vocab_size(self) -> int:
        return self.value_range.stop

    @property
    def filler_range(self) -> range:
        return range(FIRST_KEY, self.vocab_size)

    def to_json(self) -> dict:
        ranges = {
            "reserved_range": RESERVED_RANGE,
            "key_range": self.key_range,
            "value_range": self.value_range,
            "filler_range": self.filler_range,
        }
        return {
            "vocab_size": self.vocab_size,
            "pad": PAD,
            "bos": BOS,
            "sep": SEP,
            "eos": EOS,
            "ignore_index": IGNORE_INDEX,
            **{name: [r.start, r.stop] for name, r in ranges.items()},
        }


def token_spec(num_keys: int | None = None) -> dict:
    """Token constants of a dataset with `num_keys` keys (None: the full vocabulary) as JSON-ready values."""
    return Tokens.for_keys(num_keys).to_json()


def _as_int(name: str, value: object, minimum: int) -> int:
    # bool is an int subclass, but True as a size is always a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


@dataclass(frozen=True, kw_only=True)
class MQARConfig:
    """Parameters of an MQAR dataset; invalid values raise ConfigError naming the field.

    ``num_queries=None`` queries every pair once. ``seq_len`` is the decoder-layout length L and
    must leave room for M queries at even offsets after the 2N context tokens: L >= 2N + 2M.
    """

    num_pairs: int
    seq_len: int
    train_size: int
    val_size: int
    test_size: int
    seed: int
    num_queries: int | None = 16
    num_keys: int | None = None
    filler: str = "pad"
    power_a: float = 0.01
    layouts: tuple[str, ...] = LAYOUTS

    def __post_init__(self) -> None:
        for name, minimum in (
            ("num_pairs", 1),
            ("seq_len", 1),
            ("train_size", 1),
            ("val_size", 1),
            ("test_size", 1),
            ("seed", 0),
        ):
            object.__setattr__(self, name, _as_int(name, getattr(self, name), minimum))
        if self.num_keys is not None:
            object.__setattr__(self, "num_keys", _as_int("num_keys", self.num_keys, 1))
            if self.num_keys > NUM_KEYS:
                raise ConfigError(
                    f"num_keys must be <= {NUM_KEYS} (or unset: the full vocabulary), got {self.num_keys}"
                )
        if self.num_pairs > len(self.tokens.key_range):
            raise ConfigError(
                f"num_pairs must be <= {len(self.tokens.key_range)} (the number of distinct keys), got {self.num_pairs}"
            )
        self._check_queries()
        self._check_filler_and_power()
        self._check_layouts()
        self._check_sizes_fit()

    def _check_queries(self) -> None:
        if self.num_queries is not None:
            object.__setattr__(self, "num_queries", _as_int("num_queries", self.num_queries, 1))
            if self.num_queries > self.num_pairs:
                raise ConfigError(f"num_queries must be <= num_pairs={self.num_pairs} or 'all', got {self.num_queries}")
        m = self.queries_per_example
        if self.gap_space < m:
            raise ConfigError(
                f"seq_len={self.seq_len} is too short for num_pairs={self.num_pairs} "
                f"and {m} queries: need seq_len >= {2 * self.num_pairs + 2 * m}"
            )

    def _check_filler_and_power(self) -> None:
        if not isinstance(self.filler, str) or self.filler not in FILLERS:
            raise ConfigError(f"filler must be one of {', '.join(FILLERS)}, got {self.filler!r}")
        a = self.power_a
        if isinstance(a, bool) or not isinstance(a, (int, float, np.integer, np.floating)):
            raise ConfigError(f"power_a must be a number, got {a!r}")
        if not math.isfinite(a) or a <= 0:
            raise ConfigError(f"power_a must be a finite number > 0, got {a}")
        object.__setattr__(self, "power_a", float(a))

    def _check_layouts(self) -> None:
        layouts = self.layouts
        # A bare string would otherwise be read as a sequence of one-letter layouts.
        if isinstance(layouts, str) or not isinstance(layouts, (tuple, list)):
            raise ConfigError(f"layouts must be a list of layout names, got {layouts!r}")
        if not layouts:
            raise ConfigError(f"layouts must name at least one of {', '.join(LAYOUTS)}")
        for layout in layouts:
            if layout not in LAYOUTS:
                raise ConfigError(f"layouts: unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
        if len(set(layouts)) != len(layouts):
            raise ConfigError(f"layouts must not repeat a layout, got {list(layouts)}")
        object.__setattr__(self, "layouts", tuple(layouts))

    def _check_sizes_fit(self) -> None:
        # Splits hold distinct contexts; staying under half of all contexts keeps refilling cheap.
        tokens = self.tokens
        contexts = math.perm(len(tokens.key_range), self.num_pairs) * len(tokens.value_range) ** self.num_pairs
        total = self.train_size + self.val_size + self.test_size
        if 2 * total > contexts:
            raise ConfigError(
                f"train_size + val_size + test_size = {total} exceeds half of the "
                f"{contexts} distinct contexts with num_pairs={self.num_pairs}"
            )

    @staticmethod
    def parse_num_queries(text: str) -> int | None:
        """Parse a CLI value: ``"all"`` -> None (query every pair), else a positive integer."""
        if text.strip().lower() == "all":
            return None
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"num_queries must be an integer or 'all', got {text!r}") from None

    @property
    def tokens(self) -> Tokens:
        """This dataset's key, value and filler ranges and vocabulary size."""
        return Tokens.for_keys(self.num_keys)

    @property
    def queries_per_example(self) -> int:
        """M, the number of queries per example."""
        return self.num_pairs if self.num_queries is None else self.num_queries

    @property
    def gap_space(self) -> int:
        """Number of query slots after the context in the decoder layout: (L - 2N) // 2."""
        return (self.seq_len - 2 * self.num_pairs) // 2

    def split_size(self, split: str) -> int:
        """Number of examples requested for ``split``."""
        sizes = {"train": self.train_size, "validation": self.val_size, "test": self.test_size}
        if split not in sizes:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return sizes[split]

    def to_dict(self) -> dict:
        """JSON-ready parameters; num_queries=None is written as "all"."""
        params = asdict(self)
        params["layouts"] = list(self.layouts)
        params["num_queries"] = "all" if self.num_queries is None else self.num_queries
        return params


@dataclass(frozen=True)
class _Draw:
    """Raw draws for c examples; ``slots`` and ``gaps`` are in query order (gaps ascending).

    keys, values: (c, N); slots, gaps: (c, M); filler: (c, L) or None.
    """

    keys: np.ndarray
    values: np.ndarray
    slots: np.ndarray
    gaps: np.ndarray
    filler: np.ndarray | None

    def take(self, rows: np.ndarray) -> _Draw:
        filler = None if self.filler is None else self.filler[rows]
        return _Draw(self.keys[rows], self.values[rows], self.slots[rows], self.gaps[rows], filler)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices (c, k) of the k largest entries of each row of ``scores`` (c, w), largest first.

    With i.i.d. uniform scores this is a uniformly random ordered k-subset; with log-weights plus
    Gumbel noise it is weighted sampling without replacement (the Gumbel-top-k trick).
    """
    width = scores.shape[1]
    top = np.argpartition(scores, width - k, axis=1)[:, width - k :]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def _gap_log_weights(config: MQARConfig) -> np.ndarray:
    """log p(g) up to a constant, shape (space,): Zoology's p(g) ∝ (g+1)^(power_a-1)."""
    return (config.power_a - 1.0) * np.log(np.arange(1, config.gap_space + 1, dtype=np.float64))


def _draw_chunk(config: MQARConfig, rng: np.random.Generator, filler_rng: np.random.Generator, rows: int) -> _Draw:
    """Draw ``rows`` examples; the draw order is fixed so that a seed pins every array."""
    n, m = config.num_pairs, config.queries_per_example
    tokens = config.tokens
    keys = _top_k(rng.random((rows, len(tokens.key_range))), n) + tokens.key_range.start
    values = rng.integers(tokens.value_range.start, tokens.value_range.stop, size=(rows, n))
    # Slots come out in random order and pair up with the ascending gaps, so which pair is
    # queried first is independent of the pair's position in the context.
    slots = _top_k(rng.random((rows, n)), m)
    gap_scores = _gap_log_weights(config) + rng.gumbel(size=(rows, config.gap_space))
    gaps = np.sort(_top_k(gap_scores, m), axis=1)
    filler = None
    if config.filler == "random" and "decoder" in config.layouts:
        filler = filler_rng.integers(
            tokens.filler_range.start, tokens.filler_range.stop, size=(rows, config.seq_len), dtype=TOKEN_DTYPE
        )
    return _Draw(keys, values, slots, gaps, filler)


class _LayoutArrays:
    """The arrays of one layout for n examples, one field per ``{name}.npy`` file, first axis n."""

    layout: ClassVar[str]

    def named(self) -> dict[str, np.ndarray]:
        """{array name: array}, in field order (the order files are written)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def empty(self, size: int):
        """Arrays of `size` rows shaped and typed like these, to be filled chunk by chunk with `put`."""
        return type(self)(**{name: np.empty((size,) + a.shape[1:], dtype=a.dtype) for name, a in self.named().items()})

    def put(self, start: int, chunk) -> None:
        """Copy `chunk`'s rows into rows [start, start + len(chunk))."""
        for name, rows in chunk.named().items():
            getattr(self, name)[start : start + len(rows)] = rows


@dataclass(frozen=True)
class DecoderArrays(_LayoutArrays):
    """Zoology layout: inputs, labels (n, L); query_slot, query_distance (n, M)."""

    layout: ClassVar[str] = "decoder"
    inputs: np.ndarray
    labels: np.ndarray
    query_slot: np.ndarray
    query_distance: np.ndarray


@dataclass(frozen=True)
class Seq2SeqArrays(_LayoutArrays):
    """Encoder-decoder layout: enc_inputs (n, 3N+2); dec_inputs, dec_labels (n, M+1); metadata (n, M)."""

    layout: ClassVar[str] = "seq2seq"
    enc_inputs: np.ndarray
    dec_inputs: np.ndarray
    dec_labels: np.ndarray
    query_slot: np.ndarray
    query_distance: np.ndarray


# The .npy files of each layout, in the order they are written.
LAYOUT_ARRAYS = {cls.layout: tuple(f.name for f in dataclasses.fields(cls)) for cls in (DecoderArrays, Seq2SeqArrays)}


@dataclass(frozen=True)
class SplitArrays:
    """One split rendered in each layout of its config (config order)."""

    split: str
    layouts: tuple[DecoderArrays | Seq2SeqArrays, ...]

    def layout(self, name: str) -> DecoderArrays | Seq2SeqArrays:
        for arrays in self.layouts:
            if arrays.layout == name:
                return arrays
        raise ConfigError(
            f"layout {name!r} was not generated (this split has {', '.join(a.layout for a in self.layouts)})"
        )

    @property
    def decoder(self) -> DecoderArrays:
        return self.layout("decoder")

    @property
    def seq2seq(self) -> Seq2SeqArrays:
        return self.layout("seq2seq")


def _decoder_arrays(config: MQARConfig, draw: _Draw) -> DecoderArrays:
    """The decoder layout of c drawn examples (see ``generate_mqar``)."""
    c, n = draw.keys.shape
    if draw.filler is None:
        inputs = np.full((c, config.seq_len), PAD, dtype=TOKEN_DTYPE)
    else:
        inputs = draw.filler.copy()
    inputs[:, 0 : 2 * n : 2] = draw.keys
    inputs[:, 1 : 2 * n : 2] = draw.values
    positions = 2 * n + 2 * draw.gaps
    np.put_along_axis(inputs, positions, np.take_along_axis(draw.keys, draw.slots, axis=1), axis=1)
    labels = np.full((c, config.seq_len), IGNORE_INDEX, dtype=TOKEN_DTYPE)
    np.put_along_axis(labels, positions, np.take_along_axis(draw.values, draw.slots, axis=1), axis=1)
    return DecoderArrays(
        inputs=inputs,
        labels=labels,
        query_slot=draw.slots.astype(META_DTYPE),
        query_distance=(positions - 2 * draw.slots).astype(META_DTYPE),
    )


def _seq2seq_arrays(config: MQARConfig, draw: _Draw) -> Seq2SeqArrays:
    """The seq2seq layout of c drawn examples (see ``generate_mqar``)."""
    c, n = draw.keys.shape
    m = draw.slots.shape[1]
    enc = np.empty((c, 3 * n + 2), dtype=TOKEN_DTYPE)
    enc[:, 0] = BOS
    enc[:, 1 : 3 * n + 1 : 3] = draw.keys
    enc[:, 2 : 3 * n + 1 : 3] = SEP
    enc[:, 3 : 3 * n + 1 : 3] = draw.values
    enc[:, -1] = EOS
    dec = np.full((c, m + 1), BOS, dtype=TOKEN_DTYPE)
    dec[:, 1:] = np.take_along_axis(draw.keys, draw.slots, axis=1)
    labels = np.full((c, m + 1), IGNORE_INDEX, dtype=TOKEN_DTYPE)
    labels[:, 1:] = np.take_along_axis(draw.values, draw.slots, axis=1)
    distance = enc.shape[1] - (1 + 3 * draw.slots) + np.arange(1, m + 1)
    return Seq2SeqArrays(
        enc_inputs=enc,
        dec_inputs=dec,
        dec_labels=labels,
        query_slot=draw.slots.astype(META_DTYPE),
        query_distance=distance.astype(META_DTYPE),
    )


_BUILDERS = {"decoder": _decoder_arrays, "seq2seq": _seq2seq_arrays}


def _take_fresh(draw: _Draw, seen: set[bytes], limit: int) -> np.ndarray:
    """Indices of the first ``limit`` rows whose context is not in ``seen``; adds their digests to it."""
    context = np.ascontiguousarray(np.concatenate([draw.keys, draw.values], axis=1), dtype=TOKEN_DTYPE)
    width = context.shape[1] * context.itemsize
    blob = memoryview(context.tobytes())
    kept: list[int] = []
    for row in range(context.shape[0]):
        if len(kept) == limit:
            break
        digest = hashlib.blake2b(blob[row * width : (row + 1) * width], digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
            kept.append(row)
    return np.asarray(kept, dtype=np.intp)


def _split_rngs(config: MQARConfig, split: str) -> tuple[np.random.Generator, np.random.Generator]:
    words = [config.seed, SPLIT_IDS[split]]
    return (
        np.random.default_rng(np.random.SeedSequence(words)),
        np.random.default_rng(np.random.SeedSequence(words + [_FILLER_STREAM])),
    )


def _chunk_rows(config: MQARConfig) -> int:
    # Fixed per config (not per split size), so a smaller split is a prefix of a larger one.
    return max(1, min(_MAX_CHUNK_ROWS, _MAX_CHUNK_CELLS // max(len(config.tokens.key_range), config.seq_len)))


def generate_split(config: MQARConfig, split: str, seen: set[bytes]) -> SplitArrays:
    """Generate one split in each layout of ``config.layouts``.

    Examples whose context (the keys and values of the pairs, in order) has a digest in ``seen`` are
    dropped and replaced by further draws from the split's own stream; the digests of the kept
    examples are added to ``seen``. Token arrays are int16, metadata int32; see ``generate_mqar``.
    """
    size = config.split_size(split)
    rng, filler_rng = _split_rngs(config, split)
    rows = _chunk_rows(config)
    filled_layouts: list[DecoderArrays | Seq2SeqArrays] = []
    filled = 0
    # Acceptance is at least one half (see _check_sizes_fit); this bound is never reached in practice.
    for _ in range(4 * math.ceil(size / rows) + 16):
        draw = _draw_chunk(config, rng, filler_rng, rows)
        kept = _take_fresh(draw, seen, size - filled)
        fresh = draw.take(kept)
        chunks = [_BUILDERS[layout](config, fresh) for layout in config.layouts]
        if not filled_layouts:
            filled_layouts = [chunk.empty(size) for chunk in chunks]
        for arrays, chunk in zip(filled_layouts, chunks):
            arrays.put(filled, chunk)
        filled += len(kept)
        if filled == size:
            return SplitArrays(split, tuple(filled_layouts))
    raise ConfigError(
        f"{split} split: could not draw {size} examples with distinct contexts; "
        "reduce train_size, val_size or test_size"
    )


def generate_mqar(config: MQARConfig) -> dict[str, SplitArrays]:
    """Generate every split, keyed by split name; test, then validation, then train.

    Per example: N distinct keys drawn uniformly from the key range, N values uniformly (with
    replacement) from the value range (see Tokens), M distinct queried pair slots, and M distinct gaps g from
    range(space), space = (L - 2N) // 2, with p(g) ∝ (g+1)^(power_a-1) (Zoology). Queries are
    ordered by ascending gap in both layouts. Splits share no context.

    decoder layout, n examples of length L:
      inputs (n, L): k1 v1 ... kN vN at [0, 2N); the query for slot s at 2N + 2g; PAD elsewhere
        (or filler uniform on the filler range when filler="random").
      labels (n, L): IGNORE_INDEX except at each query position, where it is the queried value.
      query_slot (n, M): pair index of each query, 0..N-1 (its position in the context).
      query_distance (n, M): query position - key position = 2N + 2g - 2*slot.
    seq2seq layout:
      enc_inputs (n, 3N+2): BOS k1 SEP v1 k2 SEP v2 ... kN SEP vN EOS.
      dec_inputs (n, M+1): BOS q1 ... qM;  dec_labels (n, M+1): IGNORE_INDEX, value(q1), ..., value(qM).
      query_slot (n, M): as above.
      query_distance (n, M): tokens from the key in the encoder to query i (0-based) in the decoder,
        counted as if the decoder followed the encoder: (3N+2 - (1 + 3*slot)) + i + 1.

    Worked example, N=2, M=2, L=8 (space=2, so the gaps are 0 and 1), keys (17, 42), values
    (5000, 4100), gap 0 queries slot 1 and gap 1 queries slot 0:
      decoder  inputs         = [17, 5000, 42, 4100, 42, PAD, 17, PAD]
               labels         = [-100, -100, -100, -100, 4100, -100, 5000, -100]
               query_slot     = [1, 0];  query_distance = [4 - 2, 6 - 0] = [2, 6]
      seq2seq  enc_inputs     = [BOS, 17, SEP, 5000, 42, SEP, 4100, EOS]
               dec_inputs     = [BOS, 42, 17];  dec_labels = [-100, 4100, 5000]
               query_slot     = [1, 0];  query_distance = [(8 - 4) + 1, (8 - 1) + 2] = [5, 9]
    """
    seen: set[bytes] = set()
    return {split: generate_split(config, split, seen) for split in GENERATION_ORDER}
