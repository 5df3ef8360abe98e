r"""
LoRA (Hu et al. 2021, arXiv 2106.09685): freeze a trained model and learn a low-rank update of chosen Linears,

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T,   A (r, in) random, B (out, r) zeros (section 4.1)

so at init B A = 0 and the model is exactly the base; only A and B (r * (in + out) numbers per Linear) are trained.
A is Kaiming-uniform as in loralib and peft (the paper says Gaussian). Scaling by alpha / r means a new r needs no
new learning rate (section 4.1: alpha is set to the first r tried and not tuned).
Targets are module-name suffixes: "c_attn" (default; see apply_lora), "c_proj" (attention and MLP output; use
"attn.c_proj" or "mlp.c_proj" for one), "c_fc", and in the encoder-decoder's cross-attention "c_q" / "c_kv".

  python train.py config/lora_tinystories_dog.py                         # fine-tune: writes out-lora-dog/lora.pt
  python sample.py --out_dir=out-tinystories-cpu --lora=out-lora-dog/lora.pt  # base + adapter
  python lora.py --merge=out-lora-dog/lora.pt      # -> out-lora-dog/merged.pt, a plain checkpoint (no lora.py needed)
  python lora.py --export=out-lora-dog/lora.pt --to=DIR  # -> peft's adapter_config.json + adapter_model.safetensors
  python lora.py --count='(?i)\b(dogs?|pupp(y|ies))\b' --ckpt=out-tinystories-cpu/ckpt.pt --lora=out-lora-dog/lora.pt
"""
import hashlib
import math
import os
import re
import sys
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from checkpoint import load_model, read_checkpoint, save_checkpoint
from configurator import configure
from errors import one_line_errors
from evaluate import sample_stories
from hf import layout_of, module_pairs, split, write_dir
from tokenizer import tokenizer_of


class LoRALinear(nn.Module):
    """An nn.Linear plus a rank-r update. It adopts the Linear's own weight and bias Parameters (no copy), so its
    state-dict keys stay the base's (`...c_attn.weight`) and only `lora_A` / `lora_B` are new."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # frozen by mark_only_lora_trainable, never copied
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.lora_A = nn.Parameter(base.weight.new_empty(r, base.in_features))   # (r, in), same layout as peft
        self.lora_B = nn.Parameter(base.weight.new_zeros(base.out_features, r))  # (out, r): zero, so B A = 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's init, as in loralib and peft
        self.lora_dropout = nn.Dropout(dropout)
        self.merged = False  # True while B A is folded into weight (then forward is a plain Linear)

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)  # (.., in) -> (.., out)
        if self.merged:
            return y
        # two thin matmuls, (.., in) -> (.., r) -> (.., out): B A itself is never formed
        return y + F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self, sign=1):
        """Fold (sign=1) or take back out (sign=-1) the update: weight += sign * scaling * B A."""
        if self.merged != (sign == 1):
            self.weight += sign * self.scaling * (self.lora_B @ self.lora_A).to(self.weight.dtype)
            self.merged = sign == 1  # forward skips the LoRA path while merged, so nothing is counted twice


def apply_lora(model, r=8, alpha=16.0, dropout=0.05, targets=("c_attn",)):
    """Replace, on this instance, every nn.Linear whose dotted name ends with one of targets by a LoRALinear.
    NOTE: model.py fuses q, k and v into c_attn, so the default adapts the fused projection: one A shared by q, k
    and v, and B spans all three. That is the paper's parameter count for W_q + W_v (r * 4C per layer) but also
    adapts W_k; splitting c_attn in the model would cost more lines than it buys here. Returns model."""
    targets = targets.split(",") if isinstance(targets, str) else targets
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    matched = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, nn.Linear) and any(full == t or full.endswith("." + t) for t in targets):
                if uses[id(child.weight)] > 1:  # merging would also change the other user (tied wte/lm_head)
                    raise SystemExit(f"LoRA target {full} shares its weight with another module (tie_weights)")
                if full == "lm_head":  # the loss reads lm_head.weight itself (speedups.LinearCrossEntropy)
                    raise SystemExit("LoRA target lm_head: the output layer and the loss are one fused op that "
                                     "reads its weight directly; adapt c_attn, c_proj or c_fc instead")
                lora = LoRALinear(child, r, alpha, dropout).train(child.training)  # no dropout in an eval model
                setattr(parent, name, lora)
                matched.append(full)
    if not matched:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)} -
                       {"lm_head"})
        raise SystemExit(f"LoRA targets {list(targets)} match no nn.Linear; this model has: {', '.join(names)}")
    return model


def mark_only_lora_trainable(model):
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name


def lora_state_dict(model) -> dict:
    """The adapters only: every lora_A / lora_B tensor, keyed as in model.state_dict()."""
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}


def base_fingerprint(model) -> str:
    """sha256 (16 hex digits) of the base's weights (every state-dict tensor but the adapters, in fp32 and name
    order), with any merged adapter taken back out first: what an adapter records of the model it was trained on."""
    merged = [m for m in model.modules() if isinstance(m, LoRALinear) and m.merged]
    for m in merged:
        m.merge(-1)
    h = hashlib.sha256()
    for k, t in sorted(model.state_dict().items()):
        if "lora_" not in k and t.is_floating_point():
            h.update(k.encode())
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    for m in merged:
        m.merge(1)
    return h.hexdigest()[:16]


def save_lora(path, model, tokenizer, config, iter_num=0, best_val_loss=None, base="", extra=None):
    """Write the adapters of model (lora_state_dict) to path, with their settings, their base and its weights'
    fingerprint in the 'lora' entry that load_lora reads: the one writer of the adapter format (train.py and the
    tests call it)."""
    lora = next(m for m in model.modules() if isinstance(m, LoRALinear))
    targets = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]  # full names: exact on reload
    meta = {"r": lora.r, "alpha": lora.alpha, "dropout": lora.lora_dropout.p, "targets": ",".join(targets),
            "base": base, "base_sha": base_fingerprint(model)}
    save_checkpoint(path, model, tokenizer, config, None, iter_num, best_val_loss, state=lora_state_dict(model),
                    extra={**(extra or {}), "lora": meta})


def merge_lora(model, sign=1):
    """Fold every adapter into its base weight for inference (sign=-1: unmerge). Exact up to float rounding."""
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.merge(sign)
    return model


def load_lora(model, path, tokenizer=None) -> dict:
    """Apply the adapter at path (a lora.pt from train.py) to model, the base it was trained from; returns its
    checkpoint dict. SystemExit, naming both sides and the fix, when the adapter was trained on another base
    (architecture, tensor shapes, or tokenizer: a Tokenizer or a name, if given)."""
    ckpt = read_checkpoint(path, want="lora")
    fix = f"load it onto its base ({ckpt['lora']['base']}) or train an adapter for this model"
    name = getattr(tokenizer, "name", tokenizer)
    if tokenizer is not None and (name != ckpt["tokenizer"] or getattr(tokenizer, "definition", None) !=
                                  ckpt.get("tokenizer_json")):
        raise SystemExit(f"LoRA adapter {path} was trained for tokenizer '{ckpt['tokenizer']}' but this model uses "
                         f"'{name}'{' (another tokenizer.json)' if name == ckpt['tokenizer'] else ''}: {fix}")
    skip = ("dropout", "grad_checkpoint")  # training-time settings, free to differ from the base's
    mine, theirs = asdict(model.config), ckpt["model_args"]  # GPTConfig fields as plain dicts
    diff = [k for k in mine if k not in skip and mine[k] != theirs.get(k)]
    if diff:
        raise SystemExit(f"LoRA adapter {path} does not fit this model: adapter's base has "
                         f"{', '.join(f'{k}={theirs.get(k)}' for k in diff)}, this model "
                         f"{', '.join(f'{k}={mine[k]}' for k in diff)}: {fix}")
    s = ckpt["lora"]
    if s.get("base_sha") and s["base_sha"] != base_fingerprint(model):  # same shapes, other weights
        print(f"warning: LoRA adapter {path} was trained on other weights (base fingerprint {s['base_sha']}, this "
              f"model {base_fingerprint(model)}): its base was {s['base']}; the result is not what it learned",
              file=sys.stderr)
    if not any(isinstance(m, LoRALinear) for m in model.modules()):
        with torch.random.fork_rng():  # A's random init is overwritten: leave the caller's seeded RNG where it was
            apply_lora(model, s["r"], s["alpha"], s["dropout"], s["targets"].split(","))
    have, want = ckpt["model"], lora_state_dict(model)
    shape = lambda d, k: tuple(d[k].shape) if k in d else None
    bad = [f"{k}: adapter {shape(have, k)}, model {shape(want, k)}" for k in sorted(have.keys() | want.keys())
           if shape(have, k) != shape(want, k)]
    if bad:
        raise SystemExit(f"LoRA adapter {path} does not fit this model ({'; '.join(bad[:3])}): {fix}")
    model.load_state_dict(have, strict=False)  # strict=False: the base's own keys are not in the adapter
    return ckpt


def theme_share(model, tok, pattern, n=50, seed=1337, max_new_tokens=200):
    """(share, stories): n stories sampled from nothing (after EOT) at seed, at sample.py's settings, and the share
    that match the regex pattern (re.search). The same draws for base and adapted model: only the weights differ."""
    stories = sample_stories(model, tok, "", n, max_new_tokens, nullcontext(), seed=seed)
    return sum(bool(re.search(pattern, s)) for s in stories) / n, stories


def export_lora(adapter_path: str, to: str, base: str = ""):
    """A lora.py adapter (lora.pt) -> peft's adapter_config.json + adapter_model.safetensors, so that
    PeftModel.from_pretrained(<export_hf of its base>, to) computes base + adapter and merge_and_unload() our merge.
    peft's lora_A (r, in) and lora_B (out, r) are ours; GPT-2's Conv1D takes them as they are (fan_in_fan_out), a
    split module (LLaMA's q/k/v_proj, T5's q/k/v, gate/up_proj, wi_0/wi_1) gets our one A and its rows of B; T5's q
    rows of B take the 1/sqrt(head size) its q carries. base: where the base moved."""
    import peft
    from safetensors.torch import save_file
    adapter = read_checkpoint(adapter_path, want="lora")  # SystemExit, saying what the file is, for anything else
    model, ckpt = load_model(base or adapter["lora"]["base"])
    c, s = model.config, adapter["lora"]
    layout, hs = layout_of(c), c.n_embd // c.n_head
    load_lora(model, adapter_path, tokenizer_of(ckpt))
    pairs = {ours: (names, kind) for ours, names, kind in module_pairs(layout, c)}
    tensors, targets = {}, []
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):  # apply_lora never adapts lm_head
            names, kind = pairs[name]
            for n, b in zip(names, split(m.lora_B.detach(), "" if kind == "T" else kind, len(names), c.n_head,
                                         c.n_kv_head)):
                targets.append(n)  # full names: peft adapts exactly these modules
                tensors.update({f"base_model.model.{n}.lora_A.weight": m.lora_A.detach().clone(),
                                f"base_model.model.{n}.lora_B.weight": b * hs ** -0.5 if n.endswith(".q") else b})
    config = peft.LoraConfig(r=s["r"], lora_alpha=s["alpha"], lora_dropout=s["dropout"], target_modules=targets,
                             fan_in_fan_out=layout == "gpt2", bias="none",
                             task_type="SEQ_2_SEQ_LM" if layout == "t5" else "CAUSAL_LM")

    def fill(d):
        config.save_pretrained(d)
        save_file(tensors, os.path.join(d, "adapter_model.safetensors"), metadata={"format": "pt"})
    write_dir(to, fill, sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6)


if __name__ == "__main__":
    one_line_errors()
    args = configure(dict(
        # -------------------------------------------------------------------------------------------------------------
        merge="",           # an adapter (lora.pt) to fold into its base: writes merged.pt beside it
        base="",            # --merge / --export: the base checkpoint, if it moved since training (default: recorded)
        export="",          # an adapter (lora.pt) to write in peft's format (adapter_config.json + safetensors)
        to="",              # --export: the output folder (default: peft/ beside the adapter)
        count="",           # a regex: the share of sampled stories that match it, for --ckpt and then + --lora
        ckpt="",            # --count: the base checkpoint
        lora="",            # --count: the adapter
        num_samples=50,     # --count: stories sampled from an EOT
        seed=1337,          # --count: the sampler's seed, the same for base and adapter
        max_new_tokens=200,  # --count: tokens per story, at most
        # -------------------------------------------------------------------------------------------------------------
    ), sys.argv[1:], __file__)
    if args["merge"]:  # adapter + its base -> one plain checkpoint in the adapter's folder
        adapter = read_checkpoint(args["merge"], want="lora")
        base = args["base"] or adapter["lora"]["base"]  # --base: when the base has moved since training
        model, ckpt = load_model(base)
        load_lora(model, args["merge"], tokenizer_of(ckpt))
        state = {k: v for k, v in merge_lora(model).state_dict().items() if "lora_" not in k}  # the base's keys
        out = os.path.join(os.path.dirname(args["merge"]), "merged.pt")
        if os.path.exists(out) and "merged_from" not in read_checkpoint(out, want="any"):  # never replace a model
            raise SystemExit(f"{out} exists and is not an earlier merge: nothing was written; move it away first")
        save_checkpoint(out, model, tokenizer_of(ckpt), adapter["config"], None, adapter["iter_num"], state=state,
                        extra={"merged_from": {"adapter": args["merge"], "base": base}})
        print(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB): {args['merge']} merged into its base")
    elif args["export"]:  # adapter -> peft's format, for the base exported by export.py (transformers folder)
        to = args["to"] or os.path.join(os.path.dirname(args["export"]), "peft")
        export_lora(args["export"], to, args["base"])
        print(f"wrote {to}: {', '.join(sorted(f for f in os.listdir(to) if not f.startswith('.')))}")
    elif args["count"]:  # share of sampled stories that match a theme regex: base, then base + adapter
        model, ckpt = load_model(args["ckpt"])
        for adapter in ["", args["lora"]] if args["lora"] else [""]:
            if adapter:
                load_lora(model, adapter, tokenizer_of(ckpt))
            share, _ = theme_share(model, tokenizer_of(ckpt), args["count"], args["num_samples"],
                                   args["seed"], args["max_new_tokens"])
            print(f"{args['ckpt']}{' + ' + adapter if adapter else ''}: {share:.0%} of {args['num_samples']} "
                  f"stories match {args['count']!r}")
    else:
        raise SystemExit(__doc__)
