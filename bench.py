"""
Micro-benchmarks, one per --mode, each printing throughput on this machine:

    python bench.py --mode=prepare            # prepare.py end to end (read, tokenize, write bins) on >= 40 MB of text
    python bench.py --mode=sample             # generate() tokens/s, KV cache on/off, fp32/bf16, vs HF GPT2LMHeadModel
    python bench.py --mode=train              # training step tokens/s and MFU: bf16, HF bf16, fp32, torch.compile
    python bench.py --mode=train --profile    # ... then the top ops of one bf16 step (torch.profiler)
    python bench.py --mode=train --out_vocab=6997     # ... plus GPTConfig.out_vocab on ids drawn from 6,997 of them
    python bench.py --mode=sample --no_malloc_tweak   # the same without speedups.keep_freed_memory (glibc defaults)
    python bench.py --mode=quickstart         # config/tinystories_cpu.py's step (dtype auto and fp32, dropout on/off),
                                              # % of the measured matmul peak, and its final evaluation's cost
    python bench.py --mode=memory             # peak memory of a 33M-shape step with and without grad_checkpoint

sample and train use the 33M shape (6 layers x 384 wide x 6 heads, block 512, GPT-2 vocab), random weights and
random token ids, so they need no data or checkpoint; `transformers` (the reference) is imported only inside them.
Modes live in the MODES dict at the bottom: a mode is a function taking the parsed args.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
SHARED_STORIES = REPO / "data" / "tinystories_excerpt"  # the genuine stories shipped with the repo


def bench_prepare(args):
    """Repeat the shipped genuine stories into one >= args.mb MB .txt release file, then time prepare() per tokenizer.
    Repetition is fine for throughput: tiktoken caches nothing across stories, and sha256/IO see every byte."""
    from prepare import prepare, read_release
    if not SHARED_STORIES.is_dir():
        raise SystemExit(f"{SHARED_STORIES} not found: bench needs the shipped TinyStories excerpt")
    stories = [s.decode() for f in sorted(SHARED_STORIES.glob("*.txt*")) for c, _ in read_release(f) for s in c if s]
    block = "".join(f"{s}\n<|endoftext|>\n" for s in stories)
    reps = -(-args.mb * 10**6 // len(block.encode()))  # ceil: at least args.mb MB
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "bench-train.txt"
        src.write_text(block * reps, encoding="utf-8")
        mb = src.stat().st_size / 1e6
        print(f"source: {src.name}, {mb:.1f} MB, {len(stories) * reps:,} stories ({reps}x the shipped excerpt), "
              f"{os.cpu_count()} CPUs")
        for tok in ("gpt2", "byte"):
            dts = []
            for _ in range(args.repeat):  # best of N: the dev box is shared, so the minimum is the honest figure
                t0 = time.time()
                meta = prepare(str(src), "bench", tok, out_dir=str(Path(tmp) / "data"), force=True, quiet=True)
                dts.append(time.time() - t0)
            dt = min(dts)
            n_tok = sum(s["tokens"] for s in meta["splits"].values())
            n_st = sum(s["stories"] for s in meta["splits"].values())
            n_b = sum(s["bytes"] for s in meta["splits"].values())
            print(f"prepare {tok:4s}: {dt:6.2f} s | {n_tok / dt / 1e6:6.2f} M tokens/s | {n_b / dt / 1e6:7.1f} MB/s "
                  f"(story text) | {n_st / dt:9,.0f} stories/s | {n_tok:,} tokens "
                  f"| all runs: {' '.join(f'{d:.2f}' for d in dts)} s")


# the 33M shape of config/tinystories_33m.py with dropout 0 (HF's three dropouts are zeroed too): speed, not quality
SHAPE = dict(n_layer=6, n_head=6, n_embd=384, block_size=512, vocab_size=50257)


def _setup(args):
    """Start of the model modes: the glibc malloc tweak first (before any large tensor; it is process-wide, so HF gets
    it too: the fair comparison), then a fixed seed. Prints the load average, as other jobs share the 2 cores."""
    import torch
    from speedups import keep_freed_memory
    if not args.no_malloc_tweak:
        keep_freed_memory()
    torch.manual_seed(1337)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads on {os.cpu_count()} CPUs, keep_freed_memory "
          f"{'off' if args.no_malloc_tweak else 'on'}, load average {os.getloadavg()[0]:.2f} at start")
    return torch


def _hf_gpt2(train: bool):
    """transformers.GPT2LMHeadModel at SHAPE, random init: the reference implementation (bench-only dependency)."""
    import transformers
    transformers.logging.set_verbosity_error()  # generate() warns about its defaults on every call
    cfg = transformers.GPT2Config(n_layer=SHAPE["n_layer"], n_head=SHAPE["n_head"], n_embd=SHAPE["n_embd"],
                                  n_positions=SHAPE["block_size"], vocab_size=SHAPE["vocab_size"],
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg).train(train)


def _profile(fn, row_limit=25):
    """Run fn under torch.profiler and print its ops by self CPU time: where a step's time goes."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit, max_name_column_width=50))


def bench_sample(args):
    """Greedy decoding speed: args.tokens new tokens after a 5-token prompt (EOT + 'Once upon a time'), per dtype and
    batch size: ours with the KV cache, ours without it (the whole window re-run every step), HF with its cache.
    Cached runs are best of args.repeat; an uncached run takes minutes (fp32, B=1: ~2.5), so it runs once, and only
    for the (dtype, batch) pairs in args.uncached."""
    torch = _setup(args)
    from device import autocast
    from model import GPT, GPTConfig
    from tokenizer import get_tokenizer
    tok = get_tokenizer("gpt2")
    prompt = [tok.eot_id] + tok.encode("Once upon a time")
    ours, hf = GPT(GPTConfig(**SHAPE)).eval(), _hf_gpt2(train=False)
    print(f"33M shape, random init: ours {ours.num_params(False) / 1e6:.1f}M parameters, HF "
          f"{sum(p.numel() for p in hf.parameters()) / 1e6:.1f}M ({hf.config._attn_implementation} attention); "
          f"prompt {len(prompt)} tokens, {args.tokens} new tokens, greedy")
    runs = {  # name -> generate(x, n): n new tokens after x (B, T), exactly n (no stop ids; HF: min_new_tokens)
        "ours, KV cache": lambda x, n: ours.generate(x, n, temperature=0, use_cache=True),
        "ours, no cache": lambda x, n: ours.generate(x, n, temperature=0, use_cache=False),
        "HF, KV cache": lambda x, n: hf.generate(x, attention_mask=torch.ones_like(x), use_cache=True, do_sample=False,
                                                 max_new_tokens=n, min_new_tokens=n, pad_token_id=tok.eot_id),
    }
    uncached = {tuple(s.split(":")) for s in args.uncached.split(",") if s}  # {(dtype, batch)}
    for dtype in args.dtypes.split(","):
        for B in (int(b) for b in args.batches.split(",")):
            x, dts, out = torch.tensor([prompt] * B), {}, {}
            names = [n for n in runs if "no cache" not in n or (dtype, str(B)) in uncached]
            with autocast("cpu", dtype):
                for name in names:
                    runs[name](x, 8)  # warm-up: kernel selection, first allocations
                # cached runs take turns (ours, HF, ours, ...) so that a burst of load from other jobs hits both
                for r in range(args.repeat):
                    for name in names:
                        if "no cache" in name and r:  # minutes per run: once
                            continue
                        t0 = time.perf_counter()
                        out[name] = runs[name](x, args.tokens)
                        dts.setdefault(name, []).append(time.perf_counter() - t0)
            tps = {}
            for name in names:
                assert out[name].shape == (B, len(prompt) + args.tokens), out[name].shape
                dt = min(dts[name])  # best of the runs
                tps[name], ms = B * args.tokens / dt, 1000 * dt / args.tokens  # ms per step: B new tokens
                print(f"{dtype:8s} B={B} {name:15s}: {tps[name]:8.1f} tokens/s | {ms:7.2f} ms/step | {ms / B:6.2f} "
                      f"ms/token | runs: {' '.join(f'{d:.2f}' for d in dts[name])} s", flush=True)
            notes = [f"ours / HF {tps['ours, KV cache'] / tps['HF, KV cache']:.2f}x"]
            if "ours, no cache" in tps:
                same = (out["ours, KV cache"] == out["ours, no cache"]).float().mean().item()
                notes.append(f"KV cache speed-up {tps['ours, KV cache'] / tps['ours, no cache']:.1f}x (greedy "
                             f"tokens equal to the uncached run's: {100 * same:.0f}%)")
            print(f"{dtype:8s} B={B} " + ", ".join(notes) + f" | load {os.getloadavg()[0]:.2f}", flush=True)
    if args.profile:  # the cached decode loop at batch 1 in fp32: per-step overhead vs the weight-bound matmuls
        x = torch.tensor([prompt])
        print(f"\nprofile: ours, KV cache, fp32, B=1, 100 new tokens")
        _profile(lambda: runs["ours, KV cache"](x, 100))


def bench_train(args):
    """One full optimizer step (forward, backward, grad clip at 1.0, fused AdamW step) on random ids, batch
    args.batch_size x block 512. Warm-up steps are excluded; the variants then take args.steps timed steps by turns,
    and each prints the median and the best of its steps.
    MFU = tokens/s x model.estimate_flops_per_token(512) / the measured matmul peak of the step's dtype, measured
    before and after the runs (the larger is kept: a neighbour's job during one measurement would inflate MFU)."""
    torch = _setup(args)
    from device import autocast, measure_peak_flops, resolve_dtype
    from model import GPT, GPTConfig
    B, T = args.batch_size, SHAPE["block_size"]
    auto = resolve_dtype("auto", "cpu")  # bfloat16 on a CPU with native bf16 (AVX512-BF16 or AMX)
    dtypes = list(dict.fromkeys((auto, "float32")))
    peak = {d: max(measure_peak_flops("cpu", d) for _ in range(3)) for d in dtypes}
    ids = [torch.randint(0, SHAPE["vocab_size"], (B, T + 1)) for _ in range(4)]
    # out_vocab: ids drawn from a fixed set of K, as TinyStories uses a fraction of GPT-2's 50,257 (train.py's
    # --out_vocab_from_data keeps the ids train.bin holds, 6,997 in the shared excerpt)
    kept = torch.randperm(SHAPE["vocab_size"])[:args.out_vocab].sort().values if args.out_vocab else None
    print(f"33M shape, batch {B} x {T} = {B * T:,} tokens/step; step time: median (best) of {args.steps} after "
          f"{args.warmup} warm-up steps")

    def make_step(name, dtype, compile=False, out_vocab=0):
        """(step, flops per token): step(i) runs one optimizer step on batch i and returns the loss."""
        model = _hf_gpt2(train=True) if name == "HF" else GPT(GPTConfig(**SHAPE, out_vocab=out_vocab)).train()
        data = ids if not out_vocab else [kept[b % out_vocab] for b in ids]
        if out_vocab:
            model.kept_ids.copy_(kept)
        batches = [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in data]  # inputs, next-token targets
        # the same AdamW settings for both (train.py's defaults): configure_optimizers only reads .parameters()
        opt = GPT.configure_optimizers(model, 0.1, 6e-4, (0.9, 0.95), "cpu")
        fwd = torch.compile(model) if compile else model

        def step(i):
            x, y = batches[i % len(batches)]
            with autocast("cpu", dtype):
                # HF shifts the labels itself; ours takes the targets, and fuses the output layer with the loss
                loss = fwd(input_ids=x, labels=x).loss if name == "HF" else fwd(x, y, return_logits=False)[1]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()
        # HF's GPT-2 has the same dims, so the same FLOPs as ours (its 50,257 vs our 50,304 padded rows: 0.1%)
        return step, GPT(GPTConfig(**SHAPE, out_vocab=out_vocab)).estimate_flops_per_token(T)

    runs = [("ours", auto, False, 0), ("HF", auto, False, 0), ("ours", "float32", False, 0)]
    runs += [("ours", auto, True, 0)] if not args.no_compile else []
    runs += [("ours", auto, False, args.out_vocab)] if args.out_vocab else []
    variants = {}  # label -> (dtype, step, flops, first-step seconds)
    for name, dtype, compile, out_vocab in runs:
        label = f"{name} {dtype}{', compile' if compile else ''}{f', out_vocab={out_vocab}' if out_vocab else ''}"
        step, flops = make_step(name, dtype, compile, out_vocab)
        t0 = time.perf_counter()
        step(0)  # compiles when compile=True
        first = time.perf_counter() - t0
        for i in range(1, args.warmup):
            step(i)
        variants[label] = (dtype, step, flops, first)
    # timed steps by turns: round i runs every variant's step i, so a slower stretch of the shared VM (a neighbour's
    # job, a slower hour) falls on all variants alike instead of on whichever ran then
    dts, losses = {label: [] for label in variants}, {label: [] for label in variants}
    for i in range(args.steps):
        for label, (_, step, _, _) in variants.items():
            t0 = time.perf_counter()
            losses[label].append(step(i))
            dts[label].append(time.perf_counter() - t0)
    results = []
    for label, (dtype, _, flops, first) in variants.items():
        med, best = sorted(dts[label])[len(dts[label]) // 2], min(dts[label])
        results.append((label, dtype, B * T / med, flops))
        print(f"{label:34s}: {B * T / med:6,.0f} tokens/s ({B * T / best:,.0f} best) | {1000 * med:5.0f} ms/step "
              f"| first step {first:4.1f} s" + (f" (compile ~{first - med:.0f} s)" if "compile" in label else "")
              + f" | loss {losses[label][0]:.3f} -> {losses[label][-1]:.3f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    peak = {d: max(peak[d], measure_peak_flops("cpu", d)) for d in dtypes}
    print("measured peak " + ", ".join(f"{d} {p / 1e12:.2f} TFLOP/s" for d, p in peak.items()))
    for label, dtype, tps, flops in results:
        print(f"{label:34s}: {tps:6,.0f} tokens/s, {flops / 1e6:.1f} MFLOP/token, MFU "
              f"{100 * tps * flops / peak[dtype]:4.1f}% of the {dtype} peak")
    tps = {label: t for label, _, t, _ in results}
    print(f"ours / HF ({auto}): {tps[f'ours {auto}'] / tps[f'HF {auto}']:.2f}x")
    if args.profile:  # one bf16 step of ours, after warm-up
        step, _ = make_step("ours", auto)
        step(0), step(1)
        print(f"\nprofile: ours, {auto}, one training step")
        _profile(lambda: step(2))


def roofline(model, n_tokens, dtype):
    """(matmul FLOP of a training step, seconds they take at their own shapes): every Linear of model (and the
    out_vocab head's K+1 rows) as the three matmuls of a step, forward x W^T, backward dY W and dY^T x, each timed
    alone with torch.mm in dtype (the best of 5). A K = 128 matmul need not reach a 2048^3 matmul's rate."""
    import torch
    shapes = [(n_tokens, m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)
              and m is not model.lm_head]
    shapes.append((n_tokens, model.config.n_embd, model.config.out_vocab + 1 if model.config.out_vocab
                   else model.config.padded_vocab))
    flops, seconds, dt = 0.0, 0.0, getattr(torch, dtype)
    for m, k, n in shapes:
        for a, b in (((m, k), (k, n)), ((m, n), (n, k)), ((n, m), (m, k))):  # forward, the two backward products
            x, w = torch.randn(*a, dtype=dt), torch.randn(*b, dtype=dt)
            x @ w  # warm-up
            best = min(_timed(lambda: x @ w) for _ in range(5))
            flops, seconds = flops + 2 * a[0] * a[1] * b[1], seconds + best
    return flops, seconds


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_quickstart(args):
    """The quick start's training step (config/tinystories_cpu.py: its shape, batch, dropout, optimizer, and the
    out_vocab head over the ids of its prepared train.bin) on real train windows, in the auto dtype and in fp32, with
    its dropout and without: median ms/step of args.steps and the share of the measured matmul peak of that dtype,
    and the step's matmuls timed alone at their own shapes (the roofline of this step: roofline()). --profile: then
    one step's ops by self time. Then the final evaluation's cost: evaluate() over all of its val.bin.
    Raises SystemExit: the config's bins are not prepared (the prepare command to run)."""
    torch = _setup(args)
    import numpy as np
    from evaluate import evaluate
    from device import autocast, measure_peak_flops, resolve_dtype
    from model import GPT, GPTConfig
    from tokenizer import load_tokenizer
    cfg = {"optimizer": "adamw", "eval_tokens": 0}  # train.py's defaults of the keys the config may leave out
    exec((REPO / "config/tinystories_cpu.py").read_text(), cfg)  # a config file is plain assignments
    data = REPO / "data" / cfg["dataset"] / cfg["tokenizer"]
    if not (data / "train.bin").exists():
        raise SystemExit(f"no {data}/train.bin: run `python prepare.py --source=data/tinystories_excerpt "
                         f"--tokenizer={cfg['tokenizer']}` first")
    tok = load_tokenizer(cfg["tokenizer"], str(data))
    train = torch.from_numpy(np.fromfile(data / "train.bin", dtype=np.uint16).astype(np.int64))
    model_cfg = {k: cfg[k] for k in GPTConfig.__dataclass_fields__ if k in cfg and k not in ("vocab_size",)}
    B, T, kept = cfg["batch_size"], cfg["block_size"], train.unique()  # the ids out_vocab_from_data keeps
    g = torch.Generator().manual_seed(1337)
    batches = [torch.stack([train[i:i + T + 1] for i in torch.randint(0, len(train) - T - 1, (B,), generator=g)])
               for _ in range(4)]  # (B, T + 1) windows of train.bin, as train.py draws them
    auto = resolve_dtype("auto", "cpu")
    print(f"quick-start shape: {cfg['n_layer']} x {cfg['n_embd']}, batch {B} x {T}, tokenizer {cfg['tokenizer']} "
          f"({tok.vocab_size:,} ids), out_vocab {len(kept):,}, optimizer {cfg['optimizer']}, dropout {cfg['dropout']}")
    for dtype in dict.fromkeys((auto, "float32")):
        peak = max(measure_peak_flops("cpu", dtype) for _ in range(3))
        for dropout in dict.fromkeys((cfg["dropout"], 0.0)):
            model = GPT(GPTConfig(**{**model_cfg, "dropout": dropout}, vocab_size=tok.vocab_size,
                                  out_vocab=len(kept))).train()
            model.kept_ids.copy_(kept)
            opts = model.configure_optimizers(cfg["weight_decay"], cfg["learning_rate"], (0.9, 0.95), "cpu",
                                              cfg["optimizer"])
            opts = opts if isinstance(opts, list) else [opts]
            dts = []
            for i in range(args.warmup + args.steps):
                t0 = time.perf_counter()
                x = batches[i % len(batches)]
                with autocast("cpu", dtype):
                    loss = model(x[:, :-1], x[:, 1:], return_logits=False)[1]
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                for opt in opts:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                dts.append(time.perf_counter() - t0)
            med = sorted(dts[args.warmup:])[args.steps // 2]
            flops = model.estimate_flops_per_token(T) * B * T
            print(f"{dtype:9s} dropout {dropout}: {1000 * med:6.0f} ms/step (best {1000 * min(dts[args.warmup:]):.0f})"
                  f", {B * T / med:7,.0f} tokens/s, {100 * flops / med / peak:4.1f}% of the measured {dtype} peak "
                  f"{peak / 1e12:.2f} TFLOP/s", flush=True)
        mm_flops, mm_s = roofline(model, B * T, dtype)
        rate = mm_flops / mm_s  # FLOP/s of the step's own matmuls, each alone: this step's roofline
        print(f"{dtype:9s} the step's matmuls alone at their shapes: {1000 * mm_s:.0f} ms for {mm_flops / 1e9:.1f} "
              f"GFLOP, {rate / 1e12:.3f} TFLOP/s = {100 * rate / peak:.1f}% of the peak (the roofline); the last step "
              f"above reached {100 * flops / med / rate:.1f}% of it", flush=True)
        if args.profile:
            def step():
                with autocast("cpu", dtype):
                    model(x[:, :-1], x[:, 1:], return_logits=False)[1].backward()
                for opt in opts:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            _profile(step, row_limit=30)
    model.eval()
    t0 = time.perf_counter()
    out = evaluate(model, str(data / "val.bin"), tok, B, autocast("cpu", auto), "cpu")
    dt = time.perf_counter() - t0
    print(f"final evaluation ({auto}): all {out['tokens']:,} val tokens in {dt:.1f} s ({out['tokens'] / dt:,.0f} "
          f"tokens/s); train.py's adds eval_tokens={cfg['eval_tokens']:,} train tokens: ~"
          f"{dt * (1 + cfg['eval_tokens'] / out['tokens']):.1f} s in all")


def bench_memory(args):
    """Peak resident memory of training the 33M shape (batch args.batch_size x 512, dtype auto) with and without
    grad_checkpoint: each in a fresh process (ru_maxrss is per process), after 3 steps, minus the memory before the
    model existed."""
    import subprocess
    import sys
    if args.child is not None:
        import resource
        torch = _setup(args)
        from device import autocast, resolve_dtype
        from model import GPT, GPTConfig
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        model = GPT(GPTConfig(**SHAPE, grad_checkpoint=bool(args.child))).train()
        opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu")
        x = torch.randint(0, SHAPE["vocab_size"], (args.batch_size, SHAPE["block_size"] + 1))
        for _ in range(3):
            with autocast("cpu", resolve_dtype("auto", "cpu")):
                loss = model(x[:, :-1], x[:, 1:], return_logits=False)[1]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        print(f"RSS {(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024:.0f}")
        return
    for gc in (0, 1):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--mode=memory", f"--child={gc}",
                              f"--batch_size={args.batch_size}"], capture_output=True, text=True, check=True)
        mb = float(out.stdout.split("RSS ")[-1])
        print(f"33M shape, batch {args.batch_size} x 512, grad_checkpoint={bool(gc)}: peak {mb:,.0f} MB above the "
              f"empty process, 3 steps in {time.perf_counter() - t0:.1f} s (process included)")


MODES = {"prepare": bench_prepare, "sample": bench_sample, "train": bench_train, "quickstart": bench_quickstart,
         "memory": bench_memory}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", required=True, choices=sorted(MODES))
    ap.add_argument("--mb", type=int, default=40, help="prepare: MB of story text to build")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is printed")
    ap.add_argument("--no_malloc_tweak", action="store_true", help="sample/train: glibc's malloc defaults, i.e. "
                    "without speedups.keep_freed_memory() (what a plain HF script gets)")
    ap.add_argument("--profile", action="store_true", help="sample/train: then print torch.profiler's top ops")
    ap.add_argument("--tokens", type=int, default=500, help="sample: new tokens per generate call")
    ap.add_argument("--batches", default="1,8", help="sample: batch sizes")
    ap.add_argument("--uncached", default="float32:1", help="sample: dtype:batch pairs that also run without the "
                    "KV cache (once: minutes per run), e.g. float32:1,bfloat16:1")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="sample: autocast dtypes")
    ap.add_argument("--steps", type=int, default=8, help="train: timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="train: untimed steps first")
    ap.add_argument("--batch_size", type=int, default=8, help="train: sequences of 512 tokens per step")
    ap.add_argument("--no_compile", action="store_true", help="train: skip the torch.compile variant")
    ap.add_argument("--out_vocab", type=int, default=0, help="train: also GPTConfig.out_vocab=K on ids drawn from K "
                    "(0 = skip)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # memory: one measuring process
    args = ap.parse_args()
    MODES[args.mode](args)
