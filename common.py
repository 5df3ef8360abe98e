"""
Plumbing shared by train.py, sample.py, lora.py and bench.py, written once: the exec-style config override,
the checkpoint format (save and load), and the device / dtype / autocast choice.
"""
import ast
import ctypes
import difflib
import os
import pickle
import re
import subprocess
import sys
import time
import traceback
import zipfile
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch

from batches import open_tokens
from errors import check
from speedups import cpu_has_bf16
from model import GPT, GPTConfig

# ---------------------------------------------------------------------------------------------------------------------
# config: `python train.py config/x.py --batch_size=32`


def print_help(script: str, defaults: dict):
    """--help: the script's docstring, then every key with its default and the comment of its line in the script's
    defaults block (the lines between the first two `# ---` rulers)."""
    src = open(script, encoding="utf-8").read()
    doc = ast.get_docstring(ast.parse(src)) or ""
    print(doc.strip() + "\n\nkeys (--key=value; config files set the same keys):")
    ruler = re.compile(r"^\s*# -{40,}$", re.M)
    block = ruler.split(src)[1] if len(ruler.findall(src)) >= 2 else ""
    for line in block.splitlines():
        line = line.strip()
        m = re.match(r"(\w+) ?= ?.*?(?:\s+#\s?(.*))?$", line)
        if m and m.group(1) in defaults:
            print(f"  --{m.group(1)}={defaults[m.group(1)]!r}".ljust(36) + (f"  {m.group(2)}" if m.group(2) else ""))
        elif line.startswith("#  "):  # a comment carried over to the next line
            print(" " * 38 + line.lstrip("# "))
        elif line.startswith("# "):  # a section heading
            print(f" {line[2:]}")


def configure(defaults: dict, argv: list, script: str | None = None) -> dict:
    """nanoGPT's configurator as a function. argv holds config files (plain Python assignments, run in a scratch
    namespace, in order) and --key=value overrides (value parsed with ast.literal_eval, else kept as a string).
    Returns a copy of defaults with the overrides applied. Every key must already be in defaults; a value must have
    the default's type, except that an int is accepted for a float and a key whose default is None takes anything.
    --help (or -h) prints the keys of script (see print_help) and exits 0.
    Raises SystemExit with one line naming the key (and the closest valid names) on any bad key or value."""
    if "--help" in argv or "-h" in argv:
        print_help(script or sys.argv[0], defaults)
        raise SystemExit(0)
    config = dict(defaults)

    def assign(key, value, where):
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(sorted(defaults))}"
            raise SystemExit(f"config error: unknown key '{key}' ({where}){hint}")
        default = defaults[key]
        if isinstance(default, float) and type(value) is int:
            value = float(value)
        if default is not None and type(value) is not type(default):
            raise SystemExit(f"config error: '{key}' ({where}) must be {type(default).__name__} like its default "
                             f"{default!r}, got {value!r} ({type(value).__name__})")
        config[key] = value

    for arg in argv:
        if not arg.startswith("--"):  # a config file
            if not os.path.isfile(arg):
                raise SystemExit(f"config error: no config file '{arg}' (see config/ for the shipped ones)")
            scope = {}
            try:
                exec(compile(open(arg).read(), arg, "exec"), scope)
            except Exception as e:  # a config file is Python: a typo there is the user's to fix, in one line
                line = getattr(e, "lineno", None) or traceback.extract_tb(e.__traceback__)[-1].lineno
                raise SystemExit(f"config error: {arg} line {line}: {type(e).__name__}: {e}") from None
            for key, value in scope.items():
                if not key.startswith("_") and not callable(value) and type(value).__name__ != "module":
                    assign(key, value, arg)
        else:
            key, eq, text = arg[2:].partition("=")
            if not eq:
                raise SystemExit(f"config error: '{arg}' must be --key=value")
            try:
                value = ast.literal_eval(text)
            except (SyntaxError, ValueError):
                value = text  # a bare word such as --device=cuda is a string
            assign(key, value, "command line")
    return config


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints: one format for train.py (writes), sample.py and lora.py (read)


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_checkpoint(path, model, tokenizer: str, config: dict, optimizer=None, iter_num=0, best_val_loss=None,
                    state=None, extra=None):
    """Write the unwrapped, uncompiled model (no '_orig_mod.' keys: pass the raw model, not the compiled or DDP one)
    with plain-data metadata, to path + '.tmp' then renamed: a crash never leaves a half-written checkpoint.
    state: the tensors to store instead of the whole state dict (LoRA adapters); extra: more plain-data entries."""
    assert not hasattr(model, "_orig_mod") and not hasattr(model, "module"), "save the raw model, not the wrapper"
    ckpt = {"model": model.state_dict() if state is None else state, "model_args": asdict(model.config), "tokenizer": tokenizer,
            "config": config, "optimizer": None if optimizer is None else [o.state_dict() for o in optimizer]
            if isinstance(optimizer, list) else optimizer.state_dict(),
            "iter_num": iter_num, "best_val_loss": best_val_loss, "git_commit": git_commit(), **(extra or {})}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        with open(path + ".tmp", "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a power cut after "saved" leaves no empty file
    except BaseException as e:  # a full disk, a second Ctrl-C: drop the partial file, keep the previous checkpoint
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")
        if isinstance(e, OSError) or "unexpected pos" in str(e):  # torch reports a short write as RuntimeError
            need = sum(t.numel() * t.element_size() for t in _tensors(ckpt)) / 1e6
            raise SystemExit(f"could not write {path} ({getattr(e, 'strerror', None) or 'disk full?'}): it needs "
                             f"about {need:,.0f} MB free there; the previous checkpoint is untouched (free space "
                             f"or set --out_dir elsewhere)") from None
        raise
    os.replace(path + ".tmp", path)


def _tensors(obj):
    """Every tensor inside nested dicts / lists / tuples."""
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def read_checkpoint(path, device="cpu", want="model") -> dict:
    """The checkpoint dict at path, loaded with weights_only=True (plain data and tensors only). want: "model" (a
    train.py checkpoint), "lora" (an adapter) or "any". Raises SystemExit with one line that says what the file is
    instead (missing, empty, truncated or not a PyTorch file, a pickle with code in it, a bare state_dict, an adapter
    where a model is wanted or the reverse) and what to do."""
    fix = (f"train one first, e.g. `python train.py config/tinystories_cpu.py --out_dir={os.path.dirname(path) or '.'}`"
           if want != "lora" else "pass the lora.pt written by a LoRA run (train.py with lora_r > 0)")
    if not os.path.isfile(path):
        raise SystemExit(f"no checkpoint at {path}: {fix}")
    if os.path.getsize(path) == 0:
        raise SystemExit(f"{path} is an empty file, not a checkpoint (an interrupted copy?): {fix}")
    if not zipfile.is_zipfile(path):
        raise SystemExit(f"{path} is not a PyTorch checkpoint (not torch.save's zip format, or cut short): {fix}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused an object: the file holds code, not just data
        first = str(e).split("\n")[0][:160]
        raise SystemExit(f"{path} holds Python objects beyond tensors and plain data, which are refused unread "
                         f"(they can run code); only load files whose origin you trust, and re-save this one as a "
                         f"state dict in a checkpoint of train.py's format ({first})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise SystemExit(f"{path} is truncated or corrupt ({str(e).splitlines()[0][:120]}): {fix}") from None
    if not isinstance(ckpt, dict) or not ("model_args" in ckpt or "lora" in ckpt):
        is_sd = isinstance(ckpt, dict) and ckpt and all(torch.is_tensor(v) for v in ckpt.values())
        raise SystemExit(f"{path} is {'a bare state_dict' if is_sd else 'not a train.py checkpoint'} (no model_args"
                         f", so the architecture is unknown): save it with common.save_checkpoint, or {fix}")
    if want == "model" and "lora" in ckpt:
        raise SystemExit(f"{path} is a LoRA adapter, not a model: load its base with --lora={path}, or merge them "
                         f"with `python lora.py --merge={path}`")
    if want == "lora" and "lora" not in ckpt:
        raise SystemExit(f"{path} is a model checkpoint, not a LoRA adapter: {fix}")
    return ckpt


def gpt_config(args: dict) -> GPTConfig:
    """GPTConfig(**args), with its checks as one line naming the valid values instead of an assertion traceback."""
    try:
        return GPTConfig(**args)
    except AssertionError as e:
        raise SystemExit(f"config error: {e}") from None


def model_args(ckpt) -> dict:
    """The checkpoint's GPTConfig fields. Checkpoints written before tgt_len and dec_prefix were GPTConfig fields
    kept them only in the training config: take them from there."""
    args = dict(ckpt["model_args"])
    for key in ("tgt_len", "dec_prefix"):
        if key not in args and args.get("arch") == "encoder_decoder":
            args[key] = ckpt["config"].get(key, 0)
    return args


def load_model(path, device="cpu"):
    """(model, ckpt): a GPT built from the checkpoint's model_args with its weights, on device, in eval mode.
    path may be a folder written by export.py, or a Hugging Face GPT-2 / LLaMA / GPT-NeoX folder (export.load_dir)."""
    if os.path.isdir(path):
        from export import load_dir
        return load_dir(path, device)
    ckpt = read_checkpoint(path, device)
    model = GPT(gpt_config(model_args(ckpt)))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def init_model(config: dict, tok, train_path: str, device: str = "cpu", log=print):
    """(model, ckpt): the GPT train.py starts from, with its weights, on the CPU in train mode, and the checkpoint dict
    (None from scratch). init_from="scratch": a new model of config's architecture keys (out_vocab_from_data: the
    output rows of the ids train_path holds). "resume" (out_dir/ckpt.pt) or a path (a checkpoint, an export.py folder,
    a transformers GPT-2 / LLaMA / GPT-NeoX folder): the architecture is the checkpoint's, and config is updated to it
    in place (only dropout and grad_checkpoint may change; block_size may be shorter, a fine-tune's windows), so that
    the config saved from then on says what ran; resuming a budgeted run also takes its planned max_iters and
    lr_decay_iters. Raises SystemExit: a checkpoint for another tokenizer, resume with other architecture flags (the
    checkpoint cannot become that model), a block_size longer than the checkpoint's."""
    keys = [k for k in GPTConfig.__dataclass_fields__ if k not in ("vocab_size", "pad_id", "out_vocab")]
    init_from, eval_only = config["init_from"], config["eval_only"]
    if init_from == "scratch":
        kept = np.flatnonzero(np.bincount(open_tokens(train_path), minlength=tok.vocab_size)) \
            if config["out_vocab_from_data"] else []
        model = GPT(gpt_config({**{k: config[k] for k in keys}, "vocab_size": tok.vocab_size,
                                "pad_id": -1 if tok.pad_id is None else tok.pad_id, "out_vocab": len(kept)}))
        if len(kept):
            model.kept_ids.copy_(torch.from_numpy(kept))
            log(f"out_vocab_from_data: lm_head scores the {len(kept):,} ids of train.bin + 1 shared row for the "
                f"other {tok.vocab_size - len(kept):,}")
        return model, None
    path = os.path.join(config["out_dir"], "ckpt.pt") if init_from == "resume" else init_from
    if os.path.isdir(path):
        from export import read_dir
        ckpt = read_dir(path, device)
    else:
        ckpt = read_checkpoint(path, device)
    if ckpt["tokenizer"] != config["tokenizer"]:
        raise SystemExit(f"{init_from} is a '{ckpt['tokenizer']}' checkpoint but this run reads '{config['tokenizer']}'"
                         f" data: set --tokenizer={ckpt['tokenizer']} (and prepare that dataset for it)")
    saved, free = model_args(ckpt), ("dropout", "grad_checkpoint")
    other = [k for k in keys if k not in free + ("block_size",) and k in saved and config[k] != saved[k]]
    check(init_from != "resume" or eval_only or not other, f"resume: {', '.join(f'{k}={config[k]}' for k in other)} "
          f"differ from the checkpoint's {', '.join(f'{k}={saved[k]}' for k in other)}: drop those flags, or train "
          f"a new model in another --out_dir")
    if other and not eval_only:
        log(f"note: the model of {init_from} has {', '.join(f'{k}={saved[k]}' for k in other)}; those keys of "
            f"this run's config follow it")
    config.update({k: saved[k] for k in other})
    if init_from == "resume" and ckpt.get("plan"):  # a budgeted run: continue its planned schedule
        config.update({k: ckpt["plan"][k] for k in ("max_iters", "lr_decay_iters")})
    model = GPT(gpt_config({**saved, **{k: config[k] for k in free}}))
    check(config["block_size"] <= model.config.block_size,
          f"block_size={config['block_size']} exceeds the checkpoint's {model.config.block_size}")
    model.load_state_dict(ckpt["model"])
    return model, ckpt


@torch.no_grad()
def sample_stories(model, tok, prompt: str, n: int, max_new_tokens: int, ctx, temperature=0.8, top_k=200, top_p=1.0):
    """n stories continuing prompt, as lists of new ids (without the prompt, up to and without their EOT). A story
    starts after EOT, as in training; the prompt keeps its last block_size ids; PAD and sentinels are never written.
    An encoder-decoder continues a chunk at a time, as it was trained: the encoder reads up to block_size ids of the
    text so far, the decoder starts from PAD (T5's start id), re-reads the last dec_prefix ids and writes up to
    tgt_len - 1 - dec_prefix more; then the text moves into the source (past tgt_len its decoder never trained)."""
    device, limit = next(model.parameters()).device, model.config.block_size
    ids = ([tok.eot_id] + tok.encode(prompt.strip()))[-limit:]
    x = torch.tensor([ids] * n, dtype=torch.long, device=device)
    banned = [i for i in tok.special_ids if i != tok.eot_id]
    kw = dict(temperature=temperature, top_k=top_k or None, top_p=top_p, stop_ids=(tok.eot_id,), banned_ids=banned)
    with ctx:
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
    rows = [r[x.size(1):] for r in y.tolist()]
    return [r[:r.index(tok.eot_id)] if tok.eot_id in r else r for r in rows]


# ---------------------------------------------------------------------------------------------------------------------
# device and precision


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory for reuse instead of returning every large block to the OS.
    PyTorch's CPU allocator calls malloc directly; by default each block over 32 MB (a step's logits, its
    activations) is a fresh mmap whose pages the kernel zero-fills on first touch, again on every step, which costs
    most on VMs, where page faults are dear (RECORDS.md has the measured step times). No effect (and no error) off
    glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # from glibc's malloc.h
    libc.mallopt(M_MMAP_THRESHOLD, 2**31 - 1)  # serve large blocks from the heap, not one mmap each...
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # ...and keep the heap's free top instead of trimming it
    libc.mallopt(M_TOP_PAD, 2**28)             # grow the heap in 256 MB steps


def resolve_device(device: str) -> str:
    """'auto' -> the first of cuda, mps, cpu that this machine has; a named device is checked before anything touches
    it. Raises SystemExit naming what this machine and torch build have."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    kind, _, index = device.partition(":")
    have = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if torch.backends.mps.is_available()
                                                                          else [])
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise SystemExit(f"config error: device '{device}' is not one of auto, cpu, cuda, cuda:N, mps")
    if kind not in have:
        build = "a CPU-only build" if torch.version.cuda is None and kind == "cuda" else "without it"
        raise SystemExit(f"config error: device '{device}' is not available (torch {torch.__version__}, {build}); "
                         f"this machine has: {', '.join(have)} (use --device=auto)")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise SystemExit(f"config error: {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """'auto' -> what the device runs fastest: bf16 on CUDA GPUs that support it (else fp16), bf16 on CPUs with
    native bf16, float32 elsewhere. Raises SystemExit on an unknown name."""
    if dtype == "auto":
        if device.startswith("cuda"):
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "bfloat16" if device == "cpu" and cpu_has_bf16() else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise SystemExit(f"config error: dtype must be auto, float32, bfloat16 or float16, got '{dtype}'")
    return dtype


def autocast(device: str, dtype: str):
    """Mixed-precision context: weights stay fp32, matmuls run in dtype. Unlike nanoGPT, also on the CPU, where
    bf16 autocast is a real speed-up on CPUs with native bf16."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, dtype))


# dense bf16/fp16 tensor-core peaks from the vendors' data sheets, in FLOP/s; GPUs not listed are measured
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
                  "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12}


def measure_peak_flops(device: str, dtype: str) -> float:
    """Peak matmul FLOP/s of this device in dtype, for MFU: the data-sheet figure for known GPUs, otherwise measured
    as the fastest of 5 square matmuls (2048 on a CPU, 4096 on a GPU) in dtype."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS.items():
            if key in name and dtype != "float32":
                return flops
    n = 4096 if not device.startswith("cpu") else 2048
    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    a @ a  # warm-up: the first call pays for kernel selection
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = float("inf")
    for _ in range(5):  # the fastest of 5: a busy neighbour slows some runs, never speeds one up
        sync()
        t0 = time.perf_counter()
        a @ a
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best
