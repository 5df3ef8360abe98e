"""
Train a nanostories model (decoder-only GPT or ByT5-style encoder-decoder): from scratch, resumed, or LoRA.

  python train.py config/tinystories_cpu.py                                    # quick start on a CPU
  python train.py config/tinystories_33m.py --batch_size=32                    # any default below can be overridden
  torchrun --standalone --nproc_per_node=2 train.py config/tinystories_cpu.py  # DDP (NCCL on GPUs, gloo on CPUs)
  python train.py config/tinystories_33m.py --eval_only=True --init_from=resume  # scores val.bin -> out_dir/eval.json
  python train.py config/lora_tinystories_dog.py                               # LoRA on a base checkpoint (lora.py)
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

from batches import (eval_continuation, eval_windows, get_batch, open_tokens, seq2seq_batch, seq2seq_window_len,
                     window_starts)
from common import autocast, configure, keep_freed_memory, measure_peak_flops, read_checkpoint, resolve_device, \
    resolve_dtype, save_checkpoint
from model import GPT, GPTConfig
from tokenizer import get_tokenizer

# ---------------------------------------------------------------------------------------------------------------------
# defaults: every key a config file or --key=value may set
# I/O
out_dir = "out"
eval_interval = 250         # optimizer steps between evaluations and checkpoints
log_interval = 10           # optimizer steps between log lines
eval_tokens = 0             # evaluations during training score the first eval_tokens targets of val.bin (0 = all);
#                             the final one (at max_iters) and eval_only always score all of it
eval_only = False           # score the checkpoint of init_from and write out_dir/eval.json, then exit
init_from = "scratch"       # "scratch" | "resume" (out_dir/ckpt.pt) | path of a checkpoint to start from (LoRA)
seed = 1337
wandb_log = False           # log to Weights & Biases (works with WANDB_MODE=offline)
wandb_project = "nanostories"
wandb_run_name = "run"
# data: data/<dataset>/<tokenizer>/{train,val}.bin and meta.json, written by prepare.py
dataset = "tinystories"
tokenizer = "gpt2"          # "gpt2" | "byte"
gradient_accumulation_steps = 1  # micro-steps per optimizer step, summed over all DDP ranks
batch_size = 8              # sequences per micro-step and rank
block_size = 256            # tokens per sequence (the encoder's input length in an encoder-decoder)
# model (see GPTConfig in model.py)
n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0
bias = True
rope = False
rope_theta = 10000.0
tie_weights = True
norm = "layernorm"
mlp = "gelu"
mlp_hidden = 0
arch = "decoder"            # "decoder" | "encoder_decoder"
n_enc_layer = 0
grad_checkpoint = False
out_vocab_from_data = False  # score only the ids train.bin holds, plus one shared row for the rest (GPTConfig.out_vocab)
# encoder-decoder objectives (batches.py): span corruption and prefix-LM continuation, mixed per micro-step
span_ratio = 0.5            # share of micro-steps of span corruption; the rest are continuation
noise_density = 0.15        # ByT5: 15% of the bytes are corrupted...
mean_span = 20.0            # ...in spans of 20 bytes on average
tgt_len = 128               # decoder length per continuation sample (the encoder gets up to block_size before)
dec_prefix = 0              # continuation: the decoder also reads the source's last dec_prefix ids (not scored)
# optimizer: AdamW, linear warmup then cosine decay to min_lr
learning_rate = 6e-4        # peak learning rate
max_iters = 5000            # optimizer steps
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0             # clip the global gradient norm to this; 0.0 = off
decay_lr = True
warmup_iters = 100
lr_decay_iters = 5000       # ~max_iters per Chinchilla
min_lr = 6e-5               # ~learning_rate / 10 per Chinchilla
# LoRA (lora.py): lora_r > 0 freezes the model of init_from and trains rank-r adapters; only they are saved
lora_r = 0
lora_alpha = 16.0
lora_dropout = 0.05
lora_targets = "c_attn"     # comma-separated Linear names to adapt (c_attn = the fused q/k/v projection)
# system
device = "auto"             # "auto" (cuda, then mps, then cpu) | "cpu" | "cuda" | "cuda:1" | "mps"
dtype = "auto"              # "auto" (the device's fast one) | "float32" | "bfloat16" | "float16"
compile = False             # torch.compile the model (measured on this repo's CPU box: see README)
peak_flops = 0.0            # the device's peak FLOP/s in dtype for MFU; 0 = from a GPU table or measured
# ---------------------------------------------------------------------------------------------------------------------
config = configure({k: v for k, v in globals().items() if not k.startswith("_") and
                    isinstance(v, (int, float, bool, str))}, sys.argv[1:])
globals().update(config)
keep_freed_memory()
device, dtype = resolve_device(device), resolve_dtype(dtype, resolve_device(device))
device_type = device.split(":")[0]

# DDP: one process per device, launched by torchrun, which sets RANK / LOCAL_RANK / WORLD_SIZE
ddp = int(os.environ.get("RANK", -1)) != -1
if ddp:
    init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    ddp_rank, ddp_local_rank, ddp_world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if device_type == "cuda":
        device = f"cuda:{ddp_local_rank}"
        torch.cuda.set_device(device)
    if gradient_accumulation_steps % ddp_world_size:
        raise SystemExit(f"config error: gradient_accumulation_steps={gradient_accumulation_steps} must be a "
                         f"multiple of the {ddp_world_size} DDP ranks")
else:
    ddp_rank, ddp_local_rank, ddp_world_size = 0, 0, 1
if not 0 <= dec_prefix < tgt_len:
    raise SystemExit(f"config error: dec_prefix={dec_prefix} must be at least 0 and below tgt_len={tgt_len}")
master_process = ddp_rank == 0  # logs, evaluates into files and writes checkpoints
accum_steps = gradient_accumulation_steps // ddp_world_size  # micro-steps of this rank per optimizer step
torch.manual_seed(seed + ddp_rank)  # dropout differs per rank; the weights come from rank 0 (DDP broadcasts them)
if device_type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
ctx = autocast(device_type, dtype)
log = print if master_process else (lambda *a, **k: None)

# data
data_dir = os.path.join("data", dataset, tokenizer)
if not os.path.exists(os.path.join(data_dir, "meta.json")):
    raise SystemExit(f"no prepared data in {data_dir}: run `python prepare.py --name={dataset} --tokenizer={tokenizer}`"
                     f" (add --source=DIR for a local copy of TinyStories, e.g. --source=../shared/data/tinystories)")
meta = json.load(open(os.path.join(data_dir, "meta.json")))
tok = get_tokenizer(tokenizer)
byte_lengths = torch.from_numpy(tok.token_byte_lengths())  # (V,) UTF-8 bytes per id, for bits per byte
train_path, val_path = os.path.join(data_dir, "train.bin"), os.path.join(data_dir, "val.bin")
n_train_tokens = len(open_tokens(train_path))

# model: from scratch, or from a checkpoint (resume, LoRA base)
iter_num, best_val_loss, ckpt = 0, float("inf"), None
model_keys = [f.name for f in GPTConfig.__dataclass_fields__.values()
              if f.name not in ("vocab_size", "pad_id", "out_vocab")]
if init_from == "scratch":
    kept_ids = np.flatnonzero(np.bincount(open_tokens(train_path), minlength=tok.vocab_size)) \
        if out_vocab_from_data else []
    model_config = GPTConfig(**{k: config[k] for k in model_keys}, vocab_size=tok.vocab_size,
                             pad_id=-1 if tok.pad_id is None else tok.pad_id, out_vocab=len(kept_ids))
else:
    ckpt = read_checkpoint(os.path.join(out_dir, "ckpt.pt") if init_from == "resume" else init_from, device)
    if "lora" in ckpt:  # adapters only: no model to start from
        raise SystemExit(f"{init_from} is a LoRA adapter: use its base, or `python lora.py --merge={init_from}`")
    if ckpt["tokenizer"] != tokenizer:
        raise SystemExit(f"{init_from} is a '{ckpt['tokenizer']}' checkpoint but this run reads '{tokenizer}' data: "
                         f"set --tokenizer={ckpt['tokenizer']} (and prepare that dataset for it)")
    # the architecture is the checkpoint's; dropout may change when fine-tuning
    model_config = GPTConfig(**{**ckpt["model_args"], "dropout": dropout})
    if init_from == "resume":
        iter_num, best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
    if eval_only:  # score continuations the way the checkpoint was trained to write them (as sample.py does)
        iter_num = ckpt["iter_num"]  # eval.json names the checkpoint's step, from any init_from
        tgt_len, dec_prefix = ckpt["config"]["tgt_len"], ckpt["config"].get("dec_prefix", 0)
    if block_size > model_config.block_size:
        raise SystemExit(f"config error: block_size={block_size} exceeds the checkpoint's {model_config.block_size}")
model = GPT(model_config)
enc_dec = model_config.arch == "encoder_decoder"  # the checkpoint's, when one is loaded
if ckpt is not None:
    model.load_state_dict(ckpt["model"])
elif model_config.out_vocab:
    model.kept_ids.copy_(torch.from_numpy(kept_ids))
    log(f"out_vocab_from_data: lm_head scores the {len(kept_ids):,} ids of train.bin + 1 shared row for the other "
        f"{tok.vocab_size - len(kept_ids):,}")
if lora_r > 0:
    if ckpt is None or init_from == "resume":
        raise SystemExit("config error: LoRA fine-tunes a trained model: set init_from to its checkpoint path")
    from lora import apply_lora, lora_state_dict, mark_only_lora_trainable
    apply_lora(model, r=lora_r, alpha=lora_alpha, dropout=lora_dropout, targets=lora_targets.split(","))
    mark_only_lora_trainable(model)
model.to(device)
raw_model = model  # what gets evaluated and saved: never compiled or DDP-wrapped, so no '_orig_mod.' keys
n_total, n_trainable = raw_model.num_params(False), sum(p.numel() for p in model.parameters() if p.requires_grad)

optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
if ckpt is not None and init_from == "resume":
    optimizer.load_state_dict(ckpt["optimizer"])
ckpt = None  # free the checkpoint's tensors
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16" and device_type == "cuda"))
if compile:
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == "cuda" else None)
T_pred = tgt_len if enc_dec else block_size  # predicted tokens per sequence
tokens_per_iter = gradient_accumulation_steps * batch_size * T_pred
flops_per_token = raw_model.estimate_flops_per_token(block_size)
peak = peak_flops or measure_peak_flops(device, dtype)
log(f"config: {json.dumps(config)}")
log(f"model: {n_total / 1e6:.2f}M parameters ({raw_model.num_params() / 1e6:.2f}M non-embedding), trainable "
    f"{n_trainable:,} ({100 * n_trainable / n_total:.2f}%); {flops_per_token / 1e6:.1f} MFLOP per token")
log(f"tokens per iteration: {tokens_per_iter:,} = {gradient_accumulation_steps} accumulation x {batch_size} batch "
    f"x {T_pred} tokens ({ddp_world_size} rank(s)); {n_train_tokens:,} train tokens = "
    f"{n_train_tokens / tokens_per_iter:.1f} iterations per epoch")
log(f"device {device}, dtype {dtype}, compile {compile}, peak {peak / 1e12:.2f} TFLOP/s for MFU")


# ---------------------------------------------------------------------------------------------------------------------
def micro_batch(it, g):
    """Global micro-batch g of optimizer step it: determined by (seed, it, g), so resumes and DDP ranks draw the
    same global batch as an uninterrupted single process. Returns (model inputs dict, targets)."""
    s = (seed * 1_000_003 + it) * 4096 + g
    if not enc_dec:
        x, y = get_batch(train_path, window_starts(n_train_tokens, block_size + 1, (batch_size,), s), block_size, device)
        return {"idx": x}, y
    objective = "span" if torch.rand((), generator=torch.Generator().manual_seed(s)) < span_ratio else "prefix"
    starts = window_starts(n_train_tokens, seq2seq_window_len(objective, block_size, tgt_len, noise_density,
                                                              mean_span), (batch_size,), s)
    src, tgt_in, y = seq2seq_batch(train_path, starts, tok, objective, block_size, tgt_len, noise_density,
                                   mean_span, s, device, dec_prefix)
    return {"idx": tgt_in, "src": src}, y


@torch.no_grad()
def evaluate(split, max_tokens=0):
    """Loss on the fixed windows of split: {split, tokens, bytes, loss (nats/token), perplexity, bpb}. bpb = summed
    nats / (ln 2 * UTF-8 bytes of the targets); EOT targets count in the loss and add 0 bytes. Encoder-decoder:
    loss is continuation (prefix-LM) loss, and span_loss the span-corruption loss on fixed val batches, which has
    no bpb: it sees context on both sides of each span, so it is not comparable with left-to-right models.
    Windows are the model's block_size, not the run's: a fine-tune or eval_only with a shorter block_size scores the
    same windows as the run that trained the model."""
    raw_model.eval()
    path, T = os.path.join(data_dir, f"{split}.bin"), raw_model.config.block_size
    nats, tokens, n_bytes = 0.0, 0, 0
    if enc_dec:
        batches = (({"src": s, "idx": t}, y) for s, t, y in eval_continuation(path, T, tgt_len, tok,
                                                                             batch_size, max_tokens, dec_prefix))
    else:
        batches = (({"idx": x}, y) for x, y in eval_windows(path, T, tok.eot_id, batch_size, max_tokens))
    for inputs, y in batches:
        with ctx:
            _, loss = raw_model(**{k: v.to(device) for k, v in inputs.items()}, targets=y.to(device))
        scored = y[y != -1]  # the encoder-decoder's dec_prefix ids are read, not predicted
        nats += loss.item() * scored.numel()
        tokens, n_bytes = tokens + scored.numel(), n_bytes + int(byte_lengths[scored].sum())
    out = {"split": split, "tokens": tokens, "bytes": n_bytes, "loss": nats / tokens,
           "perplexity": math.exp(min(nats / tokens, 700)), "bpb": nats / (math.log(2) * max(n_bytes, 1))}
    if enc_dec:
        span_losses, n_tokens = [], len(open_tokens(path))
        span_len = seq2seq_window_len("span", T, tgt_len, noise_density, mean_span)
        for g in range(8):  # fixed: the same 8 batches from the same seeds every run
            starts = window_starts(n_tokens, span_len, (batch_size,), g)
            src, tgt_in, y = seq2seq_batch(path, starts, tok, "span", T, tgt_len, noise_density,
                                           mean_span, g, device)
            with ctx:
                span_losses.append(raw_model(tgt_in, y, src=src)[1].item())
        out["span_loss"] = sum(span_losses) / len(span_losses)
    raw_model.train()
    return out


def get_lr(it):
    """Linear warmup for warmup_iters steps, then cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def save(name):
    if lora_r > 0:  # adapters only: a small fraction of the base, which stays untouched at init_from
        lora = {"r": lora_r, "alpha": lora_alpha, "dropout": lora_dropout, "targets": lora_targets, "base": init_from}
        path = os.path.join(out_dir, "lora.pt" if name == "ckpt.pt" else "lora_" + name)  # lora_best.pt
        save_checkpoint(path, raw_model, tokenizer, config, None, iter_num, best_val_loss,
                        state=lora_state_dict(raw_model), extra={"lora": lora})
    else:
        save_checkpoint(os.path.join(out_dir, name), raw_model, tokenizer, config, optimizer, iter_num, best_val_loss)


if eval_only:
    result = {**evaluate("val"), "checkpoint": init_from, "iter": iter_num}
    log(json.dumps(result))
    if master_process:
        os.makedirs(out_dir, exist_ok=True)
        json.dump(result, open(os.path.join(out_dir, "eval.json"), "w"), indent=1)
    sys.exit(0)

if wandb_log and master_process:
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)

# ---------------------------------------------------------------------------------------------------------------------
# the loop
t_start = t0 = time.time()
start_iter = iter_num
while True:
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for group in optimizer.param_groups:
        group["lr"] = lr

    if iter_num % eval_interval == 0 or iter_num == max_iters:
        final = iter_num == max_iters
        val = evaluate("val", 0 if final else eval_tokens)
        train = evaluate("train", val["tokens"])
        log(f"eval {iter_num}: train loss {train['loss']:.4f}, val loss {val['loss']:.4f}, val bpb {val['bpb']:.4f}"
            + (f", val span loss {val['span_loss']:.4f}" if enc_dec else "")
            + f" ({val['tokens']:,} val tokens; {time.time() - t_start:.0f}s)")
        if not math.isfinite(val["loss"]):
            raise SystemExit(f"val loss is {val['loss']} at iter {iter_num}: stopping; the last good checkpoint in "
                             f"{out_dir} is untouched (lower learning_rate, or set grad_clip)")
        if wandb_log and master_process:
            wandb.log({"iter": iter_num, "train/loss": train["loss"], "val/loss": val["loss"], "val/bpb": val["bpb"],
                       "lr": lr})
        if master_process and iter_num > start_iter:  # a resumed run has nothing new to save at its first step
            if val["loss"] < best_val_loss:
                best_val_loss = val["loss"]
                save("best.pt")
            save("ckpt.pt")
            log(f"saved {out_dir}/{'lora' if lora_r > 0 else 'ckpt'}.pt "
                f"({os.path.getsize(os.path.join(out_dir, 'lora.pt' if lora_r > 0 else 'ckpt.pt')) / 1e6:.2f} MB)")
        t0 = time.time()  # evaluation time is not training time
    if iter_num >= max_iters:
        break

    # one optimizer step: accum_steps micro-steps, gradients synchronised across ranks only on the last one
    step_loss = torch.zeros((), device=device)  # mean loss over this step's global batch, for the log
    for micro in range(accum_steps):
        inputs, y = micro_batch(iter_num, micro * ddp_world_size + ddp_rank)
        if ddp:  # the official way is the no_sync() context manager; setting the flag avoids re-indenting the step
            model.require_backward_grad_sync = micro == accum_steps - 1
        with ctx:
            _, loss = model(**inputs, targets=y)
            loss = loss / accum_steps  # the gradient is the mean over the global batch
        step_loss += loss.detach()
        scaler.scale(loss).backward()
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)

    iter_num += 1
    if iter_num % log_interval == 0:
        if ddp:  # every rank reaches this line on the same iterations
            torch.distributed.all_reduce(step_loss, op=torch.distributed.ReduceOp.AVG)
        lossf = step_loss.item()  # a CPU-GPU sync point: only on log steps
        if not math.isfinite(lossf):  # every rank checks, so none is left waiting in an all-reduce
            raise SystemExit(f"loss is {lossf} at iter {iter_num}: stopping; the last good checkpoint in {out_dir} "
                             f"is untouched (lower learning_rate, or set grad_clip)")
        dt = (time.time() - t0) / log_interval
        tps = tokens_per_iter / dt
        log(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000:.0f} ms/iter, {tps:,.0f} tokens/s, "
            f"mfu {100 * tps * flops_per_token / (peak * ddp_world_size):.1f}%")
        if wandb_log and master_process:
            wandb.log({"iter": iter_num, "train/loss_step": lossf, "tokens_per_s": tps})
        t0 = time.time()

if ddp:
    destroy_process_group()
