"""
Train a nanostories model (decoder-only GPT or ByT5-style encoder-decoder): from scratch, resumed, or LoRA:

  python train.py config/tinystories_cpu.py                                    # quick start on a CPU
  python train.py config/tinystories_33m.py --batch_size=32                    # any default below can be overridden
  torchrun --standalone --nproc_per_node=2 train.py config/tinystories_cpu.py  # DDP (NCCL on GPUs, gloo on CPUs)
  python train.py config/tinystories_33m.py --eval_only=True --init_from=resume  # scores val.bin -> out_dir/eval.json
  python train.py config/lora_tinystories_dog.py                               # LoRA on a base checkpoint (lora.py)
  python train.py --help                                                       # every key, its default and meaning

Ctrl-C (or SIGTERM) writes ckpt.pt after the current step and prints the command that resumes. time_budget > 0 fits
the whole run into that many seconds by planning max_iters from the measured pace (budget.py). The schedules, batches
and dropout masks are functions of the step: a resumed run continues exactly as the uninterrupted one would have.
"""
import time

_t_launch = time.time()  # a time_budget counts from here: the imports below take seconds too
import json
import math
import os
import shlex
import sys
from functools import partial

import torch
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

from batches import check_prepared, open_tokens, train_batch
from budget import TimeBudget, measure_costs, pass_seconds, phase_costs
from checkpoint import claim_out_dir, init_model, save_checkpoint
from configurator import configure
from device import agree, autocast, measure_peak_flops, resolve_device, resolve_dtype
from errors import check, one_line_errors, stop_on_signal
from evaluate import evaluate, known_word_rate, known_words, sample_stories
from speedups import keep_freed_memory
from tokenizer import load_tokenizer

# ---------------------------------------------------------------------------------------------------------------------
# defaults: every key a config file or --key=value may set
# I/O
out_dir = "out"
eval_interval = 250         # optimizer steps between evaluations and checkpoints
log_interval = 10           # optimizer steps between log lines
eval_tokens = 0             # evaluations during training score the first eval_tokens of val and train (0 = all val)
final_eval_tokens = 0       # the final evaluation scores the first final_eval_tokens of val (0 = all); eval_only: all
time_budget = 0.0           # seconds for the whole run, final evaluation included (0 = off: max_iters decides)
word_rate_samples = 20      # at the end: stories sampled to report the share of known words (0 = off)
eval_only = False           # score the checkpoint of init_from and write out_dir/eval.json, then exit
init_from = "scratch"       # "scratch" | "resume" (out_dir/ckpt.pt) | path of a checkpoint to start from (LoRA)
overwrite = False           # let a new run (not a resume) replace the checkpoints that out_dir holds
seed = 1337
wandb_log = False           # log to Weights & Biases (works with WANDB_MODE=offline)
wandb_project = "nanostories"
wandb_run_name = "run"
# data: data/<dataset>/<tokenizer>/{train,val}.bin and meta.json, written by prepare.py
dataset = "tinystories"
tokenizer = "gpt2"          # "gpt2" | "byte" | "bpeN" (trained by prepare.py; its tokenizer.json goes in every ckpt)
gradient_accumulation_steps = 1  # micro-steps per optimizer step, summed over all DDP ranks
batch_size = 8              # sequences per micro-step and rank
batch_ramp = 0.0            # epochs at batch_size, then twice the sequences per micro-step (0 = never): grow the
#                             batch where the learning rate would decay (Smith et al. 2018, arXiv 1711.00489)
block_size = 256            # tokens per sequence (the encoder's input length in an encoder-decoder)
# model (see GPTConfig in model.py)
n_layer = 4
n_head = 4
n_kv_head = 0               # key/value heads (grouped-query attention); 0 = n_head
n_embd = 256
dropout = 0.0
dropout_from = 0.0          # epochs before dropout switches on: a short run is not overfitting yet (late dropout)
bias = True
rope = False
rope_theta = 10000.0
rel_buckets = 0             # > 0: T5's relative position buckets instead of rope / wpe (model.py)
rel_max_distance = 128
tie_weights = True
norm = "layernorm"
mlp = "gelu"
mlp_hidden = 0
arch = "decoder"            # "decoder" | "encoder_decoder"
n_enc_layer = 0
grad_checkpoint = False
qk_norm = False             # RMS-normalise queries and keys per head (model.py)
x0_mix = False              # learned per-layer mixing of the residual stream with the embedded input (model.py)
out_vocab_from_data = False  # score only the ids train.bin holds, + one shared row for the rest (GPTConfig.out_vocab)
# encoder-decoder objectives (batches.py): span corruption and prefix-LM continuation, mixed per micro-step
span_ratio = 0.5            # share of micro-steps of span corruption; the rest are continuation
noise_density = 0.15        # ByT5: 15% of the bytes are corrupted...
mean_span = 20.0            # ...in spans of 20 bytes on average
tgt_len = 128               # decoder length per continuation sample (the encoder gets up to block_size before)
dec_prefix = 0              # continuation: the decoder also reads the source's last dec_prefix ids (not scored)
# optimizer: linear warmup, then cosine decay to min_lr (or hold, then a linear warmdown to 0)
optimizer = "adamw"         # "adamw" | "muon" (Muon for the blocks' matrices, AdamW for the rest: see model.py)
learning_rate = 6e-4        # peak learning rate
max_iters = 5000            # optimizer steps
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0             # clip the global gradient norm to this; 0.0 = off
decay_lr = True
warmup_iters = 100
lr_decay_iters = 5000       # ~max_iters per Chinchilla; a time_budget ends the decay at the max_iters it plans
min_lr = 6e-5               # ~learning_rate / 10 per Chinchilla
warmdown_frac = 0.0         # > 0: hold learning_rate, then decay linearly to 0 over this last share of lr_decay_iters
#                             in place of the cosine (warmup-stable-decay, Hu et al. 2024, arXiv 2404.06395)
# LoRA (lora.py): lora_r > 0 freezes the model of init_from and trains rank-r adapters; only they are saved
lora_r = 0
lora_alpha = 16.0
lora_dropout = 0.05
lora_targets = "c_attn"     # comma-separated Linear names to adapt (c_attn = the fused q/k/v projection)
# system
device = "auto"             # "auto" (cuda, then mps, then cpu) | "cpu" | "cuda" | "cuda:1" | "mps"
dtype = "auto"              # "auto" (the device's fast one) | "float32" | "bfloat16" | "float16"
compile = False             # torch.compile the model (on CPUs about as fast as eager: RECORDS.md)
peak_flops = 0.0            # the device's peak FLOP/s in dtype for MFU; 0 = from a GPU table or measured
# ---------------------------------------------------------------------------------------------------------------------
one_line_errors()
config = configure({k: v for k, v in globals().items() if not k.startswith("_") and k.islower() and  # not PACE_MIN
                    isinstance(v, (int, float, bool, str))}, sys.argv[1:], __file__)
globals().update(config)
for key in ("eval_interval", "log_interval", "batch_size", "block_size", "gradient_accumulation_steps"):
    check(config[key] > 0, f"{key}={config[key]} must be at least 1")
for key in ("max_iters", "time_budget", "word_rate_samples", "warmup_iters", "weight_decay", "grad_clip", "min_lr",
            "dropout_from", "batch_ramp", "eval_tokens", "final_eval_tokens"):
    check(config[key] >= 0, f"{key}={config[key]} must not be negative")
check(0 <= warmdown_frac <= 1, f"warmdown_frac={warmdown_frac} must be in [0, 1]")
check(learning_rate > 0 and 0 <= dropout < 1, f"learning_rate={learning_rate} must be > 0, dropout={dropout} in [0, 1)")
check(optimizer in ("adamw", "muon"), f"optimizer='{optimizer}' must be 'adamw' or 'muon'")
check(arch == "decoder" or tgt_len <= block_size, f"tgt_len={tgt_len} must be at most block_size={block_size}: the "
      f"decoder's positions share the encoder's position table")
check(init_from != "scratch" or not eval_only, "eval_only scores a trained model: set --init_from=resume (out_dir/"
      "ckpt.pt) or --init_from=PATH of a checkpoint")
check(not os.path.exists(out_dir) or os.path.isdir(out_dir), f"out_dir={out_dir} is a file, not a folder: pick "
      f"another --out_dir")
keep_freed_memory()
device = resolve_device(device)
dtype = resolve_dtype(dtype, device)
device_type = device.split(":")[0]

# DDP: one process per device, launched by torchrun, which sets RANK / LOCAL_RANK / WORLD_SIZE
ddp = int(os.environ.get("RANK", -1)) != -1
if ddp:
    init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    ddp_rank, ddp_local_rank, ddp_world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if device_type == "cuda":
        device = f"cuda:{ddp_local_rank}"
        torch.cuda.set_device(device)
    check(gradient_accumulation_steps % ddp_world_size == 0, f"gradient_accumulation_steps="
          f"{gradient_accumulation_steps} must be a multiple of the {ddp_world_size} DDP ranks")
else:
    ddp_rank, ddp_local_rank, ddp_world_size = 0, 0, 1
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
check_prepared(data_dir, dataset, tokenizer)
tok = load_tokenizer(tokenizer, data_dir)  # a trained BPE: the folder's tokenizer.json
train_path = os.path.join(data_dir, "train.bin")
n_train_tokens, n_val_tokens = (len(open_tokens(os.path.join(data_dir, f"{s}.bin"))) for s in ("train", "val"))

# model: from scratch, or from a checkpoint (resume, LoRA base), whose architecture then decides
model, ckpt = init_model(config, tok, train_path, log)
enc_dec, resumed = model.config.arch == "encoder_decoder", init_from == "resume"
iter_num, best_val_loss = (ckpt["iter_num"], ckpt["best_val_loss"]) if resumed or eval_only else (0, float("inf"))
planned = resumed and ckpt.get("budget") is not None  # a budgeted run continues its planned schedule to its end
max_iters = ckpt["max_iters"] if planned else max_iters
if time_budget or planned:  # a budget plans (and re-plans) max_iters, and the learning rate's decay ends there
    lr_decay_iters = 0
check(not resumed or eval_only or iter_num < max_iters, f"{out_dir}/ckpt.pt is at iter {iter_num}, already "
      f"max_iters={max_iters}: nothing to train; raise --max_iters (and --lr_decay_iters), or score it with "
      f"--eval_only=True")
if lora_r > 0:
    check(ckpt is not None and not resumed, "LoRA fine-tunes a trained model: set init_from to its checkpoint path")
    from lora import apply_lora, mark_only_lora_trainable, save_lora
    apply_lora(model, r=lora_r, alpha=lora_alpha, dropout=lora_dropout, targets=lora_targets.split(","))
    mark_only_lora_trainable(model)
model.to(device)
raw_model = model  # what gets evaluated and saved: never compiled or DDP-wrapped, so no '_orig_mod.' keys

# optimizer(s): Muon and AdamW, or AdamW alone (model.configure_optimizers); a resumed run continues their state
optimizers = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, optimizer)
optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
if resumed and not eval_only:
    states = ckpt["optimizer"] if isinstance(ckpt["optimizer"], list) else [ckpt["optimizer"]]
    check(len(states) == len(optimizers), f"resume: the checkpoint was trained with optimizer="
          f"{ckpt['config'].get('optimizer', 'adamw')}, this run asks for {optimizer}: set --optimizer to match")
    for opt, state in zip(optimizers, states):
        opt.load_state_dict(state)
ckpt = None  # free the checkpoint's tensors
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16" and device_type == "cuda"))
if compile:
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == "cuda" else None)

# batches, and the schedule of a step: the encoder-decoder's objectives take the model's own tgt_len / dec_prefix
seq2seq = dict(span_ratio=span_ratio, noise_density=noise_density, mean_span=mean_span,
               tgt_len=raw_model.config.tgt_len, dec_prefix=raw_model.config.dec_prefix) if enc_dec else None
draw = partial(train_batch, path=train_path, n_tokens=n_train_tokens, block_size=block_size, device=device, seed=seed,
               tok=tok, seq2seq=seq2seq)
evaluate_split = lambda split, max_tokens=0: evaluate(raw_model, os.path.join(data_dir, f"{split}.bin"), tok,
                                                      batch_size, ctx, device, max_tokens, seq2seq)
T_pred = raw_model.config.tgt_len if enc_dec else block_size  # predicted tokens per sequence
tokens_per_iter = gradient_accumulation_steps * batch_size * T_pred  # before the batch ramp; twice that after it
ramp_on = math.ceil(batch_ramp * n_train_tokens / tokens_per_iter) if batch_ramp else math.inf  # the ramp's first step
epochs_at = lambda it: (it + max(0, it - ramp_on)) * tokens_per_iter / n_train_tokens  # passes over train by step it
dropout_on = dropout_from * n_train_tokens / tokens_per_iter  # late dropout's first step: after dropout_from epochs...
dropout_on = math.ceil(dropout_on if dropout_on <= ramp_on else ramp_on + (dropout_on - ramp_on) / 2)  # (2 a step)
dropout_modules = [m for n, m in raw_model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_" not in n]


def schedule(it, max_iters):
    """(learning rate, dropout rate, sequences per micro-step) at optimizer step it: the whole curriculum, one pure
    function of the step. Learning rate: linear warmup for warmup_iters steps, then cosine decay to min_lr at
    lr_decay_iters (0: at max_iters, as a time budget plans it), then min_lr (nanoGPT's get_lr); or, with
    warmdown_frac, learning_rate until the last warmdown_frac of lr_decay_iters, then linear to 0; dropout from step
    dropout_on (late dropout, Liu et al. 2023); twice the batch from step ramp_on (batch ramp, Smith et al. 2018)."""
    decay_iters, lr = lr_decay_iters or max_iters, learning_rate
    if decay_lr and it < warmup_iters:
        lr = learning_rate * (it + 1) / (warmup_iters + 1)
    elif decay_lr and warmdown_frac:  # a time budget may cut or extend the plan: the warmdown follows its end
        lr = learning_rate * min(1.0, max(0.0, (decay_iters - it) / (warmdown_frac * decay_iters)))
    elif decay_lr:
        ratio = min(1.0, (it - warmup_iters) / max(1, decay_iters - warmup_iters))
        lr = min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)
    return lr, dropout if it >= dropout_on else 0.0, batch_size * (2 if it >= ramp_on else 1)


# checkpoints: a model's (its weights and optimizer state), or LoRA's (only the adapters, as lora.pt / lora_best.pt),
# in an out_dir this run holds (one run per out_dir) and whose checkpoints it may write (no silent overwrite)
write = partial(save_lora, base=init_from) if lora_r > 0 else partial(save_checkpoint, optimizer=optimizers)
file_names = {"ckpt.pt": "lora.pt", "best.pt": "lora_best.pt"} if lora_r > 0 else {}
lock = claim_out_dir(out_dir, [file_names.get(n, n) for n in ("ckpt.pt", "best.pt")], overwrite or resumed) \
    if master_process and not eval_only else None
# a picture of the run: every log and evaluation line as JSON in out_dir/log.jsonl (plot.py draws it), written by the
# process that holds out_dir; a resumed run appends to its run's
run_log = open(os.path.join(out_dir, "log.jsonl"), "a" if resumed else "w") if lock else None
record = lambda **row: run_log and print(json.dumps(row), file=run_log, flush=True)


def save(name, iter_num, best_val_loss, max_iters):
    """Write out_dir/name with the step, the step count it heads for, the time budget's plan, and the dtype and
    device that ran (config may say "auto"); returns the seconds it took."""
    t, plan = time.time(), {"max_iters": max_iters, "budget": budget and budget.state()}
    write(os.path.join(out_dir, file_names.get(name, name)), raw_model, tok, config, iter_num=iter_num,
          best_val_loss=best_val_loss, extra={"dtype": dtype, "device": device, **plan})
    return time.time() - t


def check_stories(n_tokens):
    """The known-word check's word_rate_samples stories of up to n_tokens from "Once upon a time", at seed."""
    return sample_stories(raw_model, tok, "Once upon a time", word_rate_samples, n_tokens, ctx, seed=seed)


def plan_costs(it, best_val_loss, max_iters):
    """What the time budget times at step it (budget.measure_costs): a checkpoint write, evaluation, the known-word
    check, and what the later phases of schedule() add to a step (none measured under DDP)."""
    save_ckpt = lambda: save("ckpt.pt", it, best_val_loss, max_iters) if master_process else 0.0
    stories = check_stories if word_rate_samples and master_process else None
    timed = partial(pass_seconds, raw_model, draw, ctx, dropout_modules)  # a forward + backward pass in a setting
    setting = lambda i: schedule(i, max_iters)[1:]  # (dropout rate, batch) of step i
    phases = lambda: [] if ddp else phase_costs(it, (dropout_on, ramp_on), setting, timed)
    return measure_costs(save_ckpt, partial(evaluate_split, "val"), stories, phases)


flops_per_token = raw_model.estimate_flops_per_token(block_size)
peak = peak_flops or measure_peak_flops(device, dtype)
log(f"config: {json.dumps(config)}")
n_total, n_trainable = raw_model.num_params(False), sum(p.numel() for p in model.parameters() if p.requires_grad)
log(f"model: {n_total / 1e6:.2f}M parameters ({raw_model.num_params() / 1e6:.2f}M non-embedding), trainable "
    f"{n_trainable:,} ({100 * n_trainable / n_total:.2f}%); {flops_per_token / 1e6:.1f} MFLOP per token")
log(f"tokens per iteration: {tokens_per_iter:,} = {gradient_accumulation_steps} accumulation x {batch_size} batch "
    f"x {T_pred} tokens ({ddp_world_size} rank(s)); {n_train_tokens:,} train tokens = "
    f"{n_train_tokens / tokens_per_iter:.1f} iterations per epoch"
    + (f"; batch {2 * batch_size} from step {ramp_on} ({batch_ramp:g} epochs)" if batch_ramp else ""))
log(f"device {device}, dtype {dtype}, compile {compile}, peak {peak / 1e12:.2f} TFLOP/s for MFU")

if eval_only:
    result = {**evaluate_split("val"), "split": "val", "checkpoint": init_from, "iter": iter_num}
    log(json.dumps(result))
    if master_process:
        os.makedirs(out_dir, exist_ok=True)
        json.dump(result, open(os.path.join(out_dir, "eval.json"), "w"), indent=1)
    sys.exit(0)
if wandb_log and master_process:
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)
# the first Ctrl-C (or SIGTERM) finishes the step, saves and exits 0; a second aborts at once, ckpt.pt as it was
stop_signal = stop_on_signal(lambda name: log(f"\n{name}: finishing this step, then saving {out_dir} (again to abort)"))
# the time budget plans after warmup (at least 20 steps: the first run slow): those steps are the same without it
n_eval, n_final = eval_tokens or n_val_tokens, min(final_eval_tokens or n_val_tokens, n_val_tokens)  # val targets
budget = TimeBudget(time_budget, _t_launch, max(warmup_iters, 20), eval_interval, n_eval, n_final, iter_num, agree,
                    log) if time_budget > 0 and not planned else None

# ---------------------------------------------------------------------------------------------------------------------
# the loop
start_iter, step_times = iter_num, []  # seconds of each step of this run: the log's pace and the budget's
while True:
    lr, p, batch = schedule(iter_num, max_iters)
    for group in (g for opt in optimizers for g in opt.param_groups):
        group["lr"] = lr
    if p != dropout_modules[0].p or iter_num == ramp_on:  # late dropout or the batch ramp switches on
        for m in dropout_modules:
            m.p = p
        log(f"iter {iter_num}: dropout {p}, batch {batch} from here ({epochs_at(iter_num):.1f} epochs)")

    # evaluate every eval_interval steps and at the end; a budgeted run skips its first one (of a model just
    # initialised, or just saved): its time goes to training, and the plan times a small evaluation of its own
    if (iter_num % eval_interval == 0 and (iter_num > start_iter or not time_budget)) or iter_num == max_iters:
        final, t = iter_num == max_iters, time.time()
        val = evaluate_split("val", final_eval_tokens if final else eval_tokens)
        train = evaluate_split("train", eval_tokens or val["tokens"])
        log(f"eval {iter_num}: train loss {train['loss']:.4f}, val loss {val['loss']:.4f}, val bpb {val['bpb']:.4f}"
            + (f", val span loss {val['span_loss']:.4f}" if enc_dec else "")
            + f" ({val['tokens']:,} val tokens, {time.time() - t:.1f} s; {time.time() - _t_launch:.0f} s elapsed)")
        if not math.isfinite(val["loss"]):
            raise SystemExit(f"val loss is {val['loss']} at iter {iter_num}: stopping; the last good checkpoint in "
                             f"{out_dir} is untouched (lower learning_rate, or set grad_clip)")
        record(iter=iter_num, seconds=time.time() - _t_launch, train_loss=train["loss"], val_loss=val["loss"],
               val_bpb=val["bpb"], val_tokens=val["tokens"])
        if wandb_log and master_process:
            wandb.log({"iter": iter_num, "train/loss": train["loss"], "val/loss": val["loss"], "val/bpb": val["bpb"],
                       "lr": lr})
        if master_process and iter_num > start_iter:  # a resumed run has nothing new to save at its first step
            if val["loss"] < best_val_loss:
                best_val_loss = val["loss"]
                save("best.pt", iter_num, best_val_loss, max_iters)
            save_s = save("ckpt.pt", iter_num, best_val_loss, max_iters)
            log(f"saved {out_dir}/{file_names.get('ckpt.pt', 'ckpt.pt')} ({save_s:.1f} s)")
    if iter_num >= max_iters:
        break

    # one optimizer step: accum_steps micro-steps, gradients synchronised across ranks only on the last one. Dropout's
    # masks come from a seed per (step, rank), so a resumed run draws the masks the uninterrupted one would have
    torch.manual_seed((seed * 1_000_003 + iter_num) * 64 + ddp_rank)
    t = time.time()
    step_loss = torch.zeros((), device=device)  # mean loss over this step's global batch, for the log
    for micro in range(accum_steps):
        inputs, y = draw(iter_num, micro * ddp_world_size + ddp_rank, batch_size=batch)
        if ddp:  # the official way is the no_sync() context manager; setting the flag avoids re-indenting the step
            model.require_backward_grad_sync = micro == accum_steps - 1
        with ctx:
            _, loss = model(**inputs, targets=y, return_logits=False)  # the fused output layer + loss (model.py)
            loss = loss / accum_steps  # the gradient is the mean over the global batch
        step_loss += loss.detach()
        scaler.scale(loss).backward()
    if grad_clip != 0.0:
        for opt in optimizers:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in optimizers:
        scaler.step(opt)
        opt.zero_grad(set_to_none=True)
    scaler.update()
    iter_num += 1
    step_times.append(time.time() - t)
    if budget:  # plans after warmup, then cuts or extends the plan as the pace changes
        costs = partial(plan_costs, iter_num, best_val_loss, max_iters)  # measured once, when it plans
        max_iters = budget.update(iter_num, step_times, max_iters, costs)
    if iter_num % log_interval == 0:
        if ddp:  # every rank reaches this line on the same iterations
            torch.distributed.all_reduce(step_loss, op=torch.distributed.ReduceOp.AVG)
        lossf = step_loss.item()  # a CPU-GPU sync point: only on log steps
        if not math.isfinite(lossf):  # every rank checks, so none is left waiting in an all-reduce
            raise SystemExit(f"loss is {lossf} at iter {iter_num}: stopping; the last good checkpoint in {out_dir} "
                             f"is untouched (lower learning_rate, or set grad_clip)")
        dt = sum(step_times[-log_interval:]) / len(step_times[-log_interval:])  # seconds per step, evaluations apart
        tps = tokens_per_iter * batch / batch_size / dt
        left = f", ~{(max_iters - iter_num) * dt:.0f} s of steps left" if budget and budget.plan else ""
        mfu = tps * flops_per_token / (peak * ddp_world_size)
        log(f"iter {iter_num}/{max_iters}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000:.0f} ms/iter, {tps:,.0f} "
            f"tokens/s, mfu {100 * mfu:.1f}%, {time.time() - _t_launch:.0f} s elapsed{left}")
        record(iter=iter_num, seconds=time.time() - _t_launch, loss=lossf, lr=lr, tokens_per_s=tps)
        if wandb_log and master_process:
            wandb.log({"iter": iter_num, "train/loss_step": lossf, "tokens_per_s": tps})
    if agree(len(stop_signal), largest=True):  # every rank stops at this step
        if master_process:
            save("ckpt.pt", iter_num, best_val_loss, max_iters)
            args = [a for a in sys.argv if not a.startswith("--init_from=")] + ["--init_from=resume"]
            launcher = f"torchrun --nproc_per_node={ddp_world_size}" if ddp else "python"
            log(f"saved {out_dir}/ckpt.pt at iter {iter_num}; resume with: {launcher} {shlex.join(args)}")
        if ddp:
            destroy_process_group()
        sys.exit(0)

if word_rate_samples > 0 and master_process:  # "writes English", measured: see evaluate.known_word_rate
    t = time.time()
    val["known_words"] = known_word_rate(check_stories(256), known_words(train_path, tok))
    log(f"known words: {100 * val['known_words']:.1f}% of the words of {word_rate_samples} sampled stories occur in "
        f"the train split ({time.time() - t:.1f} s)")
if master_process:
    result = {**val, "split": "val", "iter": iter_num, "train_loss": train["loss"], "seconds": time.time() - _t_launch}
    json.dump(result, open(os.path.join(out_dir, "eval.json"), "w"), indent=1)
    log(f"done in {result['seconds']:.0f} s: val bpb {val['bpb']:.4f}, wrote {out_dir}/eval.json")
if ddp:
    destroy_process_group()
