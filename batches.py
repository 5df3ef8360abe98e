"""
Batches for train.py, from the flat uint16 token files that prepare.py writes (each story followed by EOT).

  decoder-only LM    random windows (get_batch), and the fixed evaluation windows (eval_windows)
  encoder-decoder    ByT5 span corruption (span_corruption) and prefix-LM continuation (prefix_lm),
                     both as (src, tgt_in, targets) triples of fixed lengths, so no batch overflows its budget
  train.py's use     train_batch (one micro-batch of a step); evaluate.py scores the fixed windows

Randomness comes from a seed per optimizer step, so a run is reproducible, a resumed run draws the batches the
uninterrupted one would, and DDP ranks take disjoint slices of the same global batch.
"""
import os

import numpy as np
import torch


def check_prepared(data_dir, name, tokenizer):
    """SystemExit naming the prepare.py command that builds data_dir unless it holds a complete build: meta.json
    (written last, so it marks one), and train.bin and val.bin of whole uint16 ids."""
    rebuild = (f"run `python prepare.py --name={name} --tokenizer={tokenizer}` (add --source=DIR for local release "
               f"files, e.g. --source=data/tinystories_excerpt; --force rebuilds)")
    for f in ("meta.json", "train.bin", "val.bin"):
        path = os.path.join(data_dir, f)
        if not os.path.isfile(path):
            raise SystemExit(f"config error: no prepared data in {data_dir} ({f} is missing): {rebuild}")
        if f.endswith(".bin") and os.path.getsize(path) % 2:
            raise SystemExit(f"config error: {path} is not whole uint16 ids (odd size: cut short?): {rebuild}")


def open_tokens(path):
    # a fresh memmap per batch: a long-lived one keeps every page it touched resident (nanoGPT issue #514)
    return np.memmap(path, dtype=np.uint16, mode="r")


def window_starts(n_tokens, length, shape, seed):
    """Random window starts in [0, n_tokens - length], an int64 tensor of the given shape, determined by seed.
    Raises SystemExit if the file is too short for one window."""
    if n_tokens <= length:
        raise SystemExit(f"a token file of {n_tokens} tokens is too short for windows of {length}: "
                         f"lower block_size or prepare more data")
    return torch.randint(n_tokens - length, shape, generator=torch.Generator().manual_seed(seed))


def to_device(t, device):
    if device.startswith("cuda"):  # pinned host memory lets the copy overlap with compute
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def get_batch(path, starts, block_size, device):
    """Decoder LM batch: x (B, T) the windows at starts (B,), y (B, T) the same shifted by one token."""
    data = open_tokens(path)
    w = torch.from_numpy(np.stack([data[i:i + block_size + 1] for i in starts.tolist()]).astype(np.int64))
    return to_device(w[:, :-1], device), to_device(w[:, 1:], device)


def eval_windows(path, block_size, eot_id, batch_size, max_tokens=0):
    """The fixed evaluation set: the file with one EOT in front (every story then follows an EOT, as in training),
    cut into non-overlapping windows of block_size targets, so each token is predicted exactly once and each
    window starts fresh. Yields (x, y) batches of up to batch_size windows, (b, t) with t <= block_size;
    max_tokens > 0 keeps only the first max_tokens targets (still the same ones every run)."""
    data = np.concatenate([[eot_id], open_tokens(path)]).astype(np.int64)
    n = len(data) - 1 if max_tokens <= 0 else min(len(data) - 1, max_tokens)
    n_full = n // block_size
    x = torch.from_numpy(data[:n_full * block_size]).view(n_full, block_size)       # (n_full, T)
    y = torch.from_numpy(data[1:n_full * block_size + 1]).view(n_full, block_size)  # shifted by one token
    for i in range(0, n_full, batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]
    if n > n_full * block_size:  # the last, shorter window
        i = n_full * block_size
        yield torch.from_numpy(data[None, i:n]), torch.from_numpy(data[None, i + 1:n + 1])


# ---------------------------------------------------------------------------------------------------------------------
# encoder-decoder objectives (ByT5, Xue et al. 2021, arXiv 2105.13626; T5, Raffel et al. 2020, arXiv 1910.10683)


def span_lengths(raw_len, noise_density, mean_span):
    """(n_noise, n_spans) for a raw window: T5's rounding, so lengths are the same for every sample."""
    n_noise = max(1, min(raw_len - 1, round(raw_len * noise_density)))
    return n_noise, max(1, round(n_noise / mean_span))


def span_raw_length(src_len, noise_density, mean_span):
    """The longest raw window whose corrupted input (kept bytes + one sentinel per span + EOS) fits src_len."""
    raw = int(src_len / (1 - noise_density)) + 2  # an upper bound: the corrupted input is shorter than the raw
    while True:
        n_noise, n_spans = span_lengths(raw, noise_density, mean_span)
        if raw - n_noise + n_spans + 1 <= src_len:
            return raw
        raw -= 1


def random_segments(total, n, rng):
    """Split total into n positive integers at random (T5's random_spans_noise_mask, with numpy)."""
    cuts = np.sort(rng.choice(np.arange(1, total), n - 1, replace=False)) if n > 1 else np.array([], dtype=np.int64)
    return np.diff(np.concatenate([[0], cuts, [total]]))


def span_corruption(raw, sentinel_ids, eos_id, noise_density, mean_span, rng):
    """T5 / ByT5 span corruption of one raw window of ids (L,) -> (src, tgt) numpy arrays.
    noise_density of the ids fall in n_spans spans of mean length mean_span (ByT5: 0.15 and 20 bytes); each span
    is replaced in src by its own sentinel id (reserved ids, never real bytes), and tgt lists sentinel + span for
    every span, then EOS. src ends with EOS too. Spans alternate with kept runs and never touch either end."""
    n_noise, n_spans = span_lengths(len(raw), noise_density, mean_span)
    assert n_spans <= len(sentinel_ids), f"{n_spans} spans need more than {len(sentinel_ids)} sentinels"
    noise = random_segments(n_noise, n_spans, rng)
    keep = random_segments(len(raw) - n_noise, n_spans, rng)  # kept runs, each followed by one span
    src, tgt, i = [], [], 0
    for k, (n_keep, n_span) in enumerate(zip(keep, noise)):
        src += [raw[i:i + n_keep], [sentinel_ids[k]]]
        tgt += [[sentinel_ids[k]], raw[i + n_keep:i + n_keep + n_span]]
        i += n_keep + n_span
    return np.concatenate(src + [[eos_id]]).astype(np.int64), np.concatenate(tgt + [[eos_id]]).astype(np.int64)


def seq2seq_batch(path, starts, tok, objective, src_len, tgt_len, noise_density, mean_span, seed, device,
                  dec_prefix=0):
    """One encoder-decoder batch of fixed shapes: src (B, S), tgt_in (B, T'), targets (B, T'), where tgt_in is
    the decoder's ids shifted right behind PAD (T5's decoder start id) and targets of -1 are skipped by the loss.
      'span'    span corruption of a raw window sized to fill src_len exactly (S = src_len)
      'prefix'  continuation: a window of src_len + tgt_len ids is cut at a random point k in [1, src_len]; the
                encoder gets the first k ids (right-padded with PAD). The decoder reads the last m = min(k,
                dec_prefix) of them again as its own left context (targets -1: read, not scored), then predicts
                the next tgt_len - m"""
    data, rng = open_tokens(path), np.random.default_rng(seed)
    srcs, tgts, skips = [], [], []
    for s in starts.tolist():
        if objective == "span":
            raw = data[s:s + span_raw_length(src_len, noise_density, mean_span)].astype(np.int64)
            src, tgt = span_corruption(raw, tok.sentinel_ids, tok.eot_id, noise_density, mean_span, rng)
        else:
            w, k = data[s:s + src_len + tgt_len].astype(np.int64), int(rng.integers(1, src_len + 1))
            src = np.concatenate([w[:k], np.full(src_len - k, tok.pad_id)])
            m = min(k, dec_prefix)
            tgt = w[k - m:k - m + tgt_len]
            skips.append(m)
        srcs.append(src)
        tgts.append(tgt)
    src = torch.from_numpy(np.stack(srcs))
    dec = torch.from_numpy(np.stack(tgts))  # (B, T') the ids the decoder reads and predicts
    tgt_in = torch.cat([torch.full_like(dec[:, :1], tok.pad_id), dec[:, :-1]], dim=1)
    targets = dec.clone()
    for row, m in enumerate(skips):
        targets[row, :m] = -1
    return to_device(src, device), to_device(tgt_in, device), to_device(targets, device)


def seq2seq_window_len(objective, src_len, tgt_len, noise_density, mean_span):
    """Raw ids one sample of the objective reads from the token file (to draw valid window starts)."""
    return span_raw_length(src_len, noise_density, mean_span) if objective == "span" else src_len + tgt_len


def eval_continuation(path, src_len, tgt_len, tok, batch_size, max_tokens=0, dec_prefix=0):
    """Fixed continuation evaluation for the encoder-decoder: the file (one EOT in front) cut into non-overlapping
    chunks of tgt_len - dec_prefix targets; each chunk's encoder input is the src_len ids before it (PAD-padded at
    the start of the file) and the decoder reads the last dec_prefix of those again (targets -1, as in training),
    so every id is predicted exactly once. Yields batches (src (b, S), tgt_in (b, t), targets (b, t))."""
    data = np.concatenate([[tok.eot_id], open_tokens(path)]).astype(np.int64)
    n = len(data) if max_tokens <= 0 else min(len(data), max_tokens + 1)
    step, rows = tgt_len - dec_prefix, []
    for i in range(1, n, step):
        ctx = data[max(0, i - src_len):i]
        lo = i - dec_prefix  # < 0 near the start of the file: PAD in front, as the decoder's start id
        dec = np.concatenate([np.full(max(0, -lo), tok.pad_id), data[max(0, lo):min(i + step, n)]])
        targets = dec.copy()
        targets[:dec_prefix] = -1
        rows.append((np.concatenate([ctx, np.full(src_len - len(ctx), tok.pad_id)]),
                     np.concatenate([[tok.pad_id], dec[:-1]]), targets))
        if len(rows) == batch_size or i + step >= n or i + 2 * step > n:
            yield tuple(torch.from_numpy(np.stack(col)) for col in zip(*rows))  # only the last chunk is short
            rows = []


# ---------------------------------------------------------------------------------------------------------------------
# what train.py calls: bind the data settings once with functools.partial, as llama2.c's iter_batches


def train_batch(it, g, path, n_tokens, batch_size, block_size, device, seed, tok=None, seq2seq=None):
    """Global micro-batch g of optimizer step it: determined by (seed, it, g), so resumes and DDP ranks draw the
    same global batch as an uninterrupted single process. seq2seq (encoder-decoder only): dict of span_ratio,
    noise_density, mean_span, tgt_len, dec_prefix. Returns (model inputs dict, targets (B, T))."""
    s = (seed * 1_000_003 + it) * 4096 + g
    if seq2seq is None:
        x, y = get_batch(path, window_starts(n_tokens, block_size + 1, (batch_size,), s), block_size, device)
        return {"idx": x}, y
    o = seq2seq
    objective = "span" if torch.rand((), generator=torch.Generator().manual_seed(s)) < o["span_ratio"] else "prefix"
    length = seq2seq_window_len(objective, block_size, o["tgt_len"], o["noise_density"], o["mean_span"])
    src, tgt_in, y = seq2seq_batch(path, window_starts(n_tokens, length, (batch_size,), s), tok, objective,
                                   block_size, o["tgt_len"], o["noise_density"], o["mean_span"], s, device,
                                   o["dec_prefix"])
    return {"idx": tgt_in, "src": src}, y
