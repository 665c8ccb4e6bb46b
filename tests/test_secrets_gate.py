"""The scan's candidate gate: region finding and merging, recall on generated files, and gated = ungated
where the regions cover the whole file."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch

from align_mamba.cli import main as cli_main
from align_mamba.secrets.data import FORMATS, SecretDataConfig, generate_split
from align_mamba.secrets.data.generate import SeenValues
from align_mamba.secrets.data.text import BASE62, Pool
from align_mamba.secrets.gate import candidate_regions, candidate_spans, merge_regions
from align_mamba.secrets.infer import plan_region_windows, plan_windows, predict_spans, save_tagger, torch_threads
from align_mamba.secrets.scan import ScanOptions
from align_mamba.secrets.spans import Span
from align_mamba.secrets.tagger import ByteTagger, TaggerConfig

CLASSES = ("none", "aws_access_key_id", "github_classic")
SETTINGS = {"threshold": 0.5, "min_span_len": 8, "chunk_len": 64, "overlap": 16}
CONTEXT = 32  # bytes of context a planted secret must keep inside its region on each side

HAND_MADE = (
    b"x = 1\n"  # 0-5
    b"SNAKE_CASE_IDENTIFIER_NAME = 2\n"  # 6-36: one case only, an identifier
    b"log.parserConfigChart.value = 3\n"  # 37-68: '.' splits it into pieces under 20 bytes
    b'token = "AbCdEfGhIjKlMnOpQrSt"\n'  # 69-99: the value [78, 98) mixes cases
    b"key_id = AKIAABCDEFGHIJKLMNOP\n"  # 100-129: [109, 129) all upper case, but the AKIA prefix
    b"-----BEGIN EC PRIVATE KEY-----\n"  # 130-160: the marker [130, 140)
    b"url = redis://bob:p4ss~w!rd@cache:6379\n"  # 161-199: the URL password marker [172, 189)
)


@pytest.fixture(scope="module")
def tiny_model() -> ByteTagger:
    torch.manual_seed(0)
    config = TaggerConfig(d_model=16, n_layers=1, d_state=8, headdim=8, chunk_size=16)
    return ByteTagger(config, "reference", len(CLASSES), CLASSES).eval()


def test_candidates_of_a_hand_made_file():
    assert len(HAND_MADE) == 200
    assert candidate_spans(HAND_MADE) == [(78, 98), (109, 129), (130, 140), (172, 189)]
    # margin 8: [70, 106) + [101, 137) + [122, 148) overlap into one; [164, 197) stays apart
    assert candidate_regions(HAND_MADE, margin=8) == [(70, 148), (164, 197)]
    assert candidate_regions(HAND_MADE, margin=20) == [(58, 200)]  # clipped at the file's end
    assert candidate_regions(b"plain words and snake_case_names_only_here\n") == []


def test_split_literals_and_url_escapes_by_hand():
    """A secret cut by `+` has pieces shorter than a token, and %XX escapes break a run of the alphabet."""
    assert candidate_spans(b'k = ("AKIA2E3MO" +\n    "WZ7QRSTUVWX")\n') == [(5, 36)]  # both pieces, one candidate
    assert candidate_spans(b"u = `glpat-2dPWqCDv2Zl1` + `aTe2nXVX`") == [(4, 37)]
    assert candidate_spans(b"x = 'ftp://upload:bmL2' + '~O6thbsZW@host/'") == [(4, 43)]  # the URL marker cut in two
    assert candidate_spans(b'a = "foo" + "bar" + "bazQux"') == []  # 12 bytes joined: words, not a key
    assert candidate_spans(b'url = "https://h.example/cb?token=glpat%2D2dPWqCDv2Zl1"') == [(34, 54)]


def test_merge_regions_by_hand():
    spans = [(10, 30), (40, 50), (100, 120)]
    assert merge_regions(spans, margin=5, length=110) == [(5, 55), (95, 110)]  # (5,35) touches (35,55)
    assert merge_regions(spans, margin=4, length=200) == [(6, 34), (36, 54), (96, 124)]  # 2 bytes apart
    assert merge_regions(spans, margin=0, length=200) == spans
    assert merge_regions([(0, 3)], margin=50, length=20) == [(0, 20)]


def _covered(regions: list[tuple[int, int]], span: Span, length: int) -> bool:
    start, end = max(0, span.start - CONTEXT), min(length, span.end + CONTEXT)
    return any(a <= start and end <= b for a, b in regions)


@pytest.mark.parametrize("hard_fraction", [0.0, 1.0])
def test_gate_keeps_every_planted_secret_of_generated_files(hard_fraction):
    """Every secret the project's generator plants (all formats, all carriers, plain and as every hard
    case: split by `+`, base64, URL-encoded, JSON-escaped PEM, in a minified line), with context, is in a region."""
    config = SecretDataConfig(
        seed=7,
        hard_fraction=hard_fraction,
        train_files=1,
        val_files=0,
        test_files=60,
        unseen_files=20,
        decoy_files=0,
        length_buckets=(1024, 4096, 16384),
        train_max_length=1024,
        secrets_per_file=(1, 4),
    )
    seen, checked = SeenValues(), 0
    for split in ("test", "test_unseen"):
        for labels, data in generate_split(config, split, seen):
            regions = candidate_regions(data)
            for span in labels.spans:
                assert _covered(regions, span, len(data)), (split, labels.relpath, span, data[span.start : span.end])
                checked += 1
    assert checked >= 100


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_gate_finds_every_format_alone(name):
    """200 fresh values of each format, each alone between 480 bytes of plain words on both sides (no
    candidate there): the value and its context lie in a region, found from the value itself."""
    pool = Pool(np.random.default_rng(zlib.crc32(name.encode())))
    filler = "plain words here " * 28
    for _ in range(200):
        planted = FORMATS[name].plant(pool)
        data = f"{filler}value = {planted.text}\n{filler}".encode()
        offset = len(filler) + len("value = ")
        span = Span(offset + planted.start, offset + planted.end)
        assert _covered(candidate_regions(data), span, len(data)), (name, planted.text)


def test_one_whole_file_region_plans_the_ungated_windows():
    for length in (1, 63, 96, 97, 500, 4096):
        assert plan_region_windows([(0, length)], length, 64, 16) == plan_windows(length, 64, 16)


def test_region_windows_tile_the_regions_and_stay_in_the_file():
    regions = [(3, 40), (300, 700), (990, 1000)]
    windows = plan_region_windows(regions, 1000, 64, 16)
    kept = sorted((w.keep_start, w.keep_end) for w in windows)
    assert [k for k in kept if 3 <= k[0] < 40][0][0] == 3 and sum(b - a for a, b in kept) == 37 + 400 + 10
    for w in windows:
        assert 0 <= w.start <= w.keep_start < w.keep_end <= w.end <= 1000
        assert w.end - w.start == 96  # each region's windows: widened up to the ungated window, never past it
    # chunk 1024: each region is one window, widened to a multiple of 256 inside the file (shifted in at its ends)
    wide = plan_region_windows(regions, 1000, 1024, 64)
    assert [(w.start, w.end, w.keep_start, w.keep_end) for w in wide] == [
        (0, 256, 3, 40),
        (244, 756, 300, 700),
        (744, 1000, 990, 1000),
    ]


def test_bytes_outside_the_regions_score_none(tiny_model):
    """At threshold 0 every byte the model reads is a secret: the spans are exactly the regions."""
    data = bytes(np.random.default_rng(0).integers(32, 127, 3000, dtype=np.uint8))
    regions = [(10, 50), (400, 1400), (2990, 3000)]
    spans = predict_spans(tiny_model, data, torch.device("cpu"), 256, 32, 4, threshold=0.0, min_len=8, regions=regions)
    assert [(s.start, s.end) for s in spans] == regions


def test_gated_equals_ungated_when_regions_cover_everything(tiny_model):
    rng = np.random.default_rng(1)
    data = bytes(rng.integers(32, 127, 5000, dtype=np.uint8))
    with torch.inference_mode():
        p = 1 - torch.softmax(tiny_model(torch.tensor(list(data))[None]), -1)[0, :, 0]
    threshold = float(p.quantile(0.7))  # a threshold that finds some spans
    args = (tiny_model, data, torch.device("cpu"), 512, 64, 4, threshold, 4)
    ungated = predict_spans(*args)
    assert ungated and predict_spans(*args, regions=[(0, len(data))]) == ungated


def test_scan_gated_equals_ungated_on_a_file_of_candidates(tmp_path, capsys):
    """A file that is all candidate tokens: `--gate` reads it whole and reports what `--no-gate` does."""
    torch.manual_seed(0)
    config = TaggerConfig(d_model=16, n_layers=1, d_state=8, headdim=8, chunk_size=16)
    checkpoint = tmp_path / "model.pt"
    save_tagger(checkpoint, ByteTagger(config, "reference", len(CLASSES), CLASSES), dict(SETTINGS))
    pool = Pool(np.random.default_rng(2))
    path = tmp_path / "keys.txt"
    path.write_text("".join(pool.chars(BASE62, 40) + "\n" for _ in range(60)))
    docs = {}
    for flag in ("--gate", "--no-gate"):
        code = cli_main(["scan", str(path), "--checkpoint", str(checkpoint), "--threshold", "0.3", "--json", flag])
        docs[flag] = json.loads(capsys.readouterr().out)
        assert code in (0, 1)
    assert docs["--gate"]["gate"] == {"enabled": True, "margin": 256, "model_bytes": path.stat().st_size}
    assert docs["--no-gate"]["gate"]["enabled"] is False
    assert docs["--gate"]["findings"] == docs["--no-gate"]["findings"]


def test_scan_gate_is_on_by_default_on_the_cpu(tmp_path, capsys):
    torch.manual_seed(0)
    config = TaggerConfig(d_model=16, n_layers=1, d_state=8, headdim=8, chunk_size=16)
    checkpoint = tmp_path / "model.pt"
    save_tagger(checkpoint, ByteTagger(config, "reference", len(CLASSES), CLASSES), dict(SETTINGS))
    path = tmp_path / "a.py"
    path.write_bytes(HAND_MADE)
    cli_main(["scan", str(path), "--checkpoint", str(checkpoint), "--json", "--device", "cpu"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["gate"] == {"enabled": True, "margin": 256, "model_bytes": 200}  # the regions cover it all
    cli_main(["scan", str(path), "--checkpoint", str(checkpoint), "--json", "--gate-margin", "8"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["gate"]["model_bytes"] == (148 - 70) + (197 - 164)


def test_a_gated_cpu_scan_runs_on_one_thread_and_puts_the_count_back():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert ScanOptions().threads_for(cpu, gate=True) == 1
    assert ScanOptions().threads_for(cpu, gate=False) is None and ScanOptions().threads_for(cuda, gate=True) is None
    assert ScanOptions(threads=2).threads_for(cpu, gate=True) == 2
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    with torch_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before
