"""
One transformer for nanostories: a decoder-only GPT, or a byte-level encoder-decoder in the style of ByT5.

Every choice is a field of GPTConfig, decided once in __init__ (a disabled feature creates no parameters):
  positions     learned absolute `wpe` (GPT-2) or rotary embeddings, RoPE (Su et al. 2021, arXiv 2104.09864)
  tie_weights   lm_head.weight is wte.weight (Press & Wolf 2017, arXiv 1608.05859)
  norm          LayerNorm with optional bias (GPT-2) or RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467)
  mlp           GELU 4x (GPT-2), or gated SwiGLU / GEGLU (Shazeer 2020, arXiv 2002.05202; LLaMA's hidden size)
  qk_norm       queries and keys RMS-normalised per head, no gains (Henry et al. 2020, arXiv 2010.04245; Qwen3)
  x0_mix        per-layer learned scalars mixing the residual stream with the embedded input (nanochat)
  arch          "decoder" (GPT-2) or "encoder_decoder" (T5 / ByT5, Xue et al. 2021, arXiv 2105.13626): an encoder
                stack of the same Block with bidirectional attention, decoder blocks that add cross-attention
References: GPT-2 (Radford et al. 2019), nanoGPT (github.com/karpathy/nanoGPT), PaLM appendix B for the FLOP count
(Chowdhery et al. 2022, arXiv 2204.02311). Shapes: B batch, T decoder time, S encoder time, C n_embd, nh heads,
hs head size, V vocab. Units: losses are in nats per predicted token.
"""
import inspect
import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from speedups import LinearCrossEntropy, Muon


# the MLP's activation and whether it is gated (a gate half times an up half of c_fc), per GPTConfig.mlp: a new entry
# says both, so adding e.g. ReLU^2 does not make a gated, 8/3-wide MLP by accident
MLPS = {"gelu": (F.gelu, False), "swiglu": (F.silu, True), "geglu": (F.gelu, True),
        "geglu_tanh": (partial(F.gelu, approximate="tanh"), True)}  # T5 v1.1 / ByT5's "gated-gelu"


@dataclass
class GPTConfig:
    block_size: int = 256        # longest sequence in tokens, per stack (decoder; encoder too in encoder_decoder)
    vocab_size: int = 50257      # the tokenizer's ids; embeddings are padded to a multiple of 64 (see padded_vocab)
    n_layer: int = 6             # decoder layers
    n_head: int = 6
    n_kv_head: int = 0           # key/value heads, each shared by n_head / n_kv_head query heads (grouped-query
    #                              attention, Ainslie et al. 2023, arXiv 2305.13245): a smaller KV cache; 0 = n_head
    n_embd: int = 384
    dropout: float = 0.0         # on embeddings and residual branches (not attention weights: see Attention)
    bias: bool = True            # biases in Linear and LayerNorm layers (GPT-2: True; LLaMA: False)
    rope: bool = False           # rotary position embeddings instead of the learned wpe table
    rope_theta: float = 10000.0  # RoPE base wavelength (the paper's 10000)
    rel_buckets: int = 0         # > 0: T5's relative position buckets instead (32 in T5): a learned bias per head and
    rel_max_distance: int = 128  # bucket, one table per stack; distances past rel_max_distance share the last bucket
    tie_weights: bool = True     # share wte and lm_head (saves V*C parameters)
    norm: str = "layernorm"      # "layernorm" | "rmsnorm"
    mlp: str = "gelu"            # a row of MLPS: "gelu" (4*C hidden) | gated, 8/3*C hidden rounded to 64: "swiglu",
    #                              "geglu", "geglu_tanh" (T5 v1.1 / ByT5: the tanh form of GELU)
    mlp_hidden: int = 0          # MLP hidden width; 0 = the default of the chosen mlp
    arch: str = "decoder"        # "decoder" | "encoder_decoder"
    n_enc_layer: int = 0         # encoder layers (encoder_decoder only; ByT5 uses 3x the decoder depth)
    tgt_len: int = 128           # encoder_decoder: decoder positions per continuation chunk (training and sampling)
    dec_prefix: int = 0          # encoder_decoder: the decoder re-reads the source's last dec_prefix ids (not scored)
    pad_id: int = -1             # encoder inputs equal to this id are masked out (encoder_decoder; -1 = none)
    grad_checkpoint: bool = False  # recompute each block in backward: less activation memory, ~30% more compute
    qk_norm: bool = False        # RMS-normalise the self-attention's queries and keys per head (no gains)
    x0_mix: bool = False         # before decoder block i: x = resid_lambdas[i] * x + x0_lambdas[i] * x0, x0 the
    #                              embedded input (nanochat's per-layer scalars; modded-nanogpt's x0 skip)
    out_vocab: int = 0           # 0: lm_head scores every id. K > 0: it scores the K ids in kept_ids (those seen in
    #                              training); every other id's logit is the dot product with one shared row, `other`

    def __post_init__(self):
        assert self.norm in ("layernorm", "rmsnorm"), f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}"
        assert self.mlp in MLPS, f"mlp must be one of {'/'.join(MLPS)}, got {self.mlp!r}"
        assert self.arch in ("decoder", "encoder_decoder"), f"arch must be decoder/encoder_decoder, got {self.arch!r}"
        assert self.arch == "decoder" or self.n_enc_layer > 0, "encoder_decoder needs n_enc_layer > 0"
        assert self.n_embd % self.n_head == 0, f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}"
        assert self.n_head % (self.n_kv_head or self.n_head) == 0, f"n_head={self.n_head} must be a multiple of " \
                                                                   f"n_kv_head={self.n_kv_head}"
        assert not self.rope or (self.n_embd // self.n_head) % 2 == 0, "RoPE needs an even head size"
        assert not (self.rope and self.rel_buckets), "positions are rope or rel_buckets (T5), not both"
        assert self.rel_buckets in (0,) or self.rel_buckets >= 4, f"rel_buckets={self.rel_buckets}: 0 (off) or >= 4"
        assert 0 <= self.dec_prefix < self.tgt_len, f"dec_prefix={self.dec_prefix} must be in [0, tgt_len)"

    @property
    def padded_vocab(self) -> int:
        # 50257 -> 50304: matmuls over a multiple of 64 run faster on GPUs; the extra logits are cut off in forward
        return (self.vocab_size + 63) // 64 * 64


def make_norm(config):
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=1e-6)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


def rope_cache(config):
    """cos, sin tables of shape (block_size, hs/2) for rotary embeddings (Su et al. 2021, section 3.4.2)."""
    hs = config.n_embd // config.n_head
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hs, 2).float() / hs))  # (hs/2,)
    angles = torch.outer(torch.arange(config.block_size).float(), inv_freq)        # (block_size, hs/2)
    return angles.cos(), angles.sin()


def relative_buckets(rel, bidirectional: bool, num_buckets: int, max_distance: int):
    """T5's bucket of each relative position rel = key position - query position (a long tensor; Raffel et al. 2020,
    arXiv 1910.10683, section 2.1, after Mesh TensorFlow): bidirectional (an encoder) gives half the buckets to keys
    after the query; a causal stack sees only keys at or before it. Of the rest, half are exact distances 0, 1, ...;
    the others grow logarithmically up to max_distance, and every longer distance shares the last one."""
    n, bucket = num_buckets, torch.zeros_like(rel)
    if bidirectional:
        n //= 2
        bucket = (rel > 0).long() * n
        rel = rel.abs()
    else:
        rel = (-rel).clamp(min=0)
    exact = n // 2
    far = exact + (torch.log(rel.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (n - exact)).long()
    return bucket + torch.where(rel < exact, rel, far.clamp(max=n - 1))


def apply_rope(x, cos, sin):
    """Rotate (B, nh, T, hs) queries or keys by their positions; cos, sin: (T, hs/2). GPT-NeoX half-split layout."""
    x1, x2 = x.float().chunk(2, dim=-1)  # each (B, nh, T, hs/2); rotate in fp32, then back to x's dtype
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class Attention(nn.Module):
    """Multi-head attention through F.scaled_dot_product_attention, with two switches:
    causal (decoder self-attention) and cross (queries from x, keys/values from the encoder output)."""

    def __init__(self, config, causal: bool, cross: bool = False):
        super().__init__()
        self.n_head, self.causal, self.cross, self.qk_norm = config.n_head, causal, cross, config.qk_norm
        self.n_kv = config.n_kv_head or config.n_head
        C, kv = config.n_embd, (config.n_kv_head or config.n_head) * (config.n_embd // config.n_head)  # kv: k's width
        if cross:
            self.c_q = nn.Linear(C, C, bias=config.bias)
            self.c_kv = nn.Linear(C, 2 * kv, bias=config.bias)
        else:
            self.c_attn = nn.Linear(C, C + 2 * kv, bias=config.bias)  # q, k, v fused in one matmul
        self.c_proj = nn.Linear(C, C, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rope=None, mem=None, mem_mask=None, cache=None, pos=0):
        """x (B, T, C) -> (B, T, C). rope: (cos, sin) of this call's positions; mem (B, S, C) the encoder output.
        mem_mask: the attention mask, True where a key may be attended ((B, 1, 1, S): padding) or a float bias added
        to the scores ((1 or B, nh, T, S): T5's relative positions, -inf where masked); None: all keys, or causal.
        cache: this layer's dict of keys/values for generate; pos: absolute position of x[:, 0]."""
        B, T, C = x.size()
        hs = C // self.n_head
        heads = lambda t: t.view(B, t.size(1), -1, hs).transpose(1, 2)  # (B, L, n * hs) -> (B, n, L, hs)
        if self.cross:
            q = heads(self.c_q(x))
            if cache is not None and "k" in cache:  # the encoder output does not change while decoding
                k, v = cache["k"], cache["v"]
            else:
                k, v = map(heads, self.c_kv(mem).split(self.n_kv * hs, dim=2))
                if cache is not None:
                    cache["k"], cache["v"] = k, v
        else:
            q, k, v = map(heads, self.c_attn(x).split([C, self.n_kv * hs, self.n_kv * hs], dim=2))
            if self.qk_norm:  # before the rotation, as Qwen3: the same as after it, since a rotation keeps the norm
                q, k = F.rms_norm(q, (hs,), eps=1e-6), F.rms_norm(k, (hs,), eps=1e-6)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
            if cache is not None:  # write this call's keys/values at pos.., attend over everything cached so far
                assert pos == 0 or T == 1, "the KV cache takes a prompt at pos 0, then one token per step"
                if "k" not in cache:  # (B, n_kv_head, block_size, hs): grouped-query attention shrinks it
                    cache["k"] = k.new_zeros(B, self.n_kv, cache["size"], hs)
                    cache["v"] = torch.zeros_like(cache["k"])
                cache["k"][:, :, pos:pos + T], cache["v"][:, :, pos:pos + T] = k, v
                k, v = cache["k"][:, :, :pos + T], cache["v"][:, :, :pos + T]
        # a single new token may see every cached key, so the causal mask is only needed when T > 1. No dropout on
        # the attention weights (unlike GPT-2): with it, SDPA leaves its fused CPU kernel for the math path, which
        # builds (B, nh, T, S) fp32 weights and a Bernoulli mask per layer; dropout stays on the residual branches
        if mem_mask is not None and mem_mask.is_floating_point():
            mem_mask = mem_mask.to(q.dtype)  # a bias: SDPA adds it in the dtype of the scores
        causal = self.causal and T > 1 and mem_mask is None  # a float mask carries its causal part itself
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mem_mask, is_causal=causal,
                                           enable_gqa=self.n_kv != self.n_head)  # each k/v head serves a group of q
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """GELU 4x (GPT-2) or a gated unit: SwiGLU uses SiLU, GEGLU GELU, on one of two halves of c_fc."""

    def __init__(self, config):
        super().__init__()
        self.act, gated = MLPS[config.mlp]
        # LLaMA keeps the gated MLP's parameter count at 4x by using 2/3 of 4*C, rounded up to a multiple of 64
        hidden = config.mlp_hidden or (4 * config.n_embd if not gated else (8 * config.n_embd // 3 + 63) // 64 * 64)
        self.gated = gated
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if gated else hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)                        # (B, T, hidden) or (B, T, 2*hidden) when gated
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """Pre-norm transformer block. causal=False gives an encoder block; cross=True adds cross-attention to the
    encoder output between self-attention and the MLP (a decoder block of the encoder-decoder)."""

    def __init__(self, config, causal: bool = True, cross: bool = False):
        super().__init__()
        self.ln_1, self.attn = make_norm(config), Attention(config, causal=causal)
        if cross:
            self.ln_x, self.xattn = make_norm(config), Attention(config, causal=False, cross=True)
        self.ln_2, self.mlp = make_norm(config), MLP(config)

    def forward(self, x, rope=None, self_mask=None, mem=None, mem_mask=None, cache=None, pos=0):
        """self_mask: the stack's self-attention mask (GPT._self_mask); mem_mask: the cross-attention's (padding)."""
        x = x + self.attn(self.ln_1(x), rope, None, self_mask, cache["self"] if cache else None, pos)
        if hasattr(self, "xattn"):
            x = x + self.xattn(self.ln_x(x), None, mem, mem_mask, cache["cross"] if cache else None)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The language model. Decoder: forward(idx, targets) as in GPT-2. Encoder-decoder: forward(idx, targets, src)
    with src the encoder's input and idx the decoder's input (targets shifted by one, as in T5)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        enc_dec = config.arch == "encoder_decoder"
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.padded_vocab, config.n_embd),  # shared by encoder and decoder, as in T5
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, causal=True, cross=enc_dec) for _ in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        if config.rope:  # rotations are computed, not learned: a buffer, left out of the state dict
            cos, sin = rope_cache(config)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        elif config.rel_buckets:  # T5: (buckets, nh) biases, added in every layer of the stack (as T5 shares them)
            self.transformer.rel_bias = nn.Embedding(config.rel_buckets, config.n_head)
        else:
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        if enc_dec:
            self.transformer.enc_h = nn.ModuleList([Block(config, causal=False) for _ in range(config.n_enc_layer)])
            self.transformer.enc_ln_f = make_norm(config)
            if config.rel_buckets:
                self.transformer.enc_rel_bias = nn.Embedding(config.rel_buckets, config.n_head)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab, bias=False)
        if config.tie_weights:
            self.transformer.wte.weight = self.lm_head.weight  # one tensor, two names
        if config.x0_mix:  # the stream as it is, and a little of the input back (nanochat's starting values)
            self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
            self.x0_lambdas = nn.Parameter(torch.full((config.n_layer,), 0.1))
        if config.out_vocab:
            # an id the training data never holds cannot be learned, yet a 50k-row softmax pays for every one of them
            # on every token (most of a small model's FLOPs). Score the K ids seen in training (train.py fills
            # kept_ids) plus one "other" row that every unseen id shares: still an exact distribution over all ids,
            # a full-vocab head whose unseen rows are copies of one row (forward, _fused_loss; export.py)
            self.register_buffer("kept_ids", torch.zeros(config.out_vocab, dtype=torch.long))
            self.other = nn.Parameter(torch.zeros(config.n_embd))  # the weight row of the shared "other" class
        self.apply(self._init_weights)
        # GPT-2: scale the init of the projections into the residual stream by 1/sqrt(2 * number of layers),
        # as each layer adds two of them to the stream
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * (config.n_layer + config.n_enc_layer)))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _embed(self, idx, pos=0):
        """idx (B, T) ids at positions pos..pos+T-1 -> embeddings (B, T, C) and the RoPE tables (or None)."""
        T = idx.size(1)
        assert pos + T <= self.config.block_size, f"{pos + T} tokens exceed block_size={self.config.block_size}"
        x, rope = self.transformer.wte(idx), None
        if self.config.rope:
            rope = (self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T])
        elif not self.config.rel_buckets:
            x = x + self.transformer.wpe(torch.arange(pos, pos + T, device=idx.device))
        return self.transformer.drop(x), rope

    def _self_mask(self, table, T, causal, pos=0, pad=None):
        """A stack's self-attention mask for queries at positions pos..pos+T-1 over keys 0..pos+T-1. Without relative
        buckets: None for the decoder (causal inside SDPA), pad (the encoder's padding mask (B, 1, 1, S), or None) for
        the encoder. With them: the bias (1 or B, nh, T, pos+T) of each query-key distance from table (the stack's
        rel_bias), -inf on padding keys and, if causal, on future ones; a cached step gets its positions' bias."""
        if not self.config.rel_buckets:
            return None if causal else pad
        keys = torch.arange(pos + T, device=table.weight.device)
        rel = keys[None, :] - keys[pos:, None]  # (T, pos+T): key position - query position
        bias = table(relative_buckets(rel, not causal, self.config.rel_buckets, self.config.rel_max_distance))
        bias = bias.permute(2, 0, 1)[None]  # (T, S, nh) -> (1, nh, T, S)
        bias = bias.masked_fill(rel > 0, float("-inf")) if causal else bias
        return bias if pad is None else bias.masked_fill(~pad, float("-inf"))

    def _run(self, blocks, x, rope, self_mask, mem=None, mem_mask=None, cache=None, pos=0, mix=None):
        """x (B, T, C) through blocks; mix: (resid_lambdas, x0_lambdas) of x0_mix (the decoder stack), or None."""
        x0 = x
        for i, block in enumerate(blocks):
            if mix is not None:
                x = mix[0][i] * x + mix[1][i] * x0
            if self.config.grad_checkpoint and self.training:  # keep only block inputs; recompute the rest
                x = checkpoint(block, x, rope, self_mask, mem, mem_mask, use_reentrant=False)
            else:
                x = block(x, rope, self_mask, mem, mem_mask, cache["layers"][i] if cache else None, pos)
        return x

    def encode(self, src):
        """Encoder of arch=encoder_decoder: src (B, S) ids -> states (B, S, C) and the key mask (B, 1, 1, S), True
        where src is not pad_id (None when nothing is padded, so attention keeps its fastest kernel)."""
        mask = (src != self.config.pad_id)[:, None, None, :]
        mask = None if bool(mask.all()) else mask
        x, rope = self._embed(src)
        self_mask = self._self_mask(getattr(self.transformer, "enc_rel_bias", None), src.size(1), False, pad=mask)
        return self.transformer.enc_ln_f(self._run(self.transformer.enc_h, x, rope, self_mask)), mask

    def forward(self, idx, targets=None, src=None, cache=None, return_logits=True):
        """idx (B, T) ids -> (logits (B, T, vocab_size), loss), nanoGPT's contract. loss: mean cross-entropy in nats
        per target over the targets (B, T) that are not -1 (objectives mark positions to skip, e.g. padding, with
        -1); None without targets. return_logits=False (what train.py and evaluation ask for) returns (None, loss):
        the output layer and the loss are then one fused op that never forms the logits (speedups.LinearCrossEntropy),
        the same loss up to float rounding. src (B, S): the encoder's input, required by arch=encoder_decoder and
        refused otherwise. cache (from new_cache): decoding state for generate; a prompt at position 0, then one
        token per call."""
        assert (src is not None) == (self.config.arch == "encoder_decoder"), "pass src exactly when encoder_decoder"
        pos = cache["pos"] if cache else 0
        mem = mem_mask = None
        if src is not None:
            if cache and "mem" in cache:
                mem, mem_mask = cache["mem"]
            else:
                mem, mem_mask = self.encode(src)
                if cache:
                    cache["mem"] = (mem, mem_mask)
        x, rope = self._embed(idx, pos)
        self_mask = self._self_mask(getattr(self.transformer, "rel_bias", None), idx.size(1), True, pos)
        mix = (self.resid_lambdas, self.x0_lambdas) if self.config.x0_mix else None
        x = self.transformer.ln_f(self._run(self.transformer.h, x, rope, self_mask, mem, mem_mask, cache, pos, mix))
        if cache:
            cache["pos"] = pos + idx.size(1)
        if targets is not None and not return_logits:
            return None, self._fused_loss(x, targets)
        if self.config.out_vocab:  # the full head it stands for (see _fused_loss): every unseen id's logit is other.x
            K = self.config.out_vocab
            z = F.linear(x, torch.cat([self.lm_head.weight[self.kept_ids], self.other[None]]))  # (B, T, K+1)
            full = z[..., K:].expand(*z.shape[:-1], self.config.vocab_size)
            logits = full.scatter(-1, self.kept_ids.expand(*z.shape[:-1], K), z[..., :K])  # kept ids: their own
        else:
            logits = self.lm_head(x)[..., :self.config.vocab_size]  # (B, T, V): padded ids are never sampled
        # the loss in fp32: a log-softmax over 50k logits in bf16 loses ~2 decimal digits
        loss = None if targets is None else F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                                            ignore_index=-1)
        return logits, loss

    def _fused_loss(self, x, targets):
        """The mean loss in nats of targets (B, T) after x (B, T, C), with no (B*T, V) tensor formed. With out_vocab
        the full-vocab head it stands for has row kept_ids[k] = lm_head.weight[kept_ids[k]] and every other id's row
        = `other`, so Z = sum_k exp(w_k.x) + (V - K) exp(other.x): from K+1 scores, the "other" column gets
        log(V - K) inside the softmax (its V - K copies in Z), and an unseen target then costs
        -log p(other row) + log(V - K) = logZ - other.x."""
        if not self.config.out_vocab:
            return LinearCrossEntropy.apply(x.flatten(0, 1), self.lm_head.weight, targets.flatten(),
                                            self.config.vocab_size)
        K, n_other = self.config.out_vocab, self.config.vocab_size - self.config.out_vocab
        weight = torch.cat([self.lm_head.weight[self.kept_ids], self.other[None]])  # (K+1, C)
        row = torch.full((self.config.vocab_size,), K, dtype=torch.long, device=x.device)
        row[self.kept_ids] = torch.arange(K, device=x.device)  # id -> its row; unseen ids -> K ("other")
        t = torch.where(targets >= 0, row[targets.clamp(min=0)], -1).flatten()
        offset = torch.zeros(K + 1, device=x.device)
        offset[K] = math.log(n_other) if n_other > 0 else -float("inf")  # no unseen id: "other" has no mass
        loss = LinearCrossEntropy.apply(x.flatten(0, 1), weight, t, K + 1, offset)
        return loss + math.log(max(n_other, 1)) * (t == K).sum() / (t >= 0).sum().clamp(min=1)

    def new_cache(self):
        """An empty decoding state for forward(..., cache=): per layer the self-attention keys/values (allocated on
        first use as (B, nh, block_size, hs)) and the cross-attention keys/values (computed once)."""
        layers = [{"self": {"size": self.config.block_size}, "cross": {}} for _ in self.transformer.h]
        return {"pos": 0, "layers": layers}

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_ids=(), banned_ids=(),
                 src=None, use_cache=True, repetition_penalty=1.0):
        """Sample max_new_tokens after idx (B, T) -> (B, T + n) ids, n <= max_new_tokens: it ends early once every
        row has produced one of stop_ids (a row that stopped repeats its stop id). temperature 0 (or top_k=1) is
        greedy; top_p keeps the smallest set of ids whose probability sums to top_p (nucleus sampling, Holtzman et
        al. 2019). banned_ids are never produced. repetition_penalty p (CTRL, Keskar et al. 2019, arXiv 1909.05858):
        the logit of every id already in the row is divided by p (multiplied, if negative); 1.0 = off.
        src (B, S): the encoder input of an encoder-decoder.
        With use_cache the prompt runs once and each step feeds one token, reusing the keys/values of the earlier
        ones. When the window would pass block_size it slides by half: the newest block_size//2 tokens are run again
        as a fresh prompt. The uncached path (use_cache=False) uses the same windows, so greedy outputs agree."""
        bs = self.config.block_size
        start = max(0, idx.size(1) - bs)  # the window is idx[:, start:]
        stopped = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        stop = torch.tensor(list(stop_ids), dtype=idx.dtype, device=idx.device)
        cache = None
        for _ in range(max_new_tokens):
            if idx.size(1) - start > bs:
                start, cache = idx.size(1) - bs // 2, None
            if not use_cache:
                logits, _ = self(idx[:, start:], src=src)
            elif cache is None:
                cache = self.new_cache()
                logits, _ = self(idx[:, start:], src=src, cache=cache)
            else:
                logits, _ = self(idx[:, -1:], src=src, cache=cache)
            logits = logits[:, -1, :].float()  # (B, V)
            if repetition_penalty != 1.0:
                seen = logits.gather(1, idx)  # (B, T): the logits of the ids the row already holds
                logits.scatter_(1, idx, torch.where(seen > 0, seen / repetition_penalty, seen * repetition_penalty))
            if len(banned_ids):
                logits[:, list(banned_ids)] = -float("inf")
            if temperature == 0 or top_k == 1:
                idx_next = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                probs = F.softmax(logits, dim=-1)
                if top_p is not None and top_p < 1.0:
                    p_sorted, order = probs.sort(dim=-1, descending=True)
                    drop = p_sorted.cumsum(-1) - p_sorted > top_p  # mass before this id already reaches top_p
                    probs = probs.scatter(1, order, p_sorted.masked_fill(drop, 0.0))
                idx_next = torch.multinomial(probs, num_samples=1)  # (B, 1)
            if len(stop):
                idx_next = torch.where(stopped[:, None], idx[:, -1:], idx_next)
                stopped |= torch.isin(idx_next[:, 0], stop)
            idx = torch.cat((idx, idx_next), dim=1)
            if len(stop) and bool(stopped.all()):
                break
        return idx

    def num_params(self, non_embedding=True) -> int:
        """Parameter count (tied weights counted once). non_embedding leaves out the position table wpe, and the
        token table wte when it is not tied to lm_head, since lookups cost no FLOPs (nanoGPT's convention)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        if non_embedding and not self.config.tie_weights:
            n -= self.transformer.wte.weight.numel()
        return n

    def estimate_flops_per_token(self, T=None) -> float:
        """Training FLOPs per token (forward + backward) at sequence length T: 6N + 12 * L * C * T, with N the
        non-embedding parameters and the second term attention's QK^T and AV (PaLM, arXiv 2204.02311, app. B)."""
        c = self.config
        T = T or c.block_size
        unscored = (c.padded_vocab - c.out_vocab - 1) * c.n_embd if c.out_vocab else 0  # lm_head rows not used
        return 6 * (self.num_params() - unscored) + 12 * (c.n_layer + c.n_enc_layer) * c.n_embd * T

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, optimizer="adamw"):
        """AdamW with weight decay on the matrices (>= 2-D: Linear weights, embeddings) and none on biases and norm
        gains; the fused kernel where this torch offers it for device_type ('cuda', 'cpu', ...). optimizer="muon":
        torch.optim.Muon (Jordan et al. 2024, kellerjordan.github.io/posts/muon) for the blocks' 2-D weights, with
        Moonshot's update scaling (Liu et al. 2025, arXiv 2502.16982) so it takes AdamW's learning rate and weight
        decay; AdamW for the embeddings, the output rows and the gains, as Muon is meant for hidden layers only.
        Returns one optimizer, or a list of two (Muon, AdamW) whose param_groups the schedule sets alike."""
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        hidden = {n for n, p in params.items()
                  if optimizer == "muon" and p.dim() == 2 and (".h." in n or ".enc_h." in n)}
        groups = [{"params": [p for n, p in params.items() if p.dim() >= 2 and n not in hidden],
                   "weight_decay": weight_decay},
                  {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0}]
        fused = "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in ("cuda", "cpu")
        adamw = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused or None)
        if not hidden:
            return adamw
        muon = Muon([params[n] for n in sorted(hidden)], lr=learning_rate, weight_decay=weight_decay,
                    adjust_lr_fn="match_rms_adamw")  # speedups.Muon: torch's, in fp32 where bf16 is emulated
        return [muon, adamw]
