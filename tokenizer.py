"""
The tokenizers of nanostories, selected by name (the name is stored in data/<name>/<tokenizer>/meta.json and in
every checkpoint, so nothing is ever guessed):

    gpt2  GPT-2 BPE via tiktoken, 50257 ids, <|endoftext|> = 50256
    byte  raw UTF-8 bytes 0..255, then <|endoftext|> = 256, <|pad|> = 257, and 100 ByT5-style span-corruption
          sentinels 258..357 (https://arxiv.org/abs/2105.13626, section 3.1)
    bpeN  a byte-level BPE of N ids trained on the stories by prepare.py (train_bpe, Hugging Face tokenizers): its
          definition (tokenizer.json) sits beside the bins and travels in every checkpoint, named by its sha256

    from tokenizer import get_tokenizer
    tok = get_tokenizer("byte")
    ids = tok.encode("Once upon a time")      # ordinary text only: never produces a special id
    tok.decode(ids + [tok.eot_id], skip_special=False)  # 'Once upon a time<|endoftext|>'

tiktoken reads the GPT-2 BPE files from $TIKTOKEN_CACHE_DIR when offline (e.g. ../shared/tiktoken_cache).
"""
import difflib
import functools
import os
import re

import numpy as np

NAMES = ("gpt2", "byte", "bpeN")
N_SENTINELS = 100  # ByT5 uses 100 sentinel ids too; plenty for span corruption of 16-1024 token blocks


@functools.lru_cache(maxsize=None)
def _tiktoken_gpt2():
    # cached: building the Encoding parses the 50k-merge BPE file (~0.3 s), and every caller would pay it again
    import tiktoken
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # offline, tiktoken tries to download the BPE files and fails deep inside requests
        raise SystemExit(f"could not load the GPT-2 BPE ({type(e).__name__}); offline? set TIKTOKEN_CACHE_DIR to "
                         "a folder holding tiktoken's cached gpt2 files, e.g. ../shared/tiktoken_cache") from None


class Tokenizer:
    """Common decode logic; the subclasses below fill in the ids and encode()."""
    name: str
    vocab_size: int
    eot_id: int            # appended after each story in the bins (never prepended)
    pad_id: int | None
    sentinel_ids: range
    special_ids: list[int]  # every id that stands for no text
    definition: str | None = None  # a trained BPE's tokenizer.json text; the fixed tokenizers have none

    def _special_text(self, i: int) -> str:
        if i == self.eot_id:
            return "<|endoftext|>"
        if i == self.pad_id:
            return "<|pad|>"
        if i in self.sentinel_ids:
            return f"<|sentinel_{i - self.sentinel_ids.start}|>"
        return "\ufffd"  # out-of-range id: render as the replacement char rather than raise

    def _id_bytes(self, i: int) -> bytes | None:
        """UTF-8 bytes of one ordinary id, or None if it is special or out of range."""
        raise NotImplementedError

    def encode(self, s: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(s) for s in texts]

    def decode(self, ids, skip_special: bool = True) -> str:
        """ids: any iterable of ints (list, numpy array, torch tensor). Never raises: invalid UTF-8 becomes U+FFFD,
        out-of-range ids become U+FFFD, special ids are dropped (skip_special) or rendered as e.g. '<|pad|>'."""
        out, buf = [], bytearray()
        for i in (int(i) for i in ids):
            b = self._id_bytes(i)
            if b is not None:
                buf += b
                continue
            # flush pending bytes first so a multi-byte character split across ids still decodes
            out.append(buf.decode("utf-8", errors="replace"))
            buf = bytearray()
            if not skip_special or not (0 <= i < self.vocab_size):
                out.append(self._special_text(i))
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def token_byte_lengths(self) -> np.ndarray:
        """int64 array (vocab_size,): UTF-8 bytes each id stands for, 0 for special ids. Used for bits-per-byte."""
        return np.array([len(self._id_bytes(i) or b"") for i in range(self.vocab_size)], dtype=np.int64)


class GPT2Tokenizer(Tokenizer):
    name, vocab_size, eot_id, pad_id, sentinel_ids = "gpt2", 50257, 50256, None, range(0)

    def __init__(self):
        self.enc = _tiktoken_gpt2()
        assert self.enc.n_vocab == self.vocab_size and self.enc.eot_token == self.eot_id
        self.special_ids = [self.eot_id]

    def _id_bytes(self, i):
        return self.enc.decode_single_token_bytes(i) if 0 <= i < self.eot_id else None

    def encode(self, s):
        # encode_ordinary: a literal "<|endoftext|>" inside a story is ordinary text, never the EOT id
        return self.enc.encode_ordinary(s)

    def encode_batch(self, texts):
        return self.enc.encode_ordinary_batch(texts)

    def decode(self, ids, skip_special=True):
        ids = [int(i) for i in ids]
        if all(0 <= i < self.eot_id for i in ids):  # fast path: tiktoken in one call
            return self.enc.decode(ids, errors="replace")
        return super().decode(ids, skip_special)


class ByteTokenizer(Tokenizer):
    name, eot_id, pad_id = "byte", 256, 257
    sentinel_ids = range(258, 258 + N_SENTINELS)
    vocab_size = 258 + N_SENTINELS  # 358

    def __init__(self):
        self.special_ids = [self.eot_id, self.pad_id, *self.sentinel_ids]

    def _id_bytes(self, i):
        return bytes([i]) if 0 <= i < 256 else None

    def encode(self, s):
        return list(s.encode("utf-8"))


@functools.lru_cache(maxsize=None)
def _byte_of_symbol() -> dict:
    """GPT-2's byte-level alphabet (Radford et al. 2019), inverted: each of the 256 printable characters that stand
    for a byte -> that byte. Printable Latin-1 bytes stand for themselves; the other 68 take characters from 256 up."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs + [256 + k for k in range(256 - len(bs))]
    bs += [b for b in range(256) if b not in bs]
    return {chr(c): b for b, c in zip(bs, cs)}


class BPETokenizer(Tokenizer):
    """A byte-level BPE (GPT-2's scheme: the 256 bytes as symbols, so any text encodes and decodes exactly) of
    Hugging Face `tokenizers`, from its tokenizer.json text. "<|endoftext|>" in a story stays ordinary text."""
    pad_id, sentinel_ids = None, range(0)

    def __init__(self, name: str, definition: str):
        from tokenizers import Tokenizer as HFTokenizer
        self.name, self.definition, self.tk = name, definition, HFTokenizer.from_str(definition)
        self.tk.encode_special_tokens = True  # a literal "<|endoftext|>" in a story is text, as tiktoken's ordinary
        self.vocab_size, self.eot_id = self.tk.get_vocab_size(), self.tk.token_to_id("<|endoftext|>")
        self.special_ids = [self.eot_id]
        u2b = _byte_of_symbol()
        self.pieces = [None if i == self.eot_id else bytes(u2b[c] for c in self.tk.id_to_token(i))
                       for i in range(self.vocab_size)]

    def _id_bytes(self, i):
        return self.pieces[i] if 0 <= i < self.vocab_size else None

    def encode(self, s):
        return self.tk.encode(s, add_special_tokens=False).ids

    def encode_batch(self, texts):
        return [e.ids for e in self.tk.encode_batch(texts, add_special_tokens=False)]


def train_bpe(texts, vocab_size: int) -> str:
    """The tokenizer.json text of a byte-level BPE of vocab_size ids (EOT included) trained on texts, an iterable of
    stories (GPT-2's pre-tokenization: words, numbers, punctuation runs and their leading space split apart)."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    tk = HFTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, trainer)
    return tk.to_str()


def get_tokenizer(name: str, definition: str | None = None) -> Tokenizer:
    """'gpt2', 'byte', or 'bpeN' with its definition (tokenizer.json text: data/<name>/bpeN/tokenizer.json, or a
    checkpoint's). ValueError (one line, with the closest valid name, or the missing definition) for anything else."""
    if name == "gpt2":
        return GPT2Tokenizer()
    if name == "byte":
        return ByteTokenizer()
    if re.fullmatch(r"bpe\d+", str(name)):
        if definition is None:
            raise ValueError(f"tokenizer {name!r} is trained on the data: its tokenizer.json comes from the bins' "
                             f"folder (python prepare.py --tokenizer={name}) or from a checkpoint")
        tok = BPETokenizer(name, definition)
        assert tok.vocab_size <= 2**16, "the bins are np.uint16"
        return tok
    close = difflib.get_close_matches(str(name), ("gpt2", "byte", "bpe4096"), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown tokenizer {name!r}{hint}; valid: {', '.join(NAMES)}")


def load_tokenizer(name: str, folder: str) -> Tokenizer:
    """get_tokenizer(name) of a prepared data folder: a trained BPE reads the folder's tokenizer.json."""
    path = os.path.join(folder, "tokenizer.json")
    if not re.fullmatch(r"bpe\d+", name) or not os.path.isfile(path):
        return get_tokenizer(name)
    return get_tokenizer(name, open(path, encoding="utf-8").read())


def tokenizer_of(ckpt: dict) -> Tokenizer:
    """The tokenizer a checkpoint carries: its name, and for a trained BPE its whole definition."""
    return get_tokenizer(ckpt["tokenizer"], ckpt.get("tokenizer_json"))
