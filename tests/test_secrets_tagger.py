"""The byte tagger: shapes, what each byte can see, windowed attention, chunked inference, decoding, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from align_mamba.core.errors import ConfigError, DataIntegrityError
from align_mamba.mixers.attention import SelfAttention, rotary, windowed_attention
from align_mamba.secrets.infer import (
    SpanDecoder,
    Window,
    bridge_spans,
    decode_spans,
    load_tagger,
    plan_windows,
    predict_bytes,
    predict_spans,
    save_tagger,
)
from align_mamba.secrets.tagger import ByteTagger, TaggerConfig

CPU = torch.device("cpu")
SMALL = dict(d_model=32, n_layers=2, d_state=8, headdim=16, chunk_size=16, n_heads=2, window=16)
VARIANTS = {"bimamba": {}, "hybrid": {"attention_layers": (1,)}, "transformer": {}}
META = {"threshold": 0.5, "min_span_len": 8, "chunk_len": 256, "overlap": 64}


def _tagger(variant: str, num_classes: int = 5, **overrides) -> ByteTagger:
    torch.manual_seed(0)
    config = TaggerConfig(variant=variant, **{**SMALL, **VARIANTS[variant], **overrides})
    return ByteTagger(config, "reference", num_classes).eval()


def _text(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(32, 127, n).astype(np.uint8).tobytes()


def _full_probs(model: ByteTagger, data: bytes) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(list(data))[None]).softmax(-1)[0].numpy()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_maps_bytes_to_per_byte_logits(variant):
    model = _tagger(variant, num_classes=7)
    logits = model(torch.randint(0, 256, (3, 50)))
    assert logits.shape == (3, 50, 7) and torch.isfinite(logits).all()
    assert model.class_names == ("none",) + tuple(f"class_{k}" for k in range(1, 7))


def test_bimamba_sees_later_bytes_only_through_its_reversed_pass():
    model = _tagger("bimamba")
    ids = torch.randint(0, 256, (1, 40))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 256
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0, 0], model(changed)[0, 0]), "byte 0 must see the last byte"
        for layer in model.layers:  # silence the reversed pass: what is left is causal
            layer.mamba.backward_mixer.out_proj.weight.zero_()
        torch.testing.assert_close(model(ids)[0, :-1], model(changed)[0, :-1])


def test_windowed_transformer_sees_exactly_n_layers_times_window():
    model = _tagger("transformer", window=4)  # receptive field 2 layers x 4 = 8 bytes each side
    ids = torch.randint(0, 256, (1, 60))
    changed = ids.clone()
    changed[0, 30] = (changed[0, 30] + 7) % 256
    with torch.no_grad():
        diff = (model(ids) - model(changed)).abs().amax(-1)[0]  # (L,)
    far = torch.cat((diff[:22], diff[39:]))
    assert far.max() < 1e-6, "bytes more than 8 away are out of reach"
    assert (diff[22:39] > 1e-6).all(), "bytes within 8 are in reach"


@pytest.mark.parametrize("length,window,causal", [(37, 5, False), (37, 5, True), (6, 16, False), (64, 8, False)])
def test_windowed_attention_equals_dense_band_masked_sdpa(length, window, causal):
    torch.manual_seed(length)
    q, k, v = (torch.randn(2, 3, length, 8, dtype=torch.float64) for _ in range(3))
    i = torch.arange(length)
    band = (i[:, None] - i[None, :]).abs() <= window
    if causal:
        band &= i[:, None] >= i[None, :]
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
    torch.testing.assert_close(windowed_attention(q, k, v, window, causal), expected, rtol=0, atol=1e-12)


def test_windowed_self_attention_module_matches_a_dense_reference():
    torch.manual_seed(0)
    attention = SelfAttention(16, 2, causal=False, window=3).double()
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    q, k, v = attention.qkv_proj(x).view(2, 20, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
    i = torch.arange(20)
    y = F.scaled_dot_product_attention(rotary(q), rotary(k), v, attn_mask=(i[:, None] - i[None, :]).abs() <= 3)
    torch.testing.assert_close(attention(x), attention.out_proj(y.transpose(1, 2).reshape(2, 20, 16)))


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(variant="lstm"), "variant"),
        (dict(attention_layers=(0,)), "attention_layers"),
        (dict(variant="hybrid", attention_layers=(2,)), "attention_layers"),
        (dict(variant="hybrid"), "attention_layers"),
        (dict(headdim=48), "headdim"),
        (dict(variant="transformer", n_heads=32), "n_heads"),
        (dict(window=0), "window"),
        (dict(ssm="s4"), "ssm"),
    ],
)
def test_bad_tagger_configs_fail_in_one_line_naming_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field) as err:
        TaggerConfig(**{**SMALL, **overrides})
    assert "\n" not in str(err.value)


def test_windows_tile_the_file_keep_their_centres_and_share_one_length():
    # windows of 4 + 2·1 = 6 bytes; the first and last are shifted inward to stay 6 long
    assert plan_windows(10, 4, 1) == [Window(0, 6, 0, 4), Window(3, 9, 4, 8), Window(4, 10, 8, 10)]
    assert plan_windows(6, 4, 1) == [Window(0, 6, 0, 6)]  # no longer than a window: read once, all kept
    windows = plan_windows(1000, 96, 40)
    assert [w.keep_start for w in windows] == list(range(0, 1000, 96))
    assert all(w.keep_end == min(w.keep_start + 96, 1000) for w in windows)
    assert {w.end - w.start for w in windows} == {96 + 2 * 40}
    assert all(0 <= w.start <= w.keep_start and w.keep_end <= w.end <= 1000 for w in windows)
    assert all(w.keep_start - w.start >= 40 or w.start == 0 for w in windows)  # left context, or the file start
    assert all(w.end - w.keep_end >= 40 or w.end == 1000 for w in windows)  # right context, or the file end
    assert plan_windows(0, 4, 1) == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_one_chunk_inference_equals_the_full_sequence(variant):
    model, data = _tagger(variant), _text(700)
    chunked = predict_bytes(model, data, CPU, chunk_len=1024, overlap=64)
    np.testing.assert_allclose(chunked, _full_probs(model, data), rtol=0, atol=1e-5)


def test_transformer_chunks_equal_the_full_sequence_when_overlap_covers_the_receptive_field():
    model, data = _tagger("transformer"), _text(1500)  # receptive field 2 x 16 = 32 bytes
    full = _full_probs(model, data)
    exact = predict_bytes(model, data, CPU, chunk_len=100, overlap=32, batch_chunks=3)
    np.testing.assert_allclose(exact, full, rtol=0, atol=1e-5)
    short = predict_bytes(model, data, CPU, chunk_len=100, overlap=8, batch_chunks=3)
    assert np.abs(short - full).max() > 1e-4, "an overlap below the receptive field must change the edges"


def test_bimamba_chunks_approximate_the_full_sequence_better_with_more_overlap():
    # Random embeddings of norm ~3 spread the untrained model's argmax over all classes, so agreeing
    # decisions are not a constant guess. Both Mamba passes carry a decaying state across the whole
    # file, so chunking is an approximation: measured max |Δp| 0.064, 0.0018, 0.0007, 0.00004 at
    # overlaps 0, 16, 64, 256 (chunk 256), never exactly 0.
    model, data = _tagger("bimamba"), _text(3000)
    torch.nn.init.normal_(model.embedding.weight, std=3.0)
    full = _full_probs(model, data)
    assert len(np.unique(full.argmax(1))) == 5
    errors = []
    for overlap in (0, 16, 64, 256):
        chunked = predict_bytes(model, data, CPU, chunk_len=256, overlap=overlap, batch_chunks=4)
        errors.append(np.abs(chunked - full).max())
    assert errors == sorted(errors, reverse=True) and errors[0] > 0.01
    assert 1e-6 < errors[-1] < 2e-4
    assert (chunked.argmax(1) == full.argmax(1)).mean() > 0.99


def test_the_model_never_sees_more_than_chunk_len_plus_twice_the_overlap():
    model, seen = _tagger("bimamba"), []
    model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    chunk_len, overlap, batch_chunks = 64, 16, 2
    data = _text(10 * (chunk_len + 2 * overlap) + 5)
    probs = predict_bytes(model, data, CPU, chunk_len, overlap, batch_chunks)
    assert probs.shape == (len(data), 5) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert max(length for _, length in seen) == chunk_len + 2 * overlap
    assert max(batch for batch, _ in seen) == batch_chunks and len(seen) > 5


def _probs(p_secret: list[float], secret_classes: list[list[float]]) -> np.ndarray:
    """(n, 1 + K) probabilities from p(secret) and each byte's split of it over the K formats."""
    split = np.array(secret_classes, dtype=np.float32)
    return np.column_stack(
        [
            1 - np.array(p_secret, dtype=np.float32),
            split / split.sum(1, keepdims=True) * np.array(p_secret, dtype=np.float32)[:, None],
        ]
    )


def test_decode_spans_on_a_hand_built_probability_array():
    # bytes 2-4: a 3-byte run; two of its bytes lean to format a, but on average it is format b.
    # bytes 7-16: a 10-byte run of format a; bytes 18-19: 2 bytes, shorter than min_len 3.
    p = [0, 0, 0.9, 0.8, 0.7, 0, 0.4, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.2, 0.9, 0.9]
    classes = (
        [[1, 1]] * 2 + [[0.55, 0.45], [0.55, 0.45], [0.05, 0.95]] + [[1, 1]] * 2 + [[0.9, 0.1]] * 10 + [[1, 1]] * 3
    )
    spans = decode_spans(_probs(p, classes), threshold=0.5, min_len=3, class_names=["none", "a", "b"])
    assert [(s.start, s.end, s.format) for s in spans] == [(2, 5, "b"), (7, 17, "a")]
    assert spans[0].score == pytest.approx(0.8, abs=1e-6) and spans[1].score == pytest.approx(0.6, abs=1e-6)
    assert [(s.start, s.end) for s in decode_spans(_probs(p, classes), threshold=0.35, min_len=1)] == [
        (2, 5),
        (6, 17),
        (18, 20),
    ]


def test_streamed_decoding_joins_runs_across_block_edges():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([3, 1, 1], size=400).astype(np.float32)
    whole = decode_spans(probs, threshold=0.3, min_len=2)
    decoder = SpanDecoder(["none", "class_1", "class_2"], threshold=0.3, min_len=2)
    for start in range(0, 400, 7):
        decoder.feed(start, probs[start : start + 7])
    streamed = decoder.finish()
    assert len(whole) > 10 and [(s.start, s.end, s.format) for s in streamed] == [
        (s.start, s.end, s.format) for s in whole
    ]
    np.testing.assert_allclose([s.score for s in streamed], [s.score for s in whole], rtol=1e-6)


def test_feeding_only_the_candidate_rows_decodes_like_the_dense_probabilities():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet([3, 1, 1], size=500).astype(np.float32)
    whole = decode_spans(probs, threshold=0.3, min_len=2)
    decoder = SpanDecoder(["none", "class_1", "class_2"], threshold=0.3, min_len=2)
    for start in range(0, 500, 64):  # rows far below the threshold never reach the decoder
        block = probs[start : start + 64]
        rows = np.flatnonzero(block[:, 1:].sum(1) >= 0.2)
        decoder.feed_rows(start, len(block), start + rows, block[rows])
    assert len(whole) > 10 and decoder.finish() == whole


def test_predict_spans_is_decode_spans_of_the_chunked_probabilities():
    model, data = _tagger("bimamba"), _text(900)
    torch.nn.init.normal_(model.embedding.weight, std=3.0)
    probs = predict_bytes(model, data, CPU, chunk_len=128, overlap=32)
    decoded = decode_spans(probs, threshold=0.6, min_len=2, class_names=model.class_names)
    expected = bridge_spans(decoded, data)
    assert expected, "the test needs a model that flags something"
    assert predict_spans(model, data, CPU, chunk_len=128, overlap=32, threshold=0.6, min_len=2) == expected


def test_a_saved_tagger_loads_on_the_reference_with_the_same_logits(tmp_path):
    names = ("none", "aws_access_key_id", "jwt")
    torch.manual_seed(0)
    model = ByteTagger(TaggerConfig(variant="hybrid", **{**SMALL, "attention_layers": (0,)}), "reference", 3, names)
    save_tagger(tmp_path / "model.pt", model, {**META, "train_backend": "kernels"})
    loaded, meta = load_tagger(tmp_path / "model.pt", CPU, backend="auto")
    assert meta["class_names"] == list(names) and meta["backend"] == "reference" and meta["device"] == "cpu"
    assert meta["train_backend"] == "kernels" and meta["chunk_len"] == 256 and loaded.class_names == names
    ids = torch.randint(0, 256, (2, 90))
    with torch.no_grad():  # loading on the CPU selects the linear-time SSD scan: same logits up to rounding
        torch.testing.assert_close(loaded(ids), model.eval()(ids), rtol=1e-5, atol=1e-5)


def test_bad_checkpoints_and_meta_fail_in_one_line(tmp_path):
    with pytest.raises(DataIntegrityError, match="not found"):
        load_tagger(tmp_path / "missing.pt", CPU)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataIntegrityError, match="not a byte-tagger checkpoint"):
        load_tagger(tmp_path / "junk.pt", CPU)
    with pytest.raises(ConfigError, match="threshold"):
        save_tagger(tmp_path / "model.pt", _tagger("bimamba"), {"chunk_len": 4, "overlap": 0, "min_span_len": 1})
    with pytest.raises(ConfigError, match="chunk_len"):
        predict_bytes(_tagger("bimamba"), b"abc", CPU, chunk_len=0)
