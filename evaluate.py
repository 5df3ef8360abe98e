"""
How good a model is, measured the same way everywhere: evaluate (nats/token and bits per byte on the fixed windows of
a split), sample_stories (stories started after EOT, as in training), and "writes English", measured: known_word_rate,
the share of sampled words that occur in the train split (a fluency proxy: nonsense made of real words passes).
"""
import math
import re
import time

import numpy as np
import torch

from batches import eval_continuation, eval_windows, open_tokens, seq2seq_batch, seq2seq_window_len, window_starts
from speedups import decode_linears

WORD = re.compile(r"[a-z]+")


@torch.no_grad()
def evaluate(model, path, tok, batch_size, ctx, device, max_tokens=0, seq2seq=None):
    """Loss on the fixed windows of the token file at path: {tokens, bytes, loss (nats/token), perplexity, bpb}.
    bpb = summed nats / (ln 2 * UTF-8 bytes of the targets); EOT targets count in the loss and add 0 bytes.
    max_tokens > 0 scores only the first max_tokens targets. Windows are the model's block_size, so a fine-tune
    or eval_only with a shorter block_size scores the windows the model was trained and scored on.
    Encoder-decoder (seq2seq, as in train_batch): loss is the continuation (prefix-LM) loss, and span_loss the
    span-corruption loss on 8 fixed batches (span_s: the seconds they took), which has no bpb: it sees context on
    both sides of each span, so it is not comparable with left-to-right models."""
    was_training, T = model.training, model.config.block_size
    model.eval()
    byte_lengths = torch.from_numpy(tok.token_byte_lengths())  # (V,) UTF-8 bytes per id
    nats, tokens, n_bytes = 0.0, 0, 0
    if seq2seq is None:
        batches = (({"idx": x}, y) for x, y in eval_windows(path, T, tok.eot_id, batch_size, max_tokens))
    else:
        batches = (({"src": s, "idx": t}, y) for s, t, y in eval_continuation(
            path, T, seq2seq["tgt_len"], tok, batch_size, max_tokens, seq2seq["dec_prefix"]))
    for inputs, y in batches:
        with ctx:
            _, loss = model(**{k: v.to(device) for k, v in inputs.items()}, targets=y.to(device),
                            return_logits=False)
        scored = y[y != -1]  # the encoder-decoder's dec_prefix ids are read, not predicted
        nats += loss.item() * scored.numel()
        tokens, n_bytes = tokens + scored.numel(), n_bytes + int(byte_lengths[scored].sum())
    out = {"tokens": tokens, "bytes": n_bytes, "loss": nats / tokens, "perplexity": math.exp(min(nats / tokens, 700)),
           "bpb": nats / (math.log(2) * max(n_bytes, 1))}
    if seq2seq is not None:
        o, losses, t0 = seq2seq, [], time.time()
        span_len = seq2seq_window_len("span", T, o["tgt_len"], o["noise_density"], o["mean_span"])
        for g in range(8):  # fixed: the same 8 batches from the same seeds every run
            starts = window_starts(len(open_tokens(path)), span_len, (batch_size,), g)
            src, tgt_in, y = seq2seq_batch(path, starts, tok, "span", T, o["tgt_len"], o["noise_density"],
                                           o["mean_span"], g, device)
            with ctx:
                losses.append(model(tgt_in, y, src=src, return_logits=False)[1].item())
        out["span_loss"] = sum(losses) / len(losses)
        out["span_s"] = time.time() - t0  # a fixed cost per evaluation, whatever max_tokens (train.py's plan)
    model.train(was_training)
    return out


@torch.no_grad()
def sample_stories(model, tok, prompt: str, n: int, max_new_tokens: int, ctx, temperature=0.8, top_k=200, top_p=1.0,
                   seed=None, repetition_penalty=1.0) -> list[str]:
    """n stories continuing prompt, as text (without the prompt, up to their EOT). A story starts after EOT, as in
    training; the prompt keeps its last block_size ids; PAD and sentinels are never written. seed: drawn at that seed
    (the same draws for every model) with the caller's RNG left as it was. The model samples in eval mode.
    An encoder-decoder continues a chunk at a time, as it was trained: the encoder reads up to block_size ids of the
    text so far, the decoder starts from PAD (T5's start id), re-reads the last dec_prefix ids and writes up to
    tgt_len - 1 - dec_prefix more; then the text moves into the source (past tgt_len its decoder never trained)."""
    device, limit, was_training = next(model.parameters()).device, model.config.block_size, model.training
    ids = ([tok.eot_id] + tok.encode(prompt.strip()))[-limit:]
    x = torch.tensor([ids] * n, dtype=torch.long, device=device)
    banned = [i for i in tok.special_ids if i != tok.eot_id]
    kw = dict(temperature=temperature, top_k=top_k or None, top_p=top_p, stop_ids=(tok.eot_id,), banned_ids=banned,
              repetition_penalty=repetition_penalty)
    with torch.random.fork_rng(enabled=seed is not None), ctx, decode_linears(model.eval()):  # the CPU decoding path
        if seed is not None:
            torch.manual_seed(seed)
        if model.config.arch == "decoder":
            y = model.generate(x, max_new_tokens, **kw)
        else:
            y, c = x, model.config
            while y.size(1) - x.size(1) < max_new_tokens and not (y[:, x.size(1):] == tok.eot_id).any(1).all():
                m = min(c.dec_prefix, y.size(1))
                dec = torch.cat([torch.full_like(y[:, :1], tok.pad_id), y[:, y.size(1) - m:]], dim=1)  # (B, 1+m)
                k = min(max(1, c.tgt_len - dec.size(1)), max_new_tokens - (y.size(1) - x.size(1)))
                out = model.generate(dec, k, src=y[:, -limit:], **kw)
                y = torch.cat([y, out[:, dec.size(1):]], dim=1)
    model.train(was_training)
    rows = [r[x.size(1):] for r in y.tolist()]
    return [tok.decode(r[:r.index(tok.eot_id)] if tok.eot_id in r else r) for r in rows]


def known_words(path: str, tok, max_tokens: int = 20_000_000) -> set[str]:
    """The lowercased words ([a-z]+) of the stories in the token file at path (each story followed by EOT), read up
    to max_tokens ids (~90k stories: the full train split would take minutes to decode, for few new words)."""
    ids = open_tokens(path)[:max_tokens]
    ends = np.flatnonzero(ids == tok.eot_id)
    words = set()
    for a, b in zip(np.concatenate([[-1], ends[:-1]]) + 1, ends):  # one story at a time: no words across stories
        words.update(WORD.findall(tok.decode(ids[a:b].tolist()).lower()))
    return words


def known_word_rate(texts: list[str], known: set[str]) -> float:
    """Share (0..1) of the words ([a-z]+, lowercased) of texts that are in known; 0.0 when texts hold no words."""
    words = [w for t in texts for w in WORD.findall(t.lower())]
    return sum(w in known for w in words) / max(len(words), 1)
