"""
Tokenize TinyStories into flat uint16 bins for train.py, one folder per tokenizer:

    python prepare.py                                        # HF hub roneneldan/TinyStories, both tokenizers
    python prepare.py --source=../shared/data/tinystories --tokenizer=byte   # local release files, byte ids only
    python prepare.py --source=... --filter="dragon|castle" --name=tinystories_dragon   # a themed subset

writes data/<name>/<tokenizer>/{train.bin,val.bin,meta.json}. Each bin is np.uint16 ids, every story followed by the
EOT id (appended, never prepended: the file starts with story text, and evaluation prepends one EOT itself).
A build is written into a folder of its own that replaces the previous build only when complete (meta.json, last,
marks it), so a failed rebuild keeps the old one; a rerun with the same source fingerprint (file sizes + sha256,
filter, tokenizer) is a no-op unless --force. Invalid UTF-8, in any source format, is replaced with U+FFFD and a
warning names the file and the count; a truncated or corrupt file stops the build in one line that names it.

--source is a TinyStories .txt / .txt.gz release file (each story followed by a line that is exactly <|endoftext|>;
"<|endoftext|>" anywhere else is ordinary story text), a .parquet / .jsonl / .json file with a `text` column, or a
folder of these. In a folder, a file whose name has the word valid/val/validation is the val split, any other is
train. If there is no val file (or with --filter and a single source), every 20th kept train story goes to val.
"""
import argparse
import contextlib
import ctypes
import errno
import functools
import gzip
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import shutil
import signal
import time
import zlib
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from errors import one_line_errors
from tokenizer import get_tokenizer, train_bpe

HF_NAME = "roneneldan/TinyStories"
EOT = "<|endoftext|>"
CHUNK_BYTES = 4 << 20  # text read per step: big enough that tiktoken/numpy dominate, small enough for 2 cores to share
VAL_EVERY = 20  # carved val split: every 20th story (5%), deterministic and streaming-friendly
BPE_TRAIN_BYTES = 200_000_000  # a trained BPE learns from the train split's first 200 MB (~10% of TinyStories)
# a separator is a whole line "<|endoftext|>" (\r allowed for CRLF files). The reader keeps a "\n" before each chunk
# and adds one at the end of the file, so the lookahead never has to guess whether a read ended mid-line
SEP_RE = re.compile(rb"\n<\|endoftext\|>\r?(?=\n)")
WS = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # the ASCII characters that str.strip() removes
TABLE_KINDS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def clean(parts: list[bytes]) -> tuple[list[bytes], int]:
    """Raw stories -> (str.strip()ped valid UTF-8 stories as bytes, number of invalid UTF-8 sequences replaced).
    Bytes all the way: most stories are ASCII, and ASCII needs no decode, no validation and no re-encode."""
    parts, n_bad = list(map(bytes.strip, parts, itertools.repeat(WS))), 0  # map: no per-story bytecode
    for i in np.flatnonzero(~np.fromiter(map(bytes.isascii, parts), bool, len(parts))):  # the rest: via str
        s = parts[i].decode("utf-8", errors="replace")
        n_bad += s.count("\ufffd") - parts[i].count("\ufffd".encode())  # a genuine U+FFFD in the text is not bad
        parts[i] = s.strip().encode("utf-8")
    return parts, n_bad


def named(read):
    """A reader that names its file when the file fails: a truncated or non-gzip .gz, a cut or malformed table, and
    how many invalid UTF-8 sequences it replaced (the one policy for every source: U+FFFD, and this warning)."""
    @functools.wraps(read)
    def reader(path, *args):
        n_bad = 0
        try:
            for stories, bad in read(path, *args):
                n_bad += bad
                yield stories, bad
        except (EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError, ValueError, OSError) as e:
            raise SystemExit(f"{path or HF_NAME} is truncated or corrupt ({type(e).__name__}: {str(e)[:100]}): "
                             f"download or copy it again; the previous build is kept") from None
        if n_bad:
            print(f"warning: {path or HF_NAME}: {n_bad:,} invalid UTF-8 sequences replaced with U+FFFD")
    return reader


@named
def read_release(path: Path, chunk_bytes: int | None = None):
    """Yield clean() of the stories (empties included) of a .txt/.txt.gz release file, ~chunk_bytes at a time.
    SystemExit if a non-empty file has no separator line at all (plain text is not silently one giant story)."""
    carry, n_sep = b"\n", 0  # the leading "\n" lets a separator on the very first line match
    with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as f:
        while True:
            raw = f.read(chunk_bytes or CHUNK_BYTES)
            parts = SEP_RE.split(carry + (raw or b"\n"))  # UTF-8 never has "\n" inside a character: bytes are safe
            n_sep += len(parts) - 1
            if raw:
                carry = parts.pop()  # the unfinished story (or separator) continues in the next read
            stories, n_bad = clean(parts)
            if not raw and not stories[-1]:
                stories.pop()  # nothing after the final separator: not an empty story
            if n_sep == 0 and not raw and stories:
                raise SystemExit(f"{path}: no '{EOT}' separator line: expected the TinyStories .txt release format "
                                 f"(each story followed by a line {EOT})")
            yield stories, n_bad
            if not raw:
                return


@named
def read_table(path: Path | None, split: str = "train", batch: int = 4096):
    """Yield clean() of the `text` column of a local parquet/json(l) file, or of the HF hub's split if path is None:
    read as arrow bytes, so that invalid UTF-8 meets the same policy as in a .txt file."""
    import datasets
    import pyarrow as pa
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a bad file's error is ours to say, in one line
    if path is None:
        # streaming: rows arrive in batches, nothing is cached to disk first. NOTE: --tokenizer=all streams twice
        ds = datasets.load_dataset(HF_NAME, split=split, streaming=True)
    else:
        ds = datasets.load_dataset(TABLE_KINDS[path.suffix], data_files=str(path), split="train", streaming=True)
    for t in ds.with_format("arrow").iter(batch_size=batch):
        if "text" not in t.column_names:
            raise SystemExit(f"{path or HF_NAME}: no 'text' column (columns: {', '.join(t.column_names)})")
        yield clean([b or b"" for b in t.column("text").cast(pa.binary()).to_pylist()])


@functools.lru_cache(maxsize=None)
def _sha256(path: str, size: int, mtime: float) -> str:  # size/mtime in the key: a changed file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 24):
            h.update(b)
    return h.hexdigest()


def find_sources(source: str | None) -> tuple[dict, dict]:
    """-> ({"train": [readers], "val": [readers]}, fingerprint dict for meta.json). SystemExit on bad input."""
    if source is None:
        import datasets
        print(f"loading {HF_NAME} from the HF hub (streaming; pass --source=DIR for local files)...")
        try:  # fail here, before any output file is opened
            datasets.load_dataset(HF_NAME, streaming=True)
        except Exception as e:
            raise SystemExit(f"could not load {HF_NAME} from the HF hub ({type(e).__name__}); offline? "
                             f"pass --source=DIR, e.g. --source=data/tinystories_excerpt")
        return {"train": [read_table(None, "train")], "val": [read_table(None, "validation")]}, \
            {"name": HF_NAME, "files": []}
    p = Path(source)
    if not p.exists():
        raise SystemExit(f"--source={source}: no such file or directory")
    # files we can read; anything else in the folder (README.md, checksums) is ignored
    ok = lambda f: f.is_file() and (f.name.endswith((".txt", ".txt.gz")) or f.suffix in TABLE_KINDS)
    files = [f for f in sorted(p.iterdir()) if ok(f)] if p.is_dir() else [p] if ok(p) else []
    if not files or all(f.stat().st_size == 0 for f in files):
        raise SystemExit(f"--source={source}: no non-empty .txt, .txt.gz, .parquet, .jsonl or .json files")
    splits = {"train": [], "val": []}
    for f in files:
        words = set(re.split(r"[^a-z]+", f.name.lower()))  # whole words: "interval.txt" is not a val file
        reader = read_release(f) if f.name.endswith((".txt", ".txt.gz")) else read_table(f)
        splits["val" if words & {"valid", "val", "validation"} else "train"].append(reader)
    if not splits["train"]:
        raise SystemExit(f"--source={source}: only val files found; need a train file too")
    # the fingerprint: a rerun with identical bytes (and filter, tokenizer) is a no-op
    st = [(f, f.stat()) for f in files]
    return splits, {"name": str(p), "files": [{"path": str(f), "size": s.st_size,
                                               "sha256": _sha256(str(f.resolve()), s.st_size, s.st_mtime)}
                                              for f, s in st]}


def encode_stories(tok, stories: list[bytes]) -> np.ndarray:
    """uint16 ids of stories (valid UTF-8), each followed by tok.eot_id; identical to per-story encode + [eot_id]."""
    if tok.name == "byte":
        ids = np.frombuffer(b"\0".join(stories + [b""]), np.uint8).astype(np.uint16)  # [b""]: a trailing "\0" too
        ends = np.cumsum(np.fromiter(map(len, stories), np.int64, len(stories)) + 1) - 1
        ids[ends] = tok.eot_id  # each "\0" placeholder becomes EOT
        return ids
    text = (EOT.encode().join(stories) + EOT.encode()).decode("utf-8")
    if tok.name == "gpt2" and text.count(EOT) == len(stories):
        # one tiktoken call per chunk. Its special-token split encodes each story on its own, so BPE never merges
        # across a story boundary
        return tok.enc.encode_to_numpy(text, allowed_special={EOT}).astype(np.uint16)
    # a trained BPE (tokenizers batches in Rust), or a story holds a literal "<|endoftext|>": story by story
    ids = tok.encode_batch([s.decode("utf-8") for s in stories])
    return np.concatenate([np.array(i + [tok.eot_id], np.uint16) for i in ids])


def iter_chunks(splits: dict, pattern, carve: bool, stats: dict):
    """Yield (split, stories): empty stories dropped (counted in stats), --filter applied, val carved if asked:
    kept train story number k (from 0) goes to val when k % VAL_EVERY == VAL_EVERY - 1."""
    k0 = 0
    for split, readers in splits.items():
        for stories, n_bad in (chunk for r in readers for chunk in r):
            stats["replaced_bytes"] += n_bad
            stats["empty_stories"] += stories.count(b"")  # "" after strip(): no text to learn from
            stories = [s for s in stories if s and pattern.search(s.decode("utf-8"))] if pattern else \
                list(filter(None, stories))
            if not carve:
                yield split, stories
                continue
            j = (VAL_EVERY - 1 - k0) % VAL_EVERY  # the first val story of this chunk
            k0 += len(stories)
            val = stories[j::VAL_EVERY]
            del stories[j::VAL_EVERY]
            yield "train", stories
            yield "val", val


def worker_init():
    """In each worker process: ignore Ctrl-C (the main process cleans up), and die with the parent. Linux's
    prctl(PR_SET_PDEATHSIG) sends SIGKILL the moment the parent dies, even of SIGKILL (which nothing can catch);
    without it, workers blocked on their pipes outlived a killed prepare.py. Elsewhere only the first part holds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def write_bins(tok, chunks, files: dict, counts: dict, pbar, n_proc: int):
    """Encode (split, stories) chunks in n_proc worker processes (inline if 0), append them in order to files[split].
    The main process reads, splits and writes meanwhile; at most n_proc + 1 chunks are in flight: memory stays flat."""
    # gpt2: processes, not threads. tiktoken releases the GIL, but the Python around it does not: 2 threads reached
    # 6M tokens/s here, 2 processes 12M. Fork: the workers inherit the loaded BPE; they ignore Ctrl-C, so that the
    # main process alone cleans up. byte stays inline: its numpy work costs less than shipping the ids back.
    # A writer thread overlaps the page-cache writes (GIL released) with the reading and splitting
    pool = ProcessPoolExecutor(n_proc, multiprocessing.get_context("fork"), worker_init) if n_proc else None
    with pool or contextlib.nullcontext(), ThreadPoolExecutor(1) as writer:
        pending, writes = deque(), deque()
        for split, stories in itertools.chain(chunks, [(None, [])]):  # (None, []): the end, flush everything
            if stories:
                ids = pool.submit(encode_stories, tok, stories) if pool else encode_stories(tok, stories)
                pending.append((split, len(stories), sum(map(len, stories)), ids))
            while pending and (len(pending) > n_proc or split is None):
                s, n, nbytes, ids = pending.popleft()
                ids = ids.result() if pool else ids
                writes.append(writer.submit(ids.tofile, files[s]))  # in order: a single writer thread
                if len(writes) > 2:
                    writes.popleft().result()
                for key, v in (("stories", n), ("tokens", len(ids)), ("bytes", nbytes)):
                    counts[s][key] += v
                pbar.update(nbytes)
        for w in writes:
            w.result()


def bpe_for(tokenizer: str, source, tokenizer_from: str | None, filter: str | None):
    """(definition, settings) of a trained BPE: the one in tokenizer_from (a prepared folder: a themed subset is
    encoded with its base's tokenizer), or one trained now on the train split's first BPE_TRAIN_BYTES of stories."""
    if tokenizer_from:
        path = os.path.join(tokenizer_from, "tokenizer.json")
        if not os.path.isfile(path):
            raise SystemExit(f"--tokenizer_from={tokenizer_from} has no tokenizer.json: pass a folder that prepare.py "
                             f"built with --tokenizer=bpeN, e.g. data/tinystories/{tokenizer}")
        return open(path, encoding="utf-8").read(), {"from": tokenizer_from}
    if filter:
        raise SystemExit(f"--filter with --tokenizer={tokenizer}: encode a themed subset with its base's tokenizer, "
                         f"--tokenizer_from=data/<base>/{tokenizer}, so that a model of the base reads it")
    splits, _ = find_sources(source)
    t0, seen = time.time(), 0

    def texts():  # the first BPE_TRAIN_BYTES of train stories (llama2.c trains on a sample too); no carved val story
        nonlocal seen
        for split, stories in iter_chunks(splits, None, not splits["val"], {"empty_stories": 0, "replaced_bytes": 0}):
            if split == "train" and seen < BPE_TRAIN_BYTES:
                seen += sum(map(len, stories))
                yield from (s.decode("utf-8") for s in stories)
    definition = train_bpe(texts(), int(tokenizer[3:]))
    return definition, {"vocab_size": int(tokenizer[3:]), "trained_on_bytes": seen, "seconds": time.time() - t0}


def prepare(source: str | None = None, name: str = "tinystories", tokenizer: str = "gpt2", out_dir: str = "data",
            filter: str | None = None, force: bool = False, quiet: bool = False,
            tokenizer_from: str | None = None) -> dict:
    """Build <out_dir>/<name>/<tokenizer>/{train,val}.bin + meta.json (+ tokenizer.json for a trained BPE, bpeN:
    trained here on the train split, or taken from tokenizer_from); returns the meta dict.
    SystemExit with a one-line message on bad input; no final file is written then, nor on any exception."""
    try:
        pattern = re.compile(filter) if filter else None
    except re.error as e:
        raise SystemExit(f"--filter={filter!r}: bad regex ({e})")
    if not re.fullmatch(r"bpe\d+", tokenizer):
        try:
            tok = get_tokenizer(tokenizer)
        except ValueError as e:  # an unknown name (unreachable GPT-2 BPE files raise SystemExit themselves)
            raise SystemExit(str(e))
    splits, src = find_sources(source)
    carve = not splits["val"]  # e.g. a single train release file, themed (--filter) or not
    src.update(filter=filter, val_from=f"every {VAL_EVERY}th kept train story" if carve else "val files",
               tokenizer_from=tokenizer_from)
    out = Path(out_dir) / name / tokenizer
    meta_path = out / "meta.json"
    if meta_path.exists() and not force:
        old = json.loads(meta_path.read_text())
        # paths are left out: the same files reached through another relative path are still the same data
        same = lambda s: ([(f["size"], f["sha256"]) for f in s["files"]], s.get("filter"), s.get("val_from"),
                          s.get("tokenizer_from"))
        if old.get("tokenizer") == tokenizer and same(old["source"]) == same(src):
            print(f"{out}: already built from this source, nothing to do (--force rebuilds)")
            return old
    if re.fullmatch(r"bpe\d+", tokenizer):  # a BPE of our own: trained here (or read from tokenizer_from)
        definition, settings = bpe_for(tokenizer, source, tokenizer_from, filter)
        tok = get_tokenizer(tokenizer, definition)
        src.update(tokenizer_sha256=hashlib.sha256(definition.encode()).hexdigest(), tokenizer_settings=settings)
    # the new build goes into a folder of its own, which replaces the old build only once it is complete: a build that
    # fails (a bad file, a --filter that matches nothing, a full disk, Ctrl-C) leaves the previous one as it was
    new = out.with_name(f".{out.name}.tmp{os.getpid()}")
    new.mkdir(parents=True, exist_ok=True)
    if tok.definition:  # beside the bins: train.py reads it, and every checkpoint carries it
        (new / "tokenizer.json").write_text(tok.definition, encoding="utf-8")
    stats = {"empty_stories": 0, "replaced_bytes": 0}
    counts = {s: {"stories": 0, "tokens": 0, "bytes": 0} for s in ("train", "val")}
    tmp = {s: new / f"{s}.bin" for s in counts}
    # worker processes pay off past a few chunks (forking costs ~50 ms); the HF hub's size is unknown: assume big
    big = not src["files"] or sum(f["size"] for f in src["files"]) > 2 * CHUNK_BYTES
    n_proc = (os.cpu_count() or 1) if tok.name == "gpt2" and big else 0
    t0 = time.time()
    try:
        with open(tmp["train"], "wb") as ftrain, open(tmp["val"], "wb") as fval, \
                tqdm(unit="B", unit_scale=True, unit_divisor=1000, desc=f"{name}/{tok.name}", disable=quiet) as pbar:
            write_bins(tok, iter_chunks(splits, pattern, carve, stats), {"train": ftrain, "val": fval}, counts, pbar,
                       n_proc)
        for s, c in counts.items():
            if c["stories"] == 0:
                match = f" matching --filter={filter!r}" if filter else ""
                raise SystemExit(f"no stories for the {s} split in {source or HF_NAME}{match}; the previous build is kept")
        meta = {"tokenizer": tok.name, "vocab_size": tok.vocab_size, "eot_id": tok.eot_id, "pad_id": tok.pad_id,
                "sentinel_ids": [tok.sentinel_ids.start, tok.sentinel_ids.stop], "dtype": "uint16",
                "splits": counts, "source": src, **stats}
        (new / "meta.json").write_text(json.dumps(meta, indent=2))  # its presence marks a complete build
    except BaseException as e:  # incl. Ctrl-C: leave no partial build behind, and the previous one as it was
        shutil.rmtree(new, ignore_errors=True)
        # numpy's tofile reports a short write as "N requested and M written", without errno
        if isinstance(e, OSError) and (e.errno == errno.ENOSPC or "requested and" in str(e)):
            per_byte = 2.0 if tok.name == "byte" else 0.5  # uint16 ids: 2 bytes per byte, or per ~4-byte GPT-2 token
            need = sum(f["size"] * (3 if f["path"].endswith(".gz") else 1) for f in src["files"]) * per_byte / 1e6
            raise SystemExit(f"disk full writing {out}: the bins need about {need:,.0f} MB; the partial files were "
                             f"removed and the previous build kept (free space, or pass --out_dir elsewhere)") from None
        raise
    if out.exists():  # a reader with the old bins memmapped keeps their (old) inodes
        os.replace(out, new.with_name(new.name + ".old"))
    os.replace(new, out)
    shutil.rmtree(new.with_name(new.name + ".old"), ignore_errors=True)
    if stats["empty_stories"]:
        print(f"warning: skipped {stats['empty_stories']} empty stories")
    if not quiet:
        el = time.time() - t0
        for s, c in counts.items():
            print(f"{out}/{s}.bin: {c['stories']:,} stories, {c['tokens']:,} tokens, {c['bytes']:,} bytes")
        print(f"{el:.1f}s, {sum(c['tokens'] for c in counts.values()) / el / 1e6:.2f}M tokens/s")
    return meta


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=None, help="release .txt/.txt.gz, parquet/jsonl, or a folder; default: HF hub")
    ap.add_argument("--name", default=None, help="output folder under --out_dir (default: tinystories)")
    ap.add_argument("--tokenizer", default="all", help="gpt2 | byte | all (both) | bpeN: a byte-level BPE of N ids "
                    "trained here on the train split")
    ap.add_argument("--tokenizer_from", default=None, help="bpeN: the folder of a build whose tokenizer.json to use "
                    "(e.g. data/tinystories/bpe4096): a themed subset must read as its base model does")
    ap.add_argument("--out_dir", default="data")
    ap.add_argument("--filter", default=None, help="keep only stories matching this regex (re.search)")
    ap.add_argument("--force", action="store_true", help="rebuild even if meta.json matches the source")
    one_line_errors()
    args = ap.parse_args()
    if args.filter and args.name is None:  # a themed subset must not overwrite the full data's bins
        raise SystemExit("--filter needs --name, e.g. --name=tinystories_dragon")
    for t in ("gpt2", "byte") if args.tokenizer == "all" else [args.tokenizer]:
        prepare(args.source, args.name or "tinystories", t, args.out_dir, args.filter, args.force,
                tokenizer_from=args.tokenizer_from)
