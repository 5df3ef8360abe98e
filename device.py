"""
Device and precision, the same for train.py, sample.py and bench.py: the device a run uses, the dtype it computes in,
autocast, the peak FLOP/s that MFU is measured against, and agreeing on a number across DDP ranks.
"""
import time
from contextlib import nullcontext

import torch

from speedups import cpu_has_bf16


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


def agree(x, largest=False):
    """x as every DDP rank sees it: the smallest (or the largest) over ranks; x itself without DDP. A collective:
    every rank must call it at the same point."""
    if not torch.distributed.is_initialized():
        return x
    t = torch.tensor([x], dtype=torch.float64, device="cuda" if torch.distributed.get_backend() == "nccl" else "cpu")
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX if largest else torch.distributed.ReduceOp.MIN)
    return t.item()
