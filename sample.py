"""
Write stories with a trained nanostories model (decoder-only or encoder-decoder), using its KV cache.

  python sample.py --out_dir=out-tinystories-cpu --start="Once upon a time"
  python sample.py --out_dir=out-tinystories-cpu --start=FILE:prompt.txt --num_samples=3 --temperature=0.8
  python sample.py --out_dir=out-tinystories-cpu --interactive=True           # a prompt loop
  python sample.py --out_dir=out-tinystories-cpu --lora=out-lora-dog/lora.pt  # base + LoRA adapter (lora.py)
  python sample.py --out_dir=out-lora-dog --ckpt_name=merged.pt               # the same, merged by lora.py

The tokenizer is the one the checkpoint carries (a trained BPE's whole definition): no data folder is needed. Every
story starts after an EOT, as in training, and ends at the next EOT; special ids (PAD, sentinels) are never produced.
An encoder-decoder reads the prompt with its encoder and writes the continuation with its decoder.
"""
import os
import sys
import time

import torch

from checkpoint import load_model
from configurator import configure
from device import autocast, resolve_device, resolve_dtype
from errors import check, one_line_errors
from evaluate import known_word_rate, known_words, sample_stories
from speedups import keep_freed_memory
from tokenizer import tokenizer_of

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
repetition_penalty = 1.0    # the logits of ids already in the text / this (x this if negative), CTRL's; 1.0 = off
seed = 1337
device = "auto"
dtype = "auto"
compile = False
interactive = False         # read prompts from stdin until EOF or an empty line
word_rate = False           # also print the share of generated words that occur in the train split (a fluency proxy)
dataset = "tinystories"     # word_rate: the train split is data/<dataset>/<tokenizer>/train.bin
# ---------------------------------------------------------------------------------------------------------------------
one_line_errors()
config = configure({k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool,
                    str))}, sys.argv[1:], __file__)
globals().update(config)
check(num_samples >= 1 and max_new_tokens >= 1, f"num_samples={num_samples} and max_new_tokens={max_new_tokens} "
      f"must be at least 1")
check(temperature >= 0, f"temperature={temperature} must be >= 0 (0 = greedy; below 0 would favour unlikely ids)")
check(top_k >= 0 and 0 < top_p <= 1, f"top_k={top_k} must be >= 0 (0 = off) and top_p={top_p} in (0, 1]")
check(repetition_penalty > 0, f"repetition_penalty={repetition_penalty} must be > 0 (1.0 = off; tiny-tale uses 1.5)")
keep_freed_memory()
torch.manual_seed(seed)
device = resolve_device(device)
dtype = resolve_dtype(dtype, device)
ctx = autocast(device, dtype)

# out_dir: train.py's folder (its ckpt_name), or a Hugging Face folder of export.py's or transformers' (config.json)
model, ckpt = load_model(out_dir if os.path.exists(f"{out_dir}/config.json") else f"{out_dir}/{ckpt_name}", device)
if lora:
    from lora import load_lora
    load_lora(model, lora, tokenizer_of(ckpt))
tok = tokenizer_of(ckpt)
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


def write(prompt):
    """Sample num_samples stories after prompt, print them; returns the generated texts (without the prompt)."""
    if len(tok.encode(prompt.strip())) + 1 > model.config.block_size:
        print(f"warning: the prompt is longer than block_size; keeping its last {model.config.block_size} tokens",
              file=sys.stderr)
    texts = sample_stories(model, tok, prompt, num_samples, max_new_tokens, ctx, temperature, top_k, top_p,
                           repetition_penalty=repetition_penalty)
    for text in texts:
        print((prompt.strip() + text).strip())
        print("---------------")
    return texts


t0, texts = time.time(), []
if interactive:
    print("type the start of a story; an empty line quits")
    for line in sys.stdin:
        if not line.strip():
            break
        texts += write(read_prompt(line.rstrip("\n")))
else:
    texts = write(read_prompt(start))
dt, n_tokens = time.time() - t0, sum(len(tok.encode(t)) for t in texts)
print(f"{n_tokens} tokens in {dt:.2f} s: {n_tokens / dt:.1f} tokens/s ({device}, {dtype})")
if word_rate:  # a cheap fluency proxy, not a quality score: see evaluate.py
    known = known_words(f"data/{dataset}/{tok.name}/train.bin", tok)
    print(f"known words: {100 * known_word_rate(texts, known):.1f}% of the generated words occur in the train split")
