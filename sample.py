"""
Write stories with a trained nanostories model (decoder-only or encoder-decoder), using its KV cache.

  python sample.py --out_dir=out-tinystories-cpu --start="Once upon a time"
  python sample.py --out_dir=out-tinystories-cpu --start=FILE:prompt.txt --num_samples=3 --temperature=0.8
  python sample.py --out_dir=out-tinystories-cpu --interactive=True           # a prompt loop
  python sample.py --out_dir=out-tinystories-cpu --lora=out-lora-dog/lora.pt  # base + LoRA adapter (lora.py)
  python sample.py --out_dir=out-lora-dog --ckpt_name=merged.pt               # the same, merged by lora.py

The tokenizer is the one named in the checkpoint. Every story starts after an EOT, as in training, and ends at the
next EOT; special ids (PAD, sentinels) are never produced. An encoder-decoder reads the prompt with its encoder and
writes the continuation with its decoder.
"""
import sys
import time

import torch

from common import autocast, configure, keep_freed_memory, load_model, resolve_device, resolve_dtype
from tokenizer import get_tokenizer

# ---------------------------------------------------------------------------------------------------------------------
out_dir = "out"             # where train.py wrote ckpt.pt
ckpt_name = "ckpt.pt"       # or best.pt
lora = ""                   # path of a LoRA adapter (lora.pt) to put on the checkpoint's model
start = "Once upon a time"  # the prompt, or FILE:path to read it from a UTF-8 file; "" starts a story from nothing
num_samples = 2
max_new_tokens = 300        # tokens (bytes, for a byte-level model) per sample, at most
temperature = 0.8           # 0 = greedy
top_k = 200                 # keep the k most likely ids; 0 = off
top_p = 1.0                 # nucleus sampling: keep the most likely ids up to this total probability; 1.0 = off
seed = 1337
device = "auto"
dtype = "auto"
compile = False
interactive = False         # read prompts from stdin until EOF or an empty line
# ---------------------------------------------------------------------------------------------------------------------
config = configure({k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool,
                    str))}, sys.argv[1:])
globals().update(config)
keep_freed_memory()
torch.manual_seed(seed)
device = resolve_device(device)
dtype = resolve_dtype(dtype, device)
ctx = autocast(device, dtype)

model, ckpt = load_model(f"{out_dir}/{ckpt_name}", device)
if lora:
    from lora import load_lora
    load_lora(model, lora, ckpt["tokenizer"])
tok = get_tokenizer(ckpt["tokenizer"])
enc_dec = model.config.arch == "encoder_decoder"
banned = [i for i in tok.special_ids if i != tok.eot_id]  # PAD and sentinels: never written
print(f"loaded {out_dir}/{ckpt_name}: {model.num_params() / 1e6:.2f}M parameters, tokenizer {tok.name}, "
      f"iter {ckpt['iter_num']}" + (f", LoRA {lora}" if lora else ""))
if compile:  # compiles the model's __call__ in place, so generate's self(...) runs the compiled forward
    model.compile(dynamic=True)


def read_prompt(text):
    if not text.startswith("FILE:"):
        return text
    try:
        with open(text[5:], encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise SystemExit(f"{text[5:]} is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8")
    except OSError as e:
        raise SystemExit(f"cannot read the prompt file {text[5:]}: {e.strerror}")


warned = False


def write(prompt):
    """Sample num_samples stories after prompt; print them and return the number of new tokens."""
    global warned
    ids = [tok.eot_id] + tok.encode(prompt.strip())  # a story starts after EOT, as in the training data
    limit = model.config.block_size
    if len(ids) > limit:
        if not warned:
            print(f"warning: the prompt is {len(ids)} tokens; keeping its last {limit} (block_size)", file=sys.stderr)
            warned = True
        ids = ids[-limit:]
    x = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    kw = dict(temperature=temperature, top_k=top_k or None, top_p=top_p, stop_ids=(tok.eot_id,), banned_ids=banned)
    with ctx:
        if not enc_dec:
            y = model.generate(x, max_new_tokens, **kw)
        else:  # continue as in training, a chunk at a time: the encoder reads up to block_size ids of the text so
            # far, the decoder starts from PAD (T5's start id), re-reads the last dec_prefix ids, writes up to
            # tgt_len - 1 - dec_prefix more; then the text moves into the source (past tgt_len the decoder never
            # trained, and its samples fell apart into fragments)
            train_cfg, y = ckpt["config"], x
            while y.size(1) - x.size(1) < max_new_tokens and not (y[:, x.size(1):] == tok.eot_id).any(1).all():
                m = min(train_cfg.get("dec_prefix", 0), y.size(1))
                dec = torch.cat([torch.full_like(y[:, :1], tok.pad_id), y[:, y.size(1) - m:]], dim=1)  # (B, 1+m)
                room = max(1, train_cfg.get("tgt_len", limit) - dec.size(1))  # decoder positions left to write
                k = min(room, max_new_tokens - (y.size(1) - x.size(1)))
                out = model.generate(dec, k, src=y[:, -limit:], **kw)
                y = torch.cat([y, out[:, dec.size(1):]], dim=1)
    n = 0
    for row in y.tolist():
        new = row[x.size(1):]
        new = new[:new.index(tok.eot_id)] if tok.eot_id in new else new  # the story ends at EOT
        n += len(new)
        print((prompt.strip() + tok.decode(new)).strip())
        print("---------------")
    return n


t0, n_tokens = time.time(), 0
if interactive:
    print("type the start of a story; an empty line quits")
    for line in sys.stdin:
        if not line.strip():
            break
        n_tokens += write(read_prompt(line.rstrip("\n")))
else:
    n_tokens = write(read_prompt(start))
dt = time.time() - t0
print(f"{n_tokens} tokens in {dt:.2f} s: {n_tokens / dt:.1f} tokens/s ({device}, {dtype})")
