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
    if enc_dec:  # the encoder reads the prompt; the decoder starts from PAD (T5's start id), reads the prompt's
        # last dec_prefix ids again (as in training) and writes what follows
        m = min(ckpt["config"].get("dec_prefix", 0), len(ids))
        src, x = x, torch.tensor([[tok.pad_id] + ids[len(ids) - m:]] * num_samples, dtype=torch.long, device=device)
    n = 0
    with ctx:
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None, top_p=top_p,
                     stop_ids=(tok.eot_id,), banned_ids=banned, src=src if enc_dec else None)
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
