"""
Fast, hermetic CPU smoke tests for nanostories (no network, no GPU):

    python -m pytest -q test_smoke.py
"""
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest

import prepare as prep
from tokenizer import get_tokenizer

REPO = Path(__file__).resolve().parent
SHARED = REPO.parent / "shared"
# offline, tiktoken reads the GPT-2 BPE from this cache; absolute because tests may chdir
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local parquet/jsonl must never touch the hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# ---- tokenizer & prepare ----

TOKENIZERS = ["gpt2", "byte"]
STORIES = [
    "Once upon a time, there was a little dragon named Spot.\nSpot liked to fly.",
    "Lily saw a castle. “Wow!” she said. Naïve café, crème brûlée, 東京, emoji 🐉🏰 and a tab\there.",
    "Tom typed <|endoftext|> on the screen and laughed. It's 3.14 o'clock, isn't it?",
    "The end.",
]
EOT_LINE = "<|endoftext|>"


def write_release(path: Path, stories, gz=False):
    """A V1 release file: each story followed by a line that is exactly <|endoftext|>."""
    text = "".join(f"{s}\n{EOT_LINE}\n" for s in stories)
    if gz:
        import gzip
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def split_bin(ids: np.ndarray, eot: int) -> list[list[int]]:
    """Per-story token lists from a bin, checking every story ends with EOT."""
    assert len(ids) and ids[-1] == eot, "the bin must end with EOT"
    ends = np.flatnonzero(ids == eot)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [ids[a:b].tolist() for a, b in zip(starts, ends)]


@pytest.fixture
def corpus(tmp_path):
    """train (with an empty story and leading/trailing whitespace) + valid release files."""
    src = tmp_path / "src"
    src.mkdir()
    train = STORIES + [f"  Story {i}: a dragon flew over the castle {i} times.  " for i in range(30)]
    raw = "".join(f"{s}\n{EOT_LINE}\n" for s in train[:2]) + f"{EOT_LINE}\n"  # an empty story
    raw += "".join(f"{s}\n{EOT_LINE}\n" for s in train[2:])
    (src / "train-000.txt").write_text(raw, encoding="utf-8")
    write_release(src / "valid.txt.gz", STORIES[::-1], gz=True)
    return src, [s.strip() for s in train], [s.strip() for s in STORIES[::-1]]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_tokenizer_roundtrip_and_specials(name):
    tok = get_tokenizer(name)
    for s in STORIES + ["", " ", "\n\n", "a\u0000b"]:
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        assert not set(ids) & set(tok.special_ids), "encode must never produce special ids"
    assert tok.encode_batch(STORIES) == [tok.encode(s) for s in STORIES]
    assert tok.vocab_size <= 2**16 and tok.eot_id in tok.special_ids
    assert tok.decode([tok.eot_id], skip_special=False) == "<|endoftext|>"
    assert tok.decode(tok.encode("hi") + [tok.eot_id]) == "hi"
    if name == "byte":
        assert (tok.vocab_size, tok.eot_id, tok.pad_id, tok.sentinel_ids) == (358, 256, 257, range(258, 358))
        assert tok.decode([tok.pad_id, 258 + 3], skip_special=False) == "<|pad|><|sentinel_3|>"
    else:
        assert (tok.vocab_size, tok.eot_id, tok.pad_id, len(tok.sentinel_ids)) == (50257, 50256, None, 0)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_decode_never_raises(name):
    tok = get_tokenizer(name)
    rng = random.Random(0)
    for skip in (True, False):
        for _ in range(50):
            ids = [rng.randrange(-5, tok.vocab_size + 1000) for _ in range(rng.randrange(0, 40))]
            assert isinstance(tok.decode(ids, skip_special=skip), str)
    assert tok.decode(np.array([tok.vocab_size, 2**16 - 1, -1])) == "\ufffd" * 3
    assert "\ufffd" in tok.decode(tok.encode("é")[:1] if name == "byte" else [171])  # half a UTF-8 char


@pytest.mark.parametrize("name", TOKENIZERS)
def test_token_byte_lengths(name):
    tok = get_tokenizer(name)
    lens = tok.token_byte_lengths()
    assert lens.shape == (tok.vocab_size,) and (lens[tok.special_ids] == 0).all()
    for s in STORIES:
        assert lens[tok.encode(s)].sum() == len(s.encode("utf-8"))


def test_unknown_tokenizer_message(tmp_path, corpus):
    with pytest.raises(ValueError, match=r"unknown tokenizer 'gtp2' \(did you mean 'gpt2'\?\); valid: gpt2, byte"):
        get_tokenizer("gtp2")
    with pytest.raises(SystemExit, match="did you mean 'byte'"):
        prep.prepare(str(corpus[0]), tokenizer="bytes", out_dir=str(tmp_path / "data"))


@pytest.mark.parametrize("name", TOKENIZERS)
def test_prepare_bins_match_per_story_encode(tmp_path, corpus, name, capsys):
    src, train, val = corpus
    meta = prep.prepare(str(src), "ts", name, str(tmp_path / "data"))
    assert "skipped 1 empty stories" in capsys.readouterr().out
    tok, out = get_tokenizer(name), tmp_path / "data/ts" / name
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["tokenizer"] == name and meta["dtype"] == "uint16" and meta["eot_id"] == tok.eot_id
    for split, stories in (("train", [s for s in train if s]), ("val", val)):
        ids = np.fromfile(out / f"{split}.bin", dtype=np.uint16)
        assert ids[0] != tok.eot_id  # EOT is appended after each story, never prepended
        assert split_bin(ids, tok.eot_id) == [tok.encode(s) for s in stories]  # also: EOT after each story
        assert meta["splits"][split] == {"stories": len(stories), "tokens": len(ids),
                                         "bytes": sum(len(s.encode("utf-8")) for s in stories)}
    assert [f["path"].rsplit("/", 1)[-1] for f in meta["source"]["files"]] == ["train-000.txt", "valid.txt.gz"]
    assert "Tom typed <|endoftext|> on the screen" in tok.decode(np.fromfile(out / "train.bin", np.uint16))


@pytest.mark.parametrize("name", TOKENIZERS)
def test_encode_stories_equals_per_story(name):
    # the gpt2 fast path joins a chunk with <|endoftext|>: BPE must not merge across story boundaries
    tricky = ["'s a start", "ends with '", "123", "456 numbers", "...", "!!! bang", "x\u00a0y", "\u3000wide",
              "'ll", "ve", "é", "🐉", "a  b   c", "Hi.\n\nBye."]
    tok = get_tokenizer(name)
    ids = prep.encode_stories(tok, tricky + STORIES[:2])
    assert ids.dtype == np.uint16
    assert ids.tolist() == [i for s in tricky + STORIES[:2] for i in tok.encode(s) + [tok.eot_id]]


def test_release_reader_edge_cases(tmp_path):
    # separator only as a whole line; CRLF; separator on the first line; no trailing newline; tiny read chunks
    raw = (f"{EOT_LINE}\nA <|endoftext|> B\r\n{EOT_LINE}\r\nsecond\n{EOT_LINE}x\nstill second\n{EOT_LINE}\n"
           f"\n{EOT_LINE}\nlast")
    p = tmp_path / "r.txt"
    p.write_text(raw, encoding="utf-8", newline="")
    for chunk in (1, 3, 7, 1 << 20):
        stories = [s for c in prep.read_release(p, chunk) for s in c]
        assert stories == ["", "A <|endoftext|> B", f"second\n{EOT_LINE}x\nstill second", "", "last"], chunk
    # invalid UTF-8 is replaced and counted
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/train.txt").write_bytes(b"caf\xe9 ok\n<|endoftext|>\n\xff\xfeyes\n<|endoftext|>\n")
    write_release(tmp_path / "bad/val.txt", ["fine"])
    meta = prep.prepare(str(tmp_path / "bad"), "bad", "byte", str(tmp_path / "data"), quiet=True)
    assert meta["replaced_bytes"] == 3
    # a file without any separator line is an error, not one giant story
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain/train.txt").write_text("just some text\nno separators\n")
    with pytest.raises(SystemExit, match="no '<\\|endoftext\\|>' separator line"):
        prep.prepare(str(tmp_path / "plain"), "p", "byte", str(tmp_path / "data"))
    assert not (tmp_path / "data/p/byte/meta.json").exists()


def test_filter_and_carved_val(tmp_path, corpus):
    src, train, _ = corpus
    kept = [s for s in train if s and re.search("dragon|castle", s)]
    # both splits present: filter both
    meta = prep.prepare(str(src), "dragon", "byte", str(tmp_path / "data"), filter="dragon|castle", quiet=True)
    tok = get_tokenizer("byte")
    ids = np.fromfile(tmp_path / "data/dragon/byte/train.bin", np.uint16)
    assert [tok.decode(s) for s in split_bin(ids, tok.eot_id)] == kept
    assert meta["splits"]["val"]["stories"] == 2 and meta["source"]["filter"] == "dragon|castle"
    # a single train file: every 20th kept story becomes val, the rest train, in order
    meta = prep.prepare(str(src / "train-000.txt"), "d1", "byte", str(tmp_path / "data"), filter="dragon", quiet=True)
    kept = [s for s in kept if "dragon" in s]
    got = {sp: [tok.decode(s) for s in split_bin(np.fromfile(tmp_path / f"data/d1/byte/{sp}.bin", np.uint16), 256)]
           for sp in ("train", "val")}
    every = prep.VAL_EVERY
    assert got["val"] == kept[every - 1::every]
    assert got["train"] == [s for k, s in enumerate(kept) if k % every != every - 1]
    assert meta["splits"]["train"]["stories"] + meta["splits"]["val"]["stories"] == len(kept)
    with pytest.raises(SystemExit, match="no stories for the train split"):
        prep.prepare(str(src), "none", "byte", str(tmp_path / "data"), filter="zzzz-no-match", quiet=True)


def test_interrupted_write_leaves_nothing(tmp_path, corpus, monkeypatch):
    src, _, _ = corpus
    calls = []

    def flaky(tok, stories):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C mid-write
        return real(tok, stories)

    real = prep.encode_stories
    monkeypatch.setattr(prep, "encode_stories", flaky)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(str(src), "ts", "gpt2", str(tmp_path / "data"), quiet=True)
    out = tmp_path / "data/ts/gpt2"
    assert sorted(p.name for p in out.iterdir()) == []  # no .bin, no .tmp, no meta.json


def test_rerun_is_noop_and_force_rebuilds(tmp_path, corpus, capsys):
    src, _, _ = corpus
    args = (str(src), "ts", "byte", str(tmp_path / "data"))
    meta = prep.prepare(*args, quiet=True)
    binf = tmp_path / "data/ts/byte/train.bin"
    mtime = binf.stat().st_mtime_ns
    assert prep.prepare(*args) == meta
    assert "nothing to do" in capsys.readouterr().out and binf.stat().st_mtime_ns == mtime
    assert prep.prepare(*args, force=True, quiet=True) == meta
    assert binf.stat().st_mtime_ns != mtime
    write_release(src / "valid.txt.gz", STORIES[:2], gz=True)  # a changed source (new sha256) rebuilds
    assert prep.prepare(*args, quiet=True)["splits"]["val"]["stories"] == 2


def test_bad_sources(tmp_path):
    with pytest.raises(SystemExit, match="no such file or directory"):
        prep.prepare(str(tmp_path / "nope"), out_dir=str(tmp_path / "data"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no non-empty"):
        prep.prepare(str(tmp_path / "empty"), out_dir=str(tmp_path / "data"))
    (tmp_path / "empty/train.txt").write_text("")
    with pytest.raises(SystemExit, match="no non-empty"):
        prep.prepare(str(tmp_path / "empty/train.txt"), out_dir=str(tmp_path / "data"))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_local_parquet_and_jsonl(tmp_path, fmt):
    datasets = pytest.importorskip("datasets")
    src = tmp_path / "src"
    src.mkdir()
    for split, rows in (("train", STORIES + [" padded story "]), ("validation", STORIES[:2])):
        ds = datasets.Dataset.from_dict({"text": rows, "id": list(range(len(rows)))})
        ds.to_parquet(str(src / f"{split}.parquet")) if fmt == "parquet" else ds.to_json(str(src / f"{split}.jsonl"))
    meta = prep.prepare(str(src), "tbl", "gpt2", str(tmp_path / "data"), quiet=True)
    tok = get_tokenizer("gpt2")
    ids = np.fromfile(tmp_path / "data/tbl/gpt2/train.bin", np.uint16)
    assert split_bin(ids, tok.eot_id) == [tok.encode(s) for s in STORIES + ["padded story"]]
    assert meta["splits"]["val"]["stories"] == 2


def test_prepare_shared_tinystories(tmp_path):
    src = REPO.parent / "shared/data/tinystories"
    if not src.is_dir():
        pytest.skip(f"{src} not present (the genuine TinyStories excerpt beside the repo)")
    for name in TOKENIZERS:
        meta = prep.prepare(str(src), "ts", name, str(tmp_path / "data"), quiet=True)
        assert (meta["splits"]["train"]["stories"], meta["splits"]["val"]["stories"]) == (2316, 1000)
        # the excerpt's README: 2,094,605 / 803,232 bytes incl. a 15-byte "\n<|endoftext|>\n" per story
        assert (meta["splits"]["train"]["bytes"], meta["splits"]["val"]["bytes"]) == (2059865, 788232)
        assert meta["replaced_bytes"] == 0 and meta["empty_stories"] == 0
    tok, ids = get_tokenizer("gpt2"), np.fromfile(tmp_path / "data/ts/gpt2/val.bin", np.uint16)
    stories = [s for c in prep.read_release(src / "valid.txt") for s in c]
    assert split_bin(ids, tok.eot_id) == tok.encode_batch(stories)
