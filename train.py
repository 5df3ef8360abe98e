"""
Train a nanostories model (decoder-only GPT or ByT5-style encoder-decoder): from scratch, resumed, or LoRA.

  python train.py config/tinystories_cpu.py                                    # quick start on a CPU
  python train.py config/tinystories_33m.py --batch_size=32                    # any default below can be overridden
  torchrun --standalone --nproc_per_node=2 train.py config/tinystories_cpu.py  # DDP (NCCL on GPUs, gloo on CPUs)
  python train.py config/tinystories_33m.py --eval_only=True --init_from=resume  # scores val.bin -> out_dir/eval.json
  python train.py config/lora_tinystories_dog.py                               # LoRA on a base checkpoint (lora.py)
  python train.py --help                                                       # every key, its default and meaning

Ctrl-C (or SIGTERM) finishes the current step, writes ckpt.pt and prints the command that resumes; a second Ctrl-C
aborts at once and leaves ckpt.pt as it was.

time_budget > 0 fits the whole run (training, evaluations, checkpoints, the final evaluation and the known-word
check) into that many seconds of wall clock. It fixes a step count, not a clock schedule: after the first
plan_iters steps it measures the pace of a step, an evaluated token and a checkpoint write, sets max_iters and
lr_decay_iters to the steps that fit, prints them and saves them in the checkpoint. The learning-rate schedule is
then an ordinary function of the step, so `--time_budget=0 --max_iters=N --lr_decay_iters=N` repeats the run
exactly (warmup_iters >= plan_iters, as in the shipped configs, makes the first steps identical too), and a resumed
run continues the planned schedule. A schedule in elapsed seconds would make every run unrepeatable. If the pace
later drops (a busy machine), the plan is cut to fit; if it rises in the first half of the run, the plan is extended;
the log says so either way. budget.py holds the arithmetic, and the band that keeps a wandering pace from flipping it.
"""
import time

_t_launch = time.time()  # a time_budget counts from here: the imports below take seconds too
import dataclasses
import json
import math
import os
import shlex
import signal
import sys
from functools import partial

import torch
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

from batches import evaluate, open_tokens, train_batch
from budget import PACE_MIN, Budget, pace
from common import (autocast, configure, init_model, keep_freed_memory, measure_peak_flops, resolve_device,
                    resolve_dtype, sample_stories, save_checkpoint)
from errors import check, one_line_errors
from tokenizer import get_tokenizer, known_word_rate, known_words

# ---------------------------------------------------------------------------------------------------------------------
# defaults: every key a config file or --key=value may set
# I/O
out_dir = "out"
eval_interval = 250         # optimizer steps between evaluations and checkpoints
log_interval = 10           # optimizer steps between log lines
eval_tokens = 0             # evaluations during training score the first eval_tokens targets of val.bin (0 = all);
#                             the train split is scored on eval_tokens targets (0: as many as val)
final_eval_tokens = 0       # the final evaluation (at max_iters) scores the first final_eval_tokens of val (0 = all,
#                             the fixed full-val figure); eval_only always scores all of it
time_budget = 0.0           # seconds for the whole run, final evaluation included (0 = off: max_iters decides)
plan_iters = 50             # with time_budget: steps run before the pace is measured and max_iters is fixed
#                             (the first steps run slower: a plan on too few overestimates a step)
word_rate_samples = 20      # at the end: stories sampled to report the share of known words (0 = off)
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
batch_ramp = 0.0            # epochs at batch_size, then twice as many sequences per micro-step (0 = never): small,
#                             many steps early, a larger batch once the loss moves slowly (Smith et al. 2018, arXiv
#                             1711.00489, grow the batch where the learning rate would decay)
block_size = 256            # tokens per sequence (the encoder's input length in an encoder-decoder)
# model (see GPTConfig in model.py)
n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0
dropout_from = 0.0          # epochs of training before dropout switches on ("late dropout", Liu et al. 2023, arXiv
#                             2303.01500): a short run is not overfitting yet, a long one is; 0 = from the start
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
# optimizer: linear warmup then cosine decay to min_lr
optimizer = "adamw"         # "adamw" | "muon" (Muon for the blocks' matrices, AdamW for the rest: see model.py)
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
compile = False             # torch.compile the model (on CPUs about as fast as eager: RECORDS.md)
peak_flops = 0.0            # the device's peak FLOP/s in dtype for MFU; 0 = from a GPU table or measured
# ---------------------------------------------------------------------------------------------------------------------
one_line_errors()
config = configure({k: v for k, v in globals().items() if not k.startswith("_") and k.islower() and  # not PACE_MIN
                    isinstance(v, (int, float, bool, str))}, sys.argv[1:], __file__)
globals().update(config)
for key in ("eval_interval", "log_interval", "batch_size", "block_size", "gradient_accumulation_steps", "plan_iters"):
    check(config[key] > 0, f"{key}={config[key]} must be at least 1")
for key in ("max_iters", "time_budget", "word_rate_samples", "warmup_iters", "weight_decay", "grad_clip", "min_lr",
            "dropout_from", "batch_ramp", "eval_tokens", "final_eval_tokens"):
    check(config[key] >= 0, f"{key}={config[key]} must not be negative")
check(learning_rate > 0 and 0 <= dropout < 1, f"learning_rate={learning_rate} must be > 0, dropout={dropout} in [0, 1)")
check(optimizer in ("adamw", "muon"), f"optimizer='{optimizer}' must be 'adamw' or 'muon'")
check(arch == "decoder" or tgt_len <= block_size, f"tgt_len={tgt_len} must be at most block_size={block_size}: the "
      f"decoder's positions share the encoder's position table")
check(init_from != "scratch" or not eval_only, "eval_only scores a trained model: set --init_from=resume (out_dir/"
      "ckpt.pt) or --init_from=PATH of a checkpoint")
check(not os.path.exists(out_dir) or os.path.isdir(out_dir), f"out_dir={out_dir} is a file, not a folder: pick "
      f"another --out_dir")
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
rebuild = (f"run `python prepare.py --name={dataset} --tokenizer={tokenizer}` (add --source=DIR for local release "
           f"files, e.g. --source=data/tinystories_excerpt; --force rebuilds)")
for name in ("meta.json", "train.bin", "val.bin"):
    path = os.path.join(data_dir, name)
    check(os.path.isfile(path), f"no prepared data in {data_dir} ({name} is missing): {rebuild}")
    check(not name.endswith(".bin") or os.path.getsize(path) % 2 == 0, f"{path} is not whole uint16 ids (odd size: "
          f"cut short?): {rebuild}")
tok = get_tokenizer(tokenizer)
train_path = os.path.join(data_dir, "train.bin")
n_train_tokens = len(open_tokens(train_path))

# model: from scratch, or from a checkpoint (resume, LoRA base), whose architecture config now follows
model, ckpt = init_model(config, tok, train_path, device, log)
model_config, enc_dec = model.config, model.config.arch == "encoder_decoder"
max_iters, lr_decay_iters = config["max_iters"], config["lr_decay_iters"]  # a resumed budgeted run's plan
iter_num, best_val_loss = (ckpt["iter_num"], ckpt["best_val_loss"]) if init_from == "resume" else (0, float("inf"))
if eval_only:
    iter_num = ckpt["iter_num"]  # eval.json names the checkpoint's step, from any init_from
if lora_r > 0:
    if ckpt is None or init_from == "resume":
        raise SystemExit("config error: LoRA fine-tunes a trained model: set init_from to its checkpoint path")
    from lora import apply_lora, mark_only_lora_trainable, save_lora
    apply_lora(model, r=lora_r, alpha=lora_alpha, dropout=lora_dropout, targets=lora_targets.split(","))
    mark_only_lora_trainable(model)
model.to(device)
raw_model = model  # what gets evaluated and saved: never compiled or DDP-wrapped, so no '_orig_mod.' keys
n_total, n_trainable = raw_model.num_params(False), sum(p.numel() for p in model.parameters() if p.requires_grad)

optimizers = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, optimizer)
optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
plan = None
if ckpt is not None and init_from == "resume" and not eval_only:
    states = ckpt["optimizer"] if isinstance(ckpt["optimizer"], list) else [ckpt["optimizer"]]
    check(len(states) == len(optimizers), f"resume: the checkpoint was trained with optimizer="
          f"{ckpt['config'].get('optimizer', 'adamw')}, this run asks for {optimizer}: set --optimizer to match")
    for opt, state in zip(optimizers, states):
        opt.load_state_dict(state)
    plan = ckpt.get("plan")
ckpt = None  # free the checkpoint's tensors
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16" and device_type == "cuda"))
if compile:
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == "cuda" else None)
# the settings of the encoder-decoder's objectives: the model's own tgt_len / dec_prefix (a checkpoint's, if loaded)
seq2seq = dict(span_ratio=span_ratio, noise_density=noise_density, mean_span=mean_span,
               tgt_len=model_config.tgt_len, dec_prefix=model_config.dec_prefix) if enc_dec else None
draw = partial(train_batch, path=train_path, n_tokens=n_train_tokens, block_size=block_size, device=device, seed=seed,
               tok=tok, seq2seq=seq2seq)
evaluate_split = lambda split, max_tokens=0: evaluate(raw_model, os.path.join(data_dir, f"{split}.bin"), tok,
                                                      batch_size, ctx, device, max_tokens, seq2seq)
T_pred = model_config.tgt_len if enc_dec else block_size  # predicted tokens per sequence
tokens_per_iter = gradient_accumulation_steps * batch_size * T_pred  # before the batch ramp; twice that after it
ramp_on = math.ceil(batch_ramp * n_train_tokens / tokens_per_iter) if batch_ramp else None  # the ramp's first step
batch_at = lambda it: batch_size * (2 if ramp_on is not None and it >= ramp_on else 1)  # sequences per micro-step
micro_batch = lambda it, g: draw(it, g, batch_size=batch_at(it))


def epochs_at(it):
    """Passes over the train split that steps 0 .. it-1 make (steps after the batch ramp hold twice the tokens)."""
    return (it + (max(0, it - ramp_on) if ramp_on is not None else 0)) * tokens_per_iter / n_train_tokens


def epoch_step(epochs):
    """The first step after `epochs` passes over the train split (steps after the batch ramp hold twice the tokens)."""
    n = epochs * n_train_tokens / tokens_per_iter
    return math.ceil(n if ramp_on is None or n <= ramp_on else ramp_on + (n - ramp_on) / 2)


dropout_modules = [m for n, m in raw_model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_" not in n]
dropout_on = epoch_step(dropout_from)  # the step late dropout switches on at
flops_per_token = raw_model.estimate_flops_per_token(block_size)
peak = peak_flops or measure_peak_flops(device, dtype)
log(f"config: {json.dumps(config)}")
log(f"model: {n_total / 1e6:.2f}M parameters ({raw_model.num_params() / 1e6:.2f}M non-embedding), trainable "
    f"{n_trainable:,} ({100 * n_trainable / n_total:.2f}%); {flops_per_token / 1e6:.1f} MFLOP per token")
log(f"tokens per iteration: {tokens_per_iter:,} = {gradient_accumulation_steps} accumulation x {batch_size} batch "
    f"x {T_pred} tokens ({ddp_world_size} rank(s)); {n_train_tokens:,} train tokens = "
    f"{n_train_tokens / tokens_per_iter:.1f} iterations per epoch"
    + (f"; batch {2 * batch_size} from step {ramp_on} ({batch_ramp:g} epochs)" if ramp_on is not None else ""))
log(f"device {device}, dtype {dtype}, compile {compile}, peak {peak / 1e12:.2f} TFLOP/s for MFU")


# ---------------------------------------------------------------------------------------------------------------------
def get_lr(it):
    """Linear warmup for warmup_iters steps, then cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def save(name):
    """Write out_dir/name (LoRA: only the adapters, as lora.pt / lora_best.pt); returns the seconds it took."""
    t = time.time()
    extra = {"dtype": dtype, "device": device, "plan": plan}  # what actually ran, where config says "auto"
    if lora_r > 0:  # adapters only: a small fraction of the base, which stays untouched at init_from
        save_lora(os.path.join(out_dir, "lora.pt" if name == "ckpt.pt" else "lora_" + name), raw_model, tokenizer,
                  config, iter_num, best_val_loss, base=init_from, extra=extra)
    else:
        save_checkpoint(os.path.join(out_dir, name), raw_model, tokenizer, config, optimizers, iter_num, best_val_loss,
                        extra=extra)
    return time.time() - t


def phase_costs():
    """The phases ahead of this step, [(first step, seconds a step costs more from there on)], for the Budget: late
    dropout (its random masks) and the batch ramp (twice the sequences), each timed as forward + backward passes of
    raw_model against passes in this step's setting, with the RNG and the gradients left as they were. A pass leaves
    the optimizer step out, which does not change with them. [] under DDP (its gradient hooks would see the passes:
    the checks on the pace make up for it)."""
    setting = lambda it: (dropout if it >= dropout_on else 0.0, batch_at(it))
    firsts = sorted({f for f in (dropout_on, ramp_on) if f is not None and f > iter_num and
                     setting(f) != setting(iter_num)})
    if not firsts or ddp:
        return []
    times = {}
    with torch.random.fork_rng():
        for key in [setting(iter_num), *map(setting, firsts)] * 4:  # the least of 4: a new shape warms up for 2-3
            for m in dropout_modules:
                m.p = key[0]
            inputs, y = draw(iter_num, 0, batch_size=key[1])
            t = time.time()
            with ctx:
                loss = raw_model(**inputs, targets=y)[1]
            loss.backward()
            times[key] = min(times.get(key, 1e9), time.time() - t)
    for m in dropout_modules:
        m.p = setting(iter_num)[0]
    raw_model.zero_grad(set_to_none=True)
    return [(f, max(0.0, times[setting(f)] - times[setting(iter_num)])) for f in firsts]


def word_rate_s():
    """Seconds the end-of-run known-word check will take: 16 of its 256 sampled tokens timed, times 16."""
    if not word_rate_samples or not master_process:
        return 0.0
    t = time.time()
    with torch.random.fork_rng():  # leaves the training RNG as it was: the run stays repeatable without a budget
        sample_stories(raw_model.eval(), tok, "Once upon a time", word_rate_samples, 16, ctx)
    raw_model.train()
    return 16 * (time.time() - t) + 0.5  # + reading the train split's words


def agree(n, largest=False):
    """n as every DDP rank sees it: the smallest (or the largest) over ranks; n itself without DDP."""
    if not ddp:
        return n
    t = torch.tensor([n], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX if largest else torch.distributed.ReduceOp.MIN)
    return t.item()


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

stop_signal = []  # the first SIGINT / SIGTERM: finish the step, save, exit 0; a second one aborts at once


def on_signal(signum, frame):
    if stop_signal:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        raise KeyboardInterrupt  # save_checkpoint removes its temporary file; ckpt.pt keeps what it had
    stop_signal.append(signum)
    log(f"\n{signal.Signals(signum).name}: finishing this step, then saving {out_dir} (again to abort at once)")


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)

# ---------------------------------------------------------------------------------------------------------------------
# the loop
t_start, t0 = _t_launch, time.time()
start_iter, eval_s, save_s, step_times, budget = iter_num, 0.0, 0.0, [], None
while True:
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for group in (g for opt in optimizers for g in opt.param_groups):
        group["lr"] = lr

    # evaluate every eval_interval steps and at the end; a budgeted run skips the first one (of a model just
    # initialised, or just saved), as its time goes to training, and the plan times a small evaluation of its own
    if (iter_num % eval_interval == 0 and not (time_budget > 0 and iter_num == start_iter)) or iter_num == max_iters:
        final, t_eval = iter_num == max_iters, time.time()
        val = evaluate_split("val", final_eval_tokens if final else eval_tokens)
        train = evaluate_split("train", eval_tokens or val["tokens"])
        eval_s = time.time() - t_eval
        log(f"eval {iter_num}: train loss {train['loss']:.4f}, val loss {val['loss']:.4f}, val bpb {val['bpb']:.4f}"
            + (f", val span loss {val['span_loss']:.4f}" if enc_dec else "")
            + f" ({val['tokens']:,} val tokens, {eval_s:.1f} s; {time.time() - t_start:.0f} s elapsed)")
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
            save_s = save("ckpt.pt")
            log(f"saved {out_dir}/{'lora' if lora_r > 0 else 'ckpt'}.pt ({save_s:.1f} s)")
        t0 = time.time()  # evaluation time is not training time
    if iter_num >= max_iters:
        break

    # one optimizer step: accum_steps micro-steps, gradients synchronised across ranks only on the last one. Dropout's
    # masks come from a seed per (step, rank), so a resumed run draws the masks the uninterrupted one would have
    torch.manual_seed((seed * 1_000_003 + iter_num) * 64 + ddp_rank)
    p = dropout if iter_num >= dropout_on else 0.0  # a function of the step
    if p != dropout_modules[0].p:
        for m in dropout_modules:
            m.p = p
        log(f"iter {iter_num}: dropout {p} from here ({epochs_at(iter_num):.1f} epochs)")
    if iter_num == ramp_on:
        log(f"iter {iter_num}: batch {batch_at(iter_num)} from here ({epochs_at(iter_num):.1f} epochs)")
    t_step = time.time()
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
        for opt in optimizers:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in optimizers:
        scaler.step(opt)
        opt.zero_grad(set_to_none=True)
    scaler.update()
    iter_num += 1
    step_times.append(time.time() - t_step)

    if time_budget > 0 and plan is None and iter_num - start_iter >= plan_iters:
        t_plan = time.time()
        # the pace: the mean step of the second half (the first steps warm the allocator up; the checks later use the
        # same mean, budget.pace), seconds per evaluated token (timed again now: the first evaluation pays for
        # warm-up), a checkpoint write, the known-word check
        step_s = agree(pace(step_times, since=len(step_times) // 2), largest=True)
        save_s = save("ckpt.pt") if master_process else 0.0  # also: an early checkpoint to sample or resume from
        t, small = time.time(), evaluate_split("val", 16384)
        span_s = small.get("span_s", 0.0)  # the encoder-decoder's 8 fixed span batches: per evaluation, not per token
        per_token = (time.time() - t - span_s) / small["tokens"]
        n_val = len(open_tokens(os.path.join(data_dir, "val.bin")))
        eval_s = per_token * 2 * (eval_tokens or n_val) + 2 * span_s  # an evaluation during training: val and train
        n_final = min(final_eval_tokens or n_val, n_val)
        final_s = per_token * (n_final + (eval_tokens or n_val)) + 2 * span_s + save_s + word_rate_s()
        phases = [[0, 0.0]] + [[f, agree(x, largest=True)] for f, x in phase_costs()]  # lists: plain data
        budget = Budget(time_budget, t_start, eval_interval, eval_s, save_s, final_s, phases)
        max_iters = lr_decay_iters = config["max_iters"] = config["lr_decay_iters"] = \
            int(agree(budget.fit(time.time(), iter_num, step_s)))
        plan = {"max_iters": max_iters, "lr_decay_iters": lr_decay_iters, "step_s": step_s, "planned_at": iter_num,
                **dataclasses.asdict(budget)}  # plain data, saved in the checkpoint
        t0 += time.time() - t_plan  # the planning is not step time: the log's pace (and the check on it) excludes it
        later = "".join(f", +{1000 * x:.0f} ms from step {f}" for f, x in phases[1:])  # dropout, the batch ramp
        log(f"time_budget {time_budget:.0f} s: {step_s * 1000:.0f} ms/step{later}, evaluations {eval_s:.1f} s, writes "
            f"{save_s:.1f} s, final evaluation ~{final_s:.0f} s -> max_iters = lr_decay_iters = {max_iters} "
            f"(repeat with --time_budget=0 --max_iters={max_iters} --lr_decay_iters={max_iters})")
    if iter_num % log_interval == 0:
        if ddp:  # every rank reaches this line on the same iterations
            torch.distributed.all_reduce(step_loss, op=torch.distributed.ReduceOp.AVG)
        lossf = step_loss.item()  # a CPU-GPU sync point: only on log steps
        if not math.isfinite(lossf):  # every rank checks, so none is left waiting in an all-reduce
            raise SystemExit(f"loss is {lossf} at iter {iter_num}: stopping; the last good checkpoint in {out_dir} "
                             f"is untouched (lower learning_rate, or set grad_clip)")
        dt = (time.time() - t0) / log_interval
        tps, elapsed = tokens_per_iter * batch_at(iter_num - 1) / batch_size / dt, time.time() - t_start
        # on time? (a resumed run keeps its saved plan) One pace for both directions (budget.py): the recent steps of
        # this phase, or since the plan, once there are PACE_MIN of them
        since = max(plan["planned_at"], budget.phase(iter_num - 1)[0]) if budget else iter_num
        if budget and iter_num < max_iters and iter_num - since >= PACE_MIN:
            budget.eval_s, budget.save_s = eval_s, save_s  # as the last evaluation took
            now, step_s = agree(time.time(), largest=True), agree(pace(step_times, since - start_iter), largest=True)
            n, why = budget.revise(now, iter_num, max_iters, step_s)  # the same on every rank: its inputs are agreed
            if why:
                log(f"re-planned, {why} the plan ({1000 * step_s:.0f} ms/step): max_iters = lr_decay_iters "
                    f"{max_iters} -> {n}")
                max_iters = lr_decay_iters = config["max_iters"] = config["lr_decay_iters"] = plan["max_iters"] = \
                    plan["lr_decay_iters"] = n
        left = f", ~{(max_iters - iter_num) * dt:.0f} s of steps left" if plan else ""
        log(f"iter {iter_num}/{max_iters}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000:.0f} ms/iter, {tps:,.0f} tokens/s, "
            f"mfu {100 * tps * flops_per_token / (peak * ddp_world_size):.1f}%, {elapsed:.0f} s elapsed{left}")
        if wandb_log and master_process:
            wandb.log({"iter": iter_num, "train/loss_step": lossf, "tokens_per_s": tps})
        t0 = time.time()
    if agree(len(stop_signal), largest=True):  # every rank stops at this step
        if master_process:
            save("ckpt.pt")
            args = [a for a in sys.argv if not a.startswith("--init_from=")] + ["--init_from=resume"]
            launcher = f"torchrun --nproc_per_node={ddp_world_size}" if ddp else "python"
            log(f"saved {out_dir}/ckpt.pt at iter {iter_num}; resume with: {launcher} {shlex.join(args)}")
        if ddp:
            destroy_process_group()
        sys.exit(0)

if word_rate_samples > 0 and master_process:  # "writes English", measured: see tokenizer.known_word_rate
    t = time.time()
    torch.manual_seed(seed)
    stories = [tok.decode(r) for r in sample_stories(raw_model.eval(), tok, "Once upon a time", word_rate_samples, 256,
                                                     ctx)]
    val["known_words"] = known_word_rate(stories, known_words(train_path, tok))
    log(f"known words: {100 * val['known_words']:.1f}% of the words of {word_rate_samples} sampled stories occur in "
        f"the train split ({time.time() - t:.1f} s)")
if master_process:
    result = {**val, "split": "val", "iter": iter_num, "train_loss": train["loss"], "seconds": time.time() - t_start}
    json.dump(result, open(os.path.join(out_dir, "eval.json"), "w"), indent=1)
    log(f"done in {result['seconds']:.0f} s: val bpb {val['bpb']:.4f}, wrote {out_dir}/eval.json")
if ddp:
    destroy_process_group()
