"""
Tokenize TinyStories into flat uint16 bins for train.py, one folder per tokenizer:

    python prepare.py                                        # HF hub roneneldan/TinyStories, both tokenizers
    python prepare.py --source=../shared/data/tinystories --tokenizer=byte   # local release files, byte ids only
    python prepare.py --source=... --filter="dragon|castle" --name=tinystories_dragon   # a themed subset

writes data/<name>/<tokenizer>/{train.bin,val.bin,meta.json}. Each bin is np.uint16 ids, every story followed by the
EOT id (appended, never prepended: the file starts with story text, and evaluation prepends one EOT itself).
meta.json is written last, so its presence marks a complete build; a rerun with the same source fingerprint
(file sizes + sha256, filter, tokenizer) is a no-op unless --force.

--source is a TinyStories .txt / .txt.gz release file (each story followed by a line that is exactly <|endoftext|>;
"<|endoftext|>" anywhere else is ordinary story text), a .parquet / .jsonl / .json file with a `text` column, or a
folder of these. In a folder, a file whose name has the word valid/val/validation is the val split, any other is
train. If there is no val file (or with --filter and a single source), every 20th kept train story goes to val.
"""
import argparse
import codecs
import functools
import gzip
import hashlib
import json
import os
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tokenizer import NAMES, get_tokenizer

HF_NAME = "roneneldan/TinyStories"
EOT = "<|endoftext|>"
CHUNK_BYTES = 4 << 20  # text read per step: big enough that tiktoken/numpy dominate, small enough for 2 cores to share
VAL_EVERY = 20  # carved val split: every 20th story (5%), deterministic and streaming-friendly
# a separator is a whole line "<|endoftext|>" (\r allowed for CRLF files); the reader keeps a "\n" before each chunk
SEP_RE = re.compile(r"\n<\|endoftext\|>\r?(?=\n|\Z)")
TABLE_KINDS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}

_replaced = [0]  # invalid UTF-8 sequences seen by the reader (one U+FFFD each); reset per prepare() call


def _count_replace(err):
    _replaced[0] += 1
    return "\ufffd", err.end


codecs.register_error("nanostories_replace", _count_replace)


def read_release(path: Path, chunk_bytes: int = CHUNK_BYTES):
    """Yield lists of stripped stories (empties included) from a .txt/.txt.gz release file, ~chunk_bytes at a time.
    SystemExit if a non-empty file has no separator line at all (plain text is not silently one giant story)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="nanostories_replace")
    carry, n_sep = "\n", 0  # the leading "\n" lets a separator on the very first line match
    with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            text = carry + decoder.decode(raw, final=not raw)
            if raw:  # split only whole lines: a separator may straddle two reads
                cut = text.rfind("\n")
                if cut <= 0:
                    carry = text
                    continue
                text, carry = text[:cut], text[cut:]
            parts = SEP_RE.split(text)
            n_sep += len(parts) - 1
            if raw:
                carry = parts.pop() + carry  # the unfinished story continues in the next read
            elif not parts[-1].strip():
                parts.pop()  # nothing after the final separator: not an empty story
            if n_sep == 0 and not raw and parts:
                raise SystemExit(f"{path}: no '{EOT}' separator line: expected the TinyStories .txt release format "
                                 f"(each story followed by a line {EOT})")
            yield [p.strip() for p in parts]
            if not raw:
                return


def read_table(path: Path | None, split: str = "train", batch: int = 4096):
    """Yield lists of stripped stories from a local parquet/json(l) file, or from the HF hub if path is None."""
    import datasets
    if path is None:
        # streaming: rows arrive in batches, nothing is cached to disk first. NOTE: --tokenizer=all streams twice
        ds = datasets.load_dataset(HF_NAME, split=split, streaming=True)
    else:
        ds = datasets.load_dataset(TABLE_KINDS[path.suffix], data_files=str(path), split="train", streaming=True)
    for b in ds.iter(batch_size=batch):
        if "text" not in b:
            raise SystemExit(f"{path or HF_NAME}: no 'text' column (columns: {', '.join(b)})")
        yield [s.strip() for s in b["text"]]


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
                             f"pass --source=DIR, e.g. --source=../shared/data/tinystories")
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


def encode_stories(tok, stories: list[str]) -> np.ndarray:
    """uint16 ids of stories, each followed by tok.eot_id; identical to per-story tok.encode(s) + [eot_id]."""
    if tok.name == "byte":
        bs = [s.encode("utf-8") for s in stories]
        ids = np.frombuffer(b"\0".join(bs + [b""]), np.uint8).astype(np.uint16)  # [b""]: a trailing "\0" too
        ids[np.cumsum([len(b) + 1 for b in bs]) - 1] = tok.eot_id  # each "\0" placeholder becomes EOT
        return ids
    text = EOT.join(stories) + EOT
    if text.count(EOT) == len(stories):
        # one tiktoken call per chunk (it releases the GIL, so threads run in parallel). Its special-token split
        # encodes each story on its own, so BPE never merges across a story boundary
        return tok.enc.encode_to_numpy(text, allowed_special={EOT}).astype(np.uint16)
    # some story holds a literal "<|endoftext|>" that must stay ordinary text: the slower per-story path
    return np.concatenate([np.array(ids + [tok.eot_id], np.uint16) for ids in tok.encode_batch(stories)])


def _encode_job(tok, stories):
    """-> (ids, UTF-8 bytes of the stripped story text, separators excluded), run in a worker thread."""
    ids = encode_stories(tok, stories)
    return ids, len(ids) - len(stories) if tok.name == "byte" else sum(len(s.encode("utf-8")) for s in stories)


def iter_chunks(splits: dict, pattern, carve: bool, stats: dict):
    """Yield (split, stories): empty stories dropped (counted in stats), --filter applied, val carved if asked:
    kept train story number k (from 0) goes to val when k % VAL_EVERY == VAL_EVERY - 1."""
    k0 = 0
    for split, readers in splits.items():
        for stories in (chunk for r in readers for chunk in r):
            stats["empty_stories"] += sum(1 for s in stories if not s)  # "" after strip(): no text to learn from
            stories = [s for s in stories if s and (pattern is None or pattern.search(s))]
            if not carve:
                yield split, stories
                continue
            is_val = [(k0 + k) % VAL_EVERY == VAL_EVERY - 1 for k in range(len(stories))]
            k0 += len(stories)
            yield "train", [s for s, v in zip(stories, is_val) if not v]
            yield "val", [s for s, v in zip(stories, is_val) if v]


def write_bins(tok, chunks, files: dict, counts: dict, pbar):
    """Encode (split, stories) chunks on worker threads and append them in order to files[split]."""
    n_threads, t0 = min(8, os.cpu_count() or 1), time.time()
    # threads, not processes: tiktoken and numpy release the GIL, and no text gets pickled. A separate writer
    # thread because page-cache writes cost about as much as byte encoding here
    with ThreadPoolExecutor(n_threads) as pool, ThreadPoolExecutor(1) as writer:
        pending, writes = deque(), deque()

        def drain(limit):
            while len(pending) > limit:
                split, n, fut = pending.popleft()
                ids, nbytes = fut.result()
                # straight to the open file, in order (1 writer thread): no per-story Python lists of ints
                writes.append(writer.submit(ids.tofile, files[split]))
                while len(writes) > (limit and 2):  # limit 0: flush everything
                    writes.popleft().result()
                for key, v in (("stories", n), ("tokens", len(ids)), ("bytes", nbytes)):
                    counts[split][key] += v
                n_done = sum(c["stories"] for c in counts.values())
                pbar.set_postfix_str(f"{n_done / max(time.time() - t0, 1e-9):,.0f} stories/s", refresh=False)
                pbar.update(nbytes)

        for split, stories in chunks:
            if stories:
                pending.append((split, len(stories), pool.submit(_encode_job, tok, stories)))
            drain(n_threads + 1)  # a few chunks in flight: all cores busy, memory flat
        drain(0)


def prepare(source: str | None = None, name: str = "tinystories", tokenizer: str = "gpt2", out_dir: str = "data",
            filter: str | None = None, force: bool = False, quiet: bool = False) -> dict:
    """Build <out_dir>/<name>/<tokenizer>/{train,val}.bin + meta.json; returns the meta dict.
    SystemExit with a one-line message on bad input; no final file is written then, nor on any exception."""
    try:
        tok = get_tokenizer(tokenizer)
    except (ValueError, RuntimeError) as e:  # unknown name, or the GPT-2 BPE files are unreachable
        raise SystemExit(str(e))
    try:
        pattern = re.compile(filter) if filter else None
    except re.error as e:
        raise SystemExit(f"--filter={filter!r}: bad regex ({e})")
    splits, src = find_sources(source)
    carve = not splits["val"]  # e.g. a single train release file, themed (--filter) or not
    src.update(filter=filter, val_from=f"every {VAL_EVERY}th kept train story" if carve else "val files")
    out = Path(out_dir) / name / tok.name
    meta_path = out / "meta.json"
    if meta_path.exists() and not force:
        old = json.loads(meta_path.read_text())
        # paths are left out: the same files reached through another relative path are still the same data
        same = lambda s: ([(f["size"], f["sha256"]) for f in s["files"]], s.get("filter"), s.get("val_from"))
        if old.get("tokenizer") == tok.name and same(old["source"]) == same(src):
            print(f"{out}: already built from this source, nothing to do (--force rebuilds)")
            return old
    out.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # the old meta would vouch for bins that are about to be replaced
    _replaced[0] = 0
    stats, counts = {"empty_stories": 0}, {s: {"stories": 0, "tokens": 0, "bytes": 0} for s in ("train", "val")}
    tmp = {s: out / f"{s}.bin.tmp" for s in counts}
    t0 = time.time()
    try:
        with open(tmp["train"], "wb") as ftrain, open(tmp["val"], "wb") as fval, \
                tqdm(unit="B", unit_scale=True, unit_divisor=1000, desc=f"{name}/{tok.name}", disable=quiet) as pbar:
            write_bins(tok, iter_chunks(splits, pattern, carve, stats), {"train": ftrain, "val": fval}, counts, pbar)
        for s, c in counts.items():
            if c["stories"] == 0:
                raise SystemExit(f"no stories for the {s} split in {source or HF_NAME}"
                                 + (f" matching --filter={filter!r}" if filter else ""))
    except BaseException:  # incl. Ctrl-C: leave no partial bins behind
        for t in tmp.values():
            t.unlink(missing_ok=True)
        raise
    for s in counts:  # atomic per file; a reader with the old bin memmapped keeps its (old) inode
        os.replace(tmp[s], out / f"{s}.bin")
    if stats["empty_stories"]:
        print(f"warning: skipped {stats['empty_stories']} empty stories")
    if _replaced[0]:
        print(f"warning: {_replaced[0]} invalid UTF-8 sequences replaced with U+FFFD")
    meta = {"tokenizer": tok.name, "vocab_size": tok.vocab_size, "eot_id": tok.eot_id, "pad_id": tok.pad_id,
            "sentinel_ids": [tok.sentinel_ids.start, tok.sentinel_ids.stop], "dtype": "uint16",
            "splits": counts, "source": src, "replaced_bytes": _replaced[0], **stats}
    with open(meta_path.with_suffix(".json.tmp"), "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(meta_path.with_suffix(".json.tmp"), meta_path)  # last: its presence marks a complete build
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
    ap.add_argument("--tokenizer", default="all", help=f"{' | '.join(NAMES)} | all")
    ap.add_argument("--out_dir", default="data")
    ap.add_argument("--filter", default=None, help="keep only stories matching this regex (re.search)")
    ap.add_argument("--force", action="store_true", help="rebuild even if meta.json matches the source")
    args = ap.parse_args()
    if args.filter and args.name is None:  # a themed subset must not overwrite the full data's bins
        raise SystemExit("--filter needs --name, e.g. --name=tinystories_dragon")
    for t in NAMES if args.tokenizer == "all" else [args.tokenizer]:
        prepare(args.source, args.name or "tinystories", t, args.out_dir, args.filter, args.force)
