"""
The checkpoint format, written once for every script: save_checkpoint (train.py, lora.py) writes the raw model's
state dict with plain-data metadata, atomically; read_checkpoint reads it with weights_only=True and says in one line
what a file is when it is not one; load_model builds the model a checkpoint (or an exported folder) describes, and
init_model the one train.py starts from.
"""
import os
import pickle
import subprocess
import zipfile
from dataclasses import asdict

import numpy as np
import torch

from batches import open_tokens
from errors import check
from hf import read_dir
from model import GPT, GPTConfig


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_checkpoint(path, model, tokenizer, config: dict, optimizer=None, iter_num=0, best_val_loss=None,
                    state=None, extra=None):
    """Write the unwrapped, uncompiled model (no '_orig_mod.' keys: pass the raw model, not the compiled or DDP one)
    with plain-data metadata, to a temporary name of this process's, then renamed: a crash never leaves a
    half-written checkpoint, and two processes never share a temporary file.
    tokenizer: a Tokenizer (a trained BPE's definition travels along, so the checkpoint alone can be sampled) or the
    name of a fixed one; state: the tensors to store instead of the whole state dict (LoRA adapters); extra: more
    plain-data entries."""
    assert not hasattr(model, "_orig_mod") and not hasattr(model, "module"), "save the raw model, not the wrapper"
    ckpt = {"model": model.state_dict() if state is None else state, "model_args": asdict(model.config),
            "tokenizer": getattr(tokenizer, "name", tokenizer),
            "tokenizer_json": getattr(tokenizer, "definition", None),
            "config": config, "optimizer": None if optimizer is None else [o.state_dict() for o in optimizer]
            if isinstance(optimizer, list) else optimizer.state_dict(),
            "iter_num": iter_num, "best_val_loss": best_val_loss, "git_commit": git_commit(), **(extra or {})}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a power cut after "saved" leaves no empty file
    except BaseException as e:  # a full disk, a second Ctrl-C: drop the partial file, keep the previous checkpoint
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) or "unexpected pos" in str(e):  # torch reports a short write as RuntimeError
            need = sum(t.numel() * t.element_size() for t in _tensors(ckpt)) / 1e6
            raise SystemExit(f"could not write {path} ({getattr(e, 'strerror', None) or 'disk full?'}): it needs "
                             f"about {need:,.0f} MB free there; the previous checkpoint is untouched (free space "
                             f"or set --out_dir elsewhere)") from None
        raise
    os.replace(tmp, path)


def claim_out_dir(out_dir, names, overwrite):
    """One run per out_dir, and no trained model replaced without a word. Refuses (one line naming the way out) when
    out_dir already holds one of names (the files this run would write: ckpt.pt and best.pt, or a LoRA run's) and
    overwrite is False, or when another process holds out_dir. Returns the open lock file out_dir/.lock: keep it open
    for the run's lifetime. It is an flock, which the kernel drops with the process however it ends (kill -9 too),
    so a crash never leaves out_dir locked; it records the holder's pid for the message. No lock off POSIX."""
    held = [n for n in names if os.path.exists(os.path.join(out_dir, n))]
    if held and not overwrite:
        raise SystemExit(f"{out_dir} already holds {', '.join(held)} of another run: continue it with "
                         f"--init_from=resume, train into another --out_dir, or pass --overwrite=True to replace it")
    os.makedirs(out_dir, exist_ok=True)
    lock = open(os.path.join(out_dir, ".lock"), "a+")
    try:
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX (Windows): no lock
        return lock
    except OSError:
        lock.seek(0)
        raise SystemExit(f"{out_dir} is in use by another run (pid {lock.read().strip() or '?'}): wait for it to "
                         f"finish, or pick another --out_dir") from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


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
    folder = os.path.dirname(path) or "."
    fix = (f"train one first, e.g. `python train.py config/tinystories_cpu.py --out_dir={folder}`"
           if want != "lora" else "pass the lora.pt written by a LoRA run (train.py with lora_r > 0)")
    if want != "lora" and os.path.isfile(os.path.join(folder, "lora.pt")):  # a LoRA run's out_dir: no model in it
        fix = (f"{folder} is a LoRA run's folder (lora.pt, an adapter): fold it into its base with `python lora.py "
               f"--merge={folder}/lora.pt` (then --ckpt_name=merged.pt), or export it for peft with `python lora.py "
               f"--export={folder}/lora.pt`")
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
                         f", so the architecture is unknown): save it with checkpoint.save_checkpoint, or {fix}")
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
    path may be a folder written by export.py, or a Hugging Face GPT-2 / LLaMA / GPT-NeoX folder (hf.read_dir)."""
    ckpt = read_dir(path, device) if os.path.isdir(path) else read_checkpoint(path, device)
    model = GPT(gpt_config(model_args(ckpt)))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def init_model(config: dict, tok, train_path: str, log=print):
    """(model, ckpt): the GPT train.py starts from, with its weights, on the CPU in train mode, and the checkpoint dict
    (None from scratch). config is only read: model.config is the architecture that was decided, and a budgeted
    run's checkpoint holds its planned max_iters. init_from="scratch": a new model of config's architecture keys
    (out_vocab_from_data: the output rows of the ids train_path holds). "resume" (out_dir/ckpt.pt) or a path (a
    checkpoint, an export.py folder, a transformers GPT-2 / LLaMA / GPT-NeoX folder): the checkpoint's architecture;
    only dropout and grad_checkpoint follow config, and config's block_size may be shorter (a fine-tune's windows).
    Raises SystemExit: a checkpoint for another tokenizer, resume with other architecture flags (the checkpoint
    cannot become that model), a block_size longer than the checkpoint's."""
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
    ckpt = read_dir(path) if os.path.isdir(path) else read_checkpoint(path)
    if ckpt["tokenizer"] != tok.name:
        raise SystemExit(f"{init_from} is a '{ckpt['tokenizer']}' checkpoint but this run reads '{tok.name}'"
                         f" data: set --tokenizer={ckpt['tokenizer']} (and prepare that dataset for it)")
    if ckpt.get("tokenizer_json") != tok.definition:  # two BPEs of one size, trained on other text
        raise SystemExit(f"{init_from} was trained with another {tok.name} than the one of this run's data "
                         f"(tokenizer.json differs): prepare the data with its tokenizer, `python prepare.py "
                         f"--tokenizer={tok.name} --tokenizer_from=DIR` (DIR: the base's data folder)")
    saved, free = model_args(ckpt), ("dropout", "grad_checkpoint")
    other = [k for k in keys if k not in free + ("block_size",) and k in saved and config[k] != saved[k]]
    check(init_from != "resume" or eval_only or not other, f"resume: {', '.join(f'{k}={config[k]}' for k in other)} "
          f"differ from the checkpoint's {', '.join(f'{k}={saved[k]}' for k in other)}: drop those flags, or train "
          f"a new model in another --out_dir")
    if other and not eval_only:
        log(f"note: the model of {init_from} has {', '.join(f'{k}={saved[k]}' for k in other)}: this run uses those")
    model = GPT(gpt_config({**saved, **{k: config[k] for k in free}}))
    check(config["block_size"] <= model.config.block_size,
          f"block_size={config['block_size']} exceeds the checkpoint's {model.config.block_size}")
    model.load_state_dict(ckpt["model"])
    return model, ckpt
