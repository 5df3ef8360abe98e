"""
CPU speed machinery for model.py, kept apart from the transformer's definition (as nanochat keeps fp8 in its own
file): neither changes what the model computes, only how fast.

  LinearCrossEntropy  the output layer and its cross-entropy loss in one autograd op (no logits kept)
  DecodeLinear        nn.Linear with a fast path for decoding a few rows on a CPU (decode_linears swaps it in)
  Muon                torch.optim.Muon with its Newton-Schulz iteration in fp32 where bf16 is emulated
  keep_freed_memory   glibc malloc settings that stop a CPU step from page-faulting its large tensors anew

Each is tested against the plain PyTorch ops it replaces (test_smoke.py); the measurements behind them are in
RECORDS.md.
"""
import ctypes
import math
from contextlib import contextmanager

import torch
import torch.nn as nn


class LinearCrossEntropy(torch.autograd.Function):
    """The output layer and its loss in one op: mean cross-entropy in nats of the logits x W^T (N, Vp) over their
    first V columns (the rest pad the vocabulary: no probability, zero gradient) against targets (N,), skipping -1.
    Equals F.cross_entropy(F.linear(x, W)[:, :V].float(), targets, ignore_index=-1). x (N, C), W (Vp, C), cast to
    the autocast dtype as F.linear would be. The log-softmax runs in fp32 a chunk of rows at a time; when a gradient
    is needed, forward turns the same log-probs into d loss / d logits = (softmax - onehot) / n, written over the
    logits (never returned), and backward is two matmuls scaled by the incoming gradient. Against lm_head +
    F.cross_entropy(logits.float()) that saves a softmax pass, the fp32 logits and gradient, and an (N, Vp)
    multiply (RECORDS.md has the measured step times). The idea of Liger Kernel's fused linear cross-entropy
    (Hsu et al. 2024, arXiv 2410.10989), chunked over rows only."""

    @staticmethod
    def forward(ctx, x, weight, targets, V, offset=None):
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
        logits = x @ weight.t()  # (N, Vp)
        valid, t = targets != -1, targets.clamp(min=0)
        n = valid.sum().clamp(min=1)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        # rows per chunk: on a CPU few, so a chunk's fp32 log-probs stay in cache (32 x 50k x 4 B = 6.4 MB; 8-32 rows
        # measured alike, 256 slower); on a GPU many, as each chunk costs a handful of kernel launches
        chunk = 32 if x.device.type == "cpu" else 2048
        nll = torch.zeros((), dtype=torch.float32, device=x.device)
        for i in range(0, logits.size(0), chunk):
            s = slice(i, i + chunk)
            z = logits[s, :V] if offset is None else logits[s, :V].float() + offset  # offset: in fp32, per chunk
            logp = torch.log_softmax(z, dim=-1, dtype=torch.float32)  # (chunk, V)
            nll -= (logp.gather(1, t[s, None])[:, 0] * valid[s]).sum()
            if need_grad:  # d nll / d logits = softmax - onehot; a skipped target's row is 0
                p = logp.exp_()
                p[torch.arange(p.size(0), device=p.device), t[s]] -= 1.0
                torch.mul(p, (valid[s] / n)[:, None], out=logits[s, :V])
        if need_grad:
            logits[:, V:] = 0.0
            ctx.save_for_backward(x, weight, logits)  # logits now hold d loss / d logits
        return nll / n

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, grad = ctx.saved_tensors  # (N, C), (Vp, C), (N, Vp)
        return (grad @ weight) * grad_out, (grad.t() @ x) * grad_out, None, None, None  # (N, C), (Vp, C)


class DecodeLinear(nn.Linear):
    """nn.Linear with a CPU decoding fast path. Decoding feeds a few rows (B sequences x 1 token) through every
    weight matrix, so it is bound by reading the weights. For x (rows, in) in fp32 MKL computes x W^T with one row as
    a matrix-vector product on one core, but W x^T (two or more columns) as a matrix product on all cores, about 2x
    the batch-1 tokens/s of generate (RECORDS.md). So without autograd or autocast, at most 8 rows (the gain shrinks
    as rows grow) go through W x^T, one row padded to two; anything else is nn.Linear's forward."""

    def forward(self, x):
        rows = x.numel() // x.size(-1)
        if (rows > 8 or x.device.type != "cpu" or x.dtype != torch.float32 or self.weight.dtype != torch.float32
                or torch.is_grad_enabled() or torch.is_autocast_enabled("cpu")):
            return super().forward(x)
        x2 = x.reshape(rows, -1)                                     # (rows, in)
        x2 = torch.cat([x2, x2]) if rows == 1 else x2                # a one-column product takes the one-core path
        y = torch.mm(self.weight, x2.t())[:, :rows].t()              # (out, rows) -> (rows, out)
        y = y if self.bias is None else y + self.bias
        return y.reshape(*x.shape[:-1], -1).contiguous()             # (..., out)


@contextmanager
def decode_linears(model):
    """Within the block, every plain nn.Linear of this model instance is a DecodeLinear (sampling on a CPU: see
    DecodeLinear); afterwards each is an nn.Linear again. Only the class of each module changes (a subclass that adds
    no state), so parameters, ties and hooks stay as they are; LoRALinear and other modules are left alone."""
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    for m in linears:
        m.__class__ = DecodeLinear
    try:
        yield model
    finally:
        for m in linears:
            m.__class__ = nn.Linear


def cpu_has_bf16() -> bool:
    """True where the CPU does bf16 matmuls natively (AVX512-BF16 or AMX), so bf16 autocast is a speed-up there."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Muon(torch.optim.Muon):
    """torch.optim.Muon (Jordan et al. 2024, kellerjordan.github.io/posts/muon) with its Newton-Schulz iteration in
    ns_dtype. torch's casts each update to bf16, the right choice on GPUs and on CPUs with native bf16; a CPU without
    it (the AVX2 class) emulates bf16 matmuls at ~25x the time of fp32 ones, which made Muon 71% of the quick
    start's step there (RECORDS.md). ns_dtype=None picks bf16 where it is native (a GPU, AVX512-BF16, AMX) and fp32
    elsewhere. The step is torch's, op for op: with ns_dtype=torch.bfloat16 it gives the same parameters (tested).
    The state (momentum_buffer) is torch's too, so checkpoints load in either."""

    def __init__(self, params, ns_dtype=None, **kwargs):
        super().__init__(params, **kwargs)
        device = self.param_groups[0]["params"][0].device.type
        self.ns_dtype = ns_dtype or (torch.bfloat16 if device != "cpu" or cpu_has_bf16() else torch.float32)

    def orthogonalize(self, g, group):
        """The quintic Newton-Schulz iteration of torch.optim.Muon on g (k, m, n), k matrices of one shape at once, in
        ns_dtype: ~U V^T of each g[i]'s SVD. One batched matmul in place of k small ones: a small model's CPU step is
        bound by per-op overhead, not FLOPs (RECORDS.md); each matrix's arithmetic is the same."""
        a, b, c = group["ns_coefficients"]
        tall = g.size(1) > g.size(2)
        x = g.to(self.ns_dtype).mT if tall else g.to(self.ns_dtype)  # (k, min, max): x x^T is the small Gram matrix
        x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=group["eps"])  # spectral norm <= Frobenius norm <= 1
        for _ in range(group["ns_steps"]):
            gram = x @ x.mT  # (k, min, min)
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        return x.mT if tall else x

    @torch.no_grad()
    def step(self, closure=None):
        """One step of every parameter that has a gradient: Nesterov momentum, orthogonalize (the parameters of one
        shape together), decoupled weight decay, then the update scaled per torch's adjust_lr_fn (Moonshot's
        0.2 sqrt(max(A, B)), or Jordan's sqrt(max(1, A / B)))."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, by_shape = group["lr"], group["momentum"], {}
            for p in (p for p in group["params"] if p.grad is not None):
                by_shape.setdefault(p.shape, []).append(p)
            for (A, B), ps in by_shape.items():
                bufs = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad)) for p in ps]
                for p, buf in zip(ps, bufs):
                    buf.lerp_(p.grad, 1 - momentum)
                updates = self.orthogonalize(torch.stack([p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                                                          for p, buf in zip(ps, bufs)]), group)  # (k, A, B)
                scale = 0.2 * math.sqrt(max(A, B)) if group["adjust_lr_fn"] == "match_rms_adamw" else \
                    math.sqrt(max(1, A / B))
                for p, update in zip(ps, updates):
                    p.mul_(1 - lr * group["weight_decay"])
                    p.add_(update, alpha=-lr * scale)
        return loss


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
