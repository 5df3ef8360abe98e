"""
Our models and transformers' classes, both ways, with equal logits: which class computes each decoder, how our tensors
map onto its names, its config and tokenizer (export.py writes them); read_dir reads such a folder back.
  learned wpe + LayerNorm + GELU  -> GPT2LMHeadModel, activation "gelu" (its default gelu_new is the tanh form);
                                     Conv1D stores weights transposed; bias=False as zero biases
  RoPE + RMSNorm + SwiGLU / GEGLU -> LlamaForCausalLM (silu / gelu): c_attn splits into q/k/v rows, no per-head
                                     permutation (our half-split RoPE is HF's rotate_half); c_fc into gate / up
  ... with qk_norm, bias=False   -> Qwen3ForCausalLM: the same modules, q_norm / k_norm gains of ones
  RoPE + LayerNorm + GELU         -> GPTNeoXForCausalLM(use_parallel_residual=False), query_key_value per head
  encoder-decoder with T5 buckets -> T5ForConditionalGeneration (ByT5Tokenizer): RMSNorm, no biases, untied; T5 does
                                     not scale q.k, so 1/sqrt(head size) folds into q; ids move to ByT5's (byt5_ids)
The vocab is the tokenizer's (50,257, not the padded 50,304); an out_vocab head exports as the full untied lm_head it
stands for. transformers is imported inside the functions that need it: training never does.
"""
import errno
import json
import os
import shutil
from dataclasses import asdict

import torch

from model import GPT, MLP, MLPS, GPTConfig
from tokenizer import get_tokenizer

LAYOUTS = {(False, "layernorm", "gelu"): "gpt2", (True, "rmsnorm", "swiglu"): "llama",
           (True, "rmsnorm", "geglu"): "llama", (True, "layernorm", "gelu"): "gpt_neox"}
SUPPORTED = ("decoders with learned wpe + LayerNorm + GELU (GPT-2), RoPE + RMSNorm + SwiGLU or GEGLU (LLaMA; with "
             "qk_norm and bias=False: Qwen3), or "
             "RoPE + LayerNorm + GELU (GPT-NeoX); encoder-decoders with rel_buckets, RMSNorm, bias=False and "
             "tie_weights=False (T5); none with x0_mix")
T5_MLP = {"geglu": "gated-gelu_python", "geglu_tanh": "gated-gelu", "swiglu": "gated-silu", "gelu": "gelu_python"}
# per layout: HF's block prefix, {our block module: (HF modules, how our tensor maps)}, {our top module: HF's}.
# "T": transposed (GPT-2's Conv1D); "chunk": rows split evenly, in order; "heads": q|k|v rows regrouped per head
_B = ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
HF = {
    "gpt2": ("transformer.h.{}.", {m: ([m], "T") for m in _B},
             {"transformer.wte": "transformer.wte", "transformer.wpe": "transformer.wpe",
              "transformer.ln_f": "transformer.ln_f"}),
    "llama": ("model.layers.{}.", dict(zip(_B, [
        (["input_layernorm"], ""), (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "chunk"),
        (["self_attn.o_proj"], ""), (["post_attention_layernorm"], ""), (["mlp.gate_proj", "mlp.up_proj"], "chunk"),
        (["mlp.down_proj"], "")])), {"transformer.wte": "model.embed_tokens", "transformer.ln_f": "model.norm"}),
    "gpt_neox": ("gpt_neox.layers.{}.", dict(zip(_B, [
        (["input_layernorm"], ""), (["attention.query_key_value"], "heads"), (["attention.dense"], ""),
        (["post_attention_layernorm"], ""), (["mlp.dense_h_to_4h"], ""), (["mlp.dense_4h_to_h"], "")])),
                 {"transformer.wte": "gpt_neox.embed_in", "transformer.ln_f": "gpt_neox.final_layer_norm"}),
}
HF["qwen3"] = HF["llama"]  # LLaMA's modules, and q_norm / k_norm gains of ones for our parameter-free qk_norm
QK_NORMS = ("model.layers.{}.self_attn.q_norm.weight", "model.layers.{}.self_attn.k_norm.weight")


def layout_of(config: GPTConfig) -> str:
    """'gpt2' | 'llama' | 'gpt_neox' | 't5': the transformers model_type that computes this architecture exactly.
    SystemExit naming the supported combinations (and --format=nanostories) for any other."""
    c = config
    if c.arch == "encoder_decoder" and c.rel_buckets and c.norm == "rmsnorm" and not c.bias and not c.tie_weights \
            and c.mlp in T5_MLP and c.n_kv_head in (0, c.n_head) and not c.x0_mix and not c.qk_norm:
        return "t5"
    gqa = c.n_kv_head not in (0, c.n_head)  # grouped-query attention: LLaMA has it, GPT-2, NeoX and T5 do not
    llama = LAYOUTS.get((c.rope, c.norm, c.mlp)) == "llama"
    if c.arch != "decoder" or c.rel_buckets or c.x0_mix or (c.rope, c.norm, c.mlp) not in LAYOUTS or (
            gqa and not llama) or (c.qk_norm and not (llama and not c.bias)):
        raise SystemExit(f"no transformers class computes arch={c.arch}, rope={c.rope}, rel_buckets={c.rel_buckets}, "
                         f"norm={c.norm}, mlp={c.mlp}, bias={c.bias}, tie_weights={c.tie_weights}, n_kv_head="
                         f"{c.n_kv_head}, qk_norm={c.qk_norm}, x0_mix={c.x0_mix}: supported are "
                         f"{SUPPORTED}; export any model with --format=nanostories")
    return "qwen3" if c.qk_norm else LAYOUTS[(c.rope, c.norm, c.mlp)]


def module_pairs(layout: str, c: GPTConfig) -> list:
    """[(our module, [HF modules], kind)] for every module but the token embedding and lm_head."""
    if layout == "t5":
        return t5_pairs(c)
    prefix, block, top = HF[layout]
    return [(f"transformer.h.{i}.{m}", [prefix.format(i) + h for h in hs], kind)
            for i in range(c.n_layer) for m, (hs, kind) in block.items()] + \
        [(m, [h], "") for m, h in top.items() if m != "transformer.wte"]


def t5_pairs(c: GPTConfig) -> list:
    """module_pairs of T5: per stack our block's modules -> the sublayers T5 numbers 0 (self-attention), 1 (the
    decoder's cross-attention), then the MLP; each stack's bucket table sits in its block 0, as T5 keeps it."""
    attn = lambda n, kind, qkv: ([f"layer.{n}.{kind}.{x}" for x in qkv], "chunk")
    mlp = lambda n: {f"ln_2": ([f"layer.{n}.layer_norm"], ""), "mlp.c_proj": ([f"layer.{n}.DenseReluDense.wo"], ""),
                     "mlp.c_fc": ([f"layer.{n}.DenseReluDense.{w}" for w in (("wi_0", "wi_1") if MLPS[c.mlp][1]
                                                                               else ("wi",))], "chunk")}
    self_attn = {"ln_1": (["layer.0.layer_norm"], ""), "attn.c_attn": attn(0, "SelfAttention", "qkv"),
                 "attn.c_proj": (["layer.0.SelfAttention.o"], "")}
    enc = {**self_attn, **mlp(1)}
    dec = {**self_attn, "ln_x": (["layer.1.layer_norm"], ""), "xattn.c_q": attn(1, "EncDecAttention", "q"),
           "xattn.c_kv": attn(1, "EncDecAttention", "kv"), "xattn.c_proj": (["layer.1.EncDecAttention.o"], ""),
           **mlp(2)}
    pairs = [(f"transformer.{ours}.{i}.{m}", [f"{stack}.block.{i}.{h}" for h in hs], kind)
             for ours, stack, n, block in (("enc_h", "encoder", c.n_enc_layer, enc), ("h", "decoder", c.n_layer, dec))
             for i in range(n) for m, (hs, kind) in block.items()]
    return pairs + [("transformer.enc_ln_f", ["encoder.final_layer_norm"], ""),
                    ("transformer.ln_f", ["decoder.final_layer_norm"], ""),
                    ("transformer.enc_rel_bias", ["encoder.block.0.layer.0.SelfAttention.relative_attention_bias"], ""),
                    ("transformer.rel_bias", ["decoder.block.0.layer.0.SelfAttention.relative_attention_bias"], "")]


def byt5_ids():
    """(384,) long: for each id of ByT5's tokenizer, our byte tokenizer's id, -1 for its unk and the extra ids past our
    sentinels. ByT5 puts pad 0, eos 1, unk 2 in front of the bytes (b -> b + 3), its extra ids <extra_id_k> above
    them: ours are PAD, EOT, bytes, sentinel k."""
    from transformers import ByT5Tokenizer
    hf, tok = ByT5Tokenizer(), get_tokenizer("byte")
    ids = torch.full((len(hf),), -1)
    ids[hf.pad_token_id], ids[hf.eos_token_id] = tok.pad_id, tok.eot_id
    ids[hf.offset:hf.offset + 256] = torch.arange(256)
    for k, i in enumerate(tok.sentinel_ids):
        ids[hf.convert_tokens_to_ids(f"<extra_id_{k}>")] = i
    return ids


def split(t, kind, n, n_head, n_kv_head=0):
    """Our weight (out, in), bias (out,) or LoRA B (out, r) -> the n HF tensors it becomes. A q|k|v split (n = 3)
    gives k and v n_kv_head heads each (grouped-query attention) and q the rest."""
    if kind == "heads":  # ours: all q rows, then k, then v; NeoX: per head [q_h, k_h, v_h]
        return [t.unflatten(0, (3, n_head, -1)).transpose(0, 1).flatten(0, 2).contiguous()]
    if kind == "T":
        return [t.t().contiguous()]
    kv = t.size(0) // (n_head + 2 * (n_kv_head or n_head)) * (n_kv_head or n_head) if n == 3 else t.size(0) // n
    return [c.contiguous() for c in t.split([t.size(0) - (n - 1) * kv] + [kv] * (n - 1))]


def join(ts, kind, n_head):
    """The inverse of split: HF tensors -> ours."""
    if kind == "heads":
        return ts[0].unflatten(0, (n_head, 3, -1)).transpose(0, 1).flatten(0, 2).contiguous()
    return ts[0].t().contiguous() if kind == "T" else torch.cat(ts)


def hf_config(model: GPT, tok):
    """The GPT2Config / LlamaConfig / GPTNeoXConfig of our decoder. eos = our EOT and no BOS, both set explicitly:
    the classes' defaults (GPT-2 50256, LLaMA 1 and 2) are real GPT-2 ids."""
    import transformers
    c, layout = model.config, layout_of(model.config)
    hidden = model.transformer.h[0].mlp.c_proj.in_features  # the MLP width model.MLP chose
    if layout == "t5":  # ByT5's ids: pad 0 is also the decoder's start, as our PAD is
        return transformers.T5Config(vocab_size=len(byt5_ids()), d_model=c.n_embd, d_kv=c.n_embd // c.n_head,
                                     d_ff=hidden, num_layers=c.n_enc_layer, num_decoder_layers=c.n_layer,
                                     num_heads=c.n_head, relative_attention_num_buckets=c.rel_buckets,
                                     relative_attention_max_distance=c.rel_max_distance, dropout_rate=0.0,
                                     layer_norm_epsilon=1e-6, feed_forward_proj=T5_MLP[c.mlp], pad_token_id=0,
                                     tie_word_embeddings=False, eos_token_id=1, decoder_start_token_id=0)
    ids = dict(vocab_size=c.vocab_size, bos_token_id=None, eos_token_id=tok.eot_id, tie_word_embeddings=c.tie_weights
               and not c.out_vocab, pad_token_id=tok.eot_id if tok.pad_id is None else tok.pad_id)
    if layout == "gpt2":
        return transformers.GPT2Config(n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
                                       n_inner=hidden, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                                       attn_pdrop=0.0, layer_norm_epsilon=1e-5, **ids)
    ids.update(hidden_size=c.n_embd, intermediate_size=hidden, num_hidden_layers=c.n_layer, attention_bias=c.bias,
               num_attention_heads=c.n_head, max_position_embeddings=c.block_size)
    if layout in ("llama", "qwen3"):  # RMSNorm eps 1e-6 as model.make_norm (and qk_norm)
        ids.update(num_key_value_heads=c.n_kv_head or c.n_head, head_dim=c.n_embd // c.n_head, rms_norm_eps=1e-6,
                   hidden_act="silu" if c.mlp == "swiglu" else "gelu", rope_theta=c.rope_theta)
        return transformers.LlamaConfig(mlp_bias=c.bias, **ids) if layout == "llama" else \
            transformers.Qwen3Config(use_sliding_window=False, **ids)
    return transformers.GPTNeoXConfig(hidden_act="gelu", use_parallel_residual=False, layer_norm_eps=1e-5,
                                      rotary_pct=1.0, rotary_emb_base=c.rope_theta, hidden_dropout=0.0, **ids)


def hf_state_dict(model: GPT) -> dict:
    """Our weights under HF's names, vocab cut to vocab_size. An out_vocab head becomes the full head it stands for:
    row kept_ids[k] = lm_head.weight[kept_ids[k]], every other row = `other` (model.GPT.forward)."""
    c, sd, out, layout = model.config, model.state_dict(), {}, layout_of(model.config)
    for ours, names, kind in module_pairs(layout, c):
        for p in ("weight", "bias"):
            if f"{ours}.{p}" in sd:
                out.update(zip([f"{n}.{p}" for n in names], split(sd[f"{ours}.{p}"], kind, len(names), c.n_head,
                                                                  c.n_kv_head)))
    if layout == "t5":  # q.k unscaled in T5; rows moved to ByT5's ids, zero for the ids we do not have
        for k in out:
            out[k] = out[k] * (c.n_embd // c.n_head) ** -0.5 if k.endswith(".q.weight") else out[k]
        ids = byt5_ids()
        rows = lambda w: torch.where((ids >= 0)[:, None], w[ids.clamp(min=0)], 0.0)
        emb = rows(sd["transformer.wte.weight"])
        return {**out, "shared.weight": emb, "encoder.embed_tokens.weight": emb, "decoder.embed_tokens.weight": emb,
                "lm_head.weight": rows(sd["lm_head.weight"])}
    if layout == "qwen3":
        out.update({k.format(i): torch.ones(c.n_embd // c.n_head) for i in range(c.n_layer) for k in QK_NORMS})
    out[HF[layout][2]["transformer.wte"] + ".weight"] = sd["transformer.wte.weight"][:c.vocab_size].clone()
    out["lm_head.weight"] = sd["lm_head.weight"][:c.vocab_size].clone()
    if c.out_vocab:
        out["lm_head.weight"] = model.other.detach()[None].repeat(c.vocab_size, 1)
        out["lm_head.weight"][model.kept_ids] = sd["lm_head.weight"][model.kept_ids]
    return out


def hf_tokenizer(tok, max_length: int):
    """A transformers fast tokenizer with our ids, of a Tokenizer (or a fixed one's name). gpt2: GPT2TokenizerFast of
    tiktoken's cached encoder.json and vocab.bpe (HF's vocab.json and merges.txt). bpeN: its own tokenizer.json. byte: a
    `tokenizers` BPE without merges over the 256 ByteLevel characters (byte b -> id b), then EOT 256, PAD 257 and the
    sentinels (HF's ByT5Tokenizer shifts every id by 3). split_special_tokens: "<|endoftext|>" in text stays text, as
    in tiktoken's encode_ordinary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte -> character map
    tok = get_tokenizer(tok) if isinstance(tok, str) else tok
    kw = dict(split_special_tokens=True, clean_up_tokenization_spaces=False, model_max_length=max_length)
    if tok.name == "gpt2":
        return GPT2TokenizerFast(*_gpt2_bpe_files(), bos_token=None, unk_token=None, eos_token="<|endoftext|>", **kw)
    if tok.definition:
        return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tok.definition), eos_token="<|endoftext|>",
                                       **kw)
    b2u = bytes_to_unicode()
    t = Tokenizer(models.BPE(vocab={b2u[b]: b for b in range(256)}, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)  # one "word": every byte
    t.decoder = decoders.ByteLevel()
    specials = [tok._special_text(i) for i in tok.special_ids]  # ids 256.. in order
    t.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token=specials[0], pad_token=specials[1],
                                   additional_special_tokens=specials[2:], **kw)


def _gpt2_bpe_files():
    """(vocab, merges) of GPT-2's encoder.json and vocab.bpe in tiktoken's cache ($TIKTOKEN_CACHE_DIR, files named
    by hash: found by content). SystemExit naming the fix when they are missing."""
    root, found = os.environ.get("TIKTOKEN_CACHE_DIR", ""), {}
    for f in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        text = open(os.path.join(root, f), encoding="utf-8", errors="replace").read()
        if text.startswith('{"!"'):
            found["vocab"] = json.loads(text)
        elif text.startswith("#version"):  # a header line, then one merge "a b" per line
            found["merges"] = [tuple(line.split(" ")) for line in text.split("\n")[1:] if line]
    if len(found) < 2:
        raise SystemExit(f"no GPT-2 encoder.json / vocab.bpe in TIKTOKEN_CACHE_DIR={root!r}: set it to tiktoken's "
                         "cache (e.g. ../shared/tiktoken_cache), or run tiktoken.get_encoding('gpt2') once online")
    return found["vocab"], found["merges"]


MARKER = ".nanostories-export"  # in every folder write_dir writes: the list of the files it wrote


def write_dir(to: str, fill, need_mb: float):
    """fill(tmp) writes a fresh folder beside `to`, which then replaces `to`: a crash, a full disk or Ctrl-C leave
    the old one whole and nothing partial. `to` must be new, or a folder that write_dir wrote (MARKER lists its
    files, and it holds no others): anything else there (a file, a user's folder, a training run's out_dir) is refused
    in one line that names it, and nothing is deleted. need_mb: what the folder takes, for the full-disk message."""
    to = to.rstrip("/")
    marker = os.path.join(to, MARKER)
    ours = lambda: os.path.isfile(marker) and set(os.listdir(to)) <= {MARKER, *json.load(open(marker))}
    if os.path.lexists(to) and not ours():
        what = "a folder of files that no export wrote" if os.path.isdir(to) else "a file"
        raise SystemExit(f"{to} is {what}: nothing was written or deleted; pass --to=a new folder (or move it away)")
    tmp = f"{to}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        fill(tmp)
        json.dump(sorted(os.listdir(tmp)), open(os.path.join(tmp, MARKER), "w"))
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise SystemExit(f"could not write {to} (disk full): it needs about {need_mb:,.0f} MB free there; nothing "
                             f"was written (free space, or pass --to elsewhere)") from None
        raise
    if os.path.exists(to):
        os.replace(to, tmp + ".old")
    os.replace(tmp, to)
    shutil.rmtree(tmp + ".old", ignore_errors=True)


def read_dir(path: str, device="cpu") -> dict:
    """A checkpoint dict (model, model_args, tokenizer, config, iter_num, best_val_loss, optimizer None) from a
    folder: ours (export_native), or a transformers GPT-2 / LLaMA / GPT-NeoX one whose config model.py computes
    (export_hf's, or anyone's with a tokenizer of ours). SystemExit naming what is supported for any other."""
    if not os.path.exists(os.path.join(path, "config.json")):
        raise SystemExit(f"{path} has no config.json: pass a folder written by export.py or a transformers model")
    try:
        cfg = json.load(open(os.path.join(path, "config.json"), encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SystemExit(f"{path}/config.json is not valid JSON ({e}; cut short?): copy or export the folder again")
    meta = cfg.get("nanostories") or {}
    weights_file = _check_weights(path)
    if "model_type" not in cfg:  # our own layout
        from safetensors.torch import load_file
        if "model_args" not in meta:
            raise SystemExit(f"{path}/config.json is neither ours (export.py) nor a transformers one (model_type)")
        sd = load_file(weights_file, device=str(device))
        if meta["model_args"]["tie_weights"]:
            sd["lm_head.weight"] = sd["transformer.wte.weight"]  # stored once by export_native
        return {**meta, "model": sd, "optimizer": None}
    layout = cfg["model_type"]
    if layout == "t5":
        return _read_t5(path, meta, device)
    if layout not in HF:
        raise SystemExit(f"{path}: model_type {layout!r} is not supported; supported are gpt2, llama, qwen3, gpt_neox "
                         f"configs that match model.py: {SUPPORTED}")
    from transformers import AutoConfig, AutoModelForCausalLM
    tok = get_tokenizer(meta.get("tokenizer") or _known_tokenizer(path), meta.get("tokenizer_json"))
    args = _gpt_args(AutoConfig.from_pretrained(path), layout, tok, path)
    weights = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()
    head = weights.pop("lm_head.weight")
    # zero biases are no biases: an export of bias=False (HF's GPT-2 / NeoX always have them) comes back bias=False
    bias = meta.get("model_args", {}).get("bias") or any(t.any() for k, t in weights.items() if k.endswith(".bias"))
    config = GPTConfig(**args, bias=bool(bias))
    with torch.device("meta"):  # our tensors' names and shapes, no memory
        want = GPT(config).state_dict()
    sd = {}
    for ours, names, kind in module_pairs(layout, config):
        for k in (f"{ours}.weight", f"{ours}.bias"):
            if k in want:
                ts = [weights.pop(n + k[len(ours):], None) for n in names]
                if k.endswith(".bias") and any(t is None for t in ts):  # LLaMA: attention_bias xor mlp_bias
                    ts, kind = [torch.zeros(want[k].shape)], ""
                sd[k] = join(ts, kind, config.n_head)
    pad = lambda t: torch.cat([t, t.new_zeros(config.padded_vocab - config.vocab_size, t.size(1))])
    sd["transformer.wte.weight"] = pad(weights.pop(HF[layout][2]["transformer.wte"] + ".weight"))
    gains = [weights.pop(k.format(i)) for i in range(config.n_layer) for k in QK_NORMS] if layout == "qwen3" else []
    if any(not torch.equal(g, torch.ones_like(g)) for g in gains):
        raise SystemExit(f"{path}: its q_norm / k_norm gains are learned (not 1): model.py's qk_norm has none")
    sd["lm_head.weight"] = sd["transformer.wte.weight"] if config.tie_weights else pad(head)
    left = [k for k, t in weights.items() if t.any()]  # what remains must be zero biases that bias=False drops
    if left:
        raise SystemExit(f"{path}: weights {left[:3]} have no place in model.py's {layout} layout")
    return {"model": {k: v.to(device) for k, v in sd.items()}, "model_args": asdict(config), "tokenizer": tok.name,
            "tokenizer_json": tok.definition, "config": meta.get("config", {"init_from": path}),
            "iter_num": meta.get("iter_num", 0), "best_val_loss": meta.get("best_val_loss"), "optimizer": None}


def _read_t5(path: str, meta: dict, device) -> dict:
    """read_dir of a T5ForConditionalGeneration folder with ByT5's tokenizer (ours, or anyone's whose config model.py
    computes: heads that span d_model, untied embeddings, RMSNorm eps 1e-6, a gated or plain GELU / SiLU MLP)."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, logging
    logging.set_verbosity_error()  # transformers 5 warns that it keeps an untied lm_head untied
    kind = json.load(open(os.path.join(path, "tokenizer_config.json"))).get("tokenizer_class") \
        if os.path.exists(os.path.join(path, "tokenizer_config.json")) else None
    if kind != "ByT5Tokenizer":
        raise SystemExit(f"{path}: a T5 folder is read with ByT5's byte tokenizer (tokenizer_config.json: "
                         f"ByT5Tokenizer), this one has {kind or 'none'}; ours map only onto ByT5's ids")
    hf, tok, ids = AutoConfig.from_pretrained(path), get_tokenizer("byte"), byt5_ids()
    mlp = {v: k for k, v in T5_MLP.items()}.get(hf.feed_forward_proj)
    want = {"d_kv x num_heads": (hf.d_kv * hf.num_heads, hf.d_model), "tie_word_embeddings": (  # T5 v1.1's
            getattr(hf, "scale_decoder_outputs", hf.tie_word_embeddings), False), "layer_norm_epsilon": (hf.layer_norm_epsilon, 1e-6), "vocab_size": (hf.vocab_size, len(ids)),
            "feed_forward_proj": (hf.feed_forward_proj, hf.feed_forward_proj if mlp else ", ".join(T5_MLP.values()))}
    bad = [f"{k}={have!r} (needs {need!r})" for k, (have, need) in want.items() if have != need]
    if bad:
        raise SystemExit(f"{path}: this t5 config is not one model.py computes: {'; '.join(bad)}")
    ours = meta.get("model_args", {})  # an export of ours keeps what T5's config has no field for
    kept = {k: ours[k] for k in ("block_size", "tgt_len", "dec_prefix") if k in ours}
    config = GPTConfig(arch="encoder_decoder", n_enc_layer=hf.num_layers, n_layer=hf.num_decoder_layers,
                       n_embd=hf.d_model, n_head=hf.num_heads, mlp=mlp, norm="rmsnorm", bias=False, tie_weights=False,
                       mlp_hidden=0 if hf.d_ff == MLP(GPTConfig(n_embd=hf.d_model, n_head=hf.num_heads, mlp=mlp))
                       .c_proj.in_features else hf.d_ff, rel_buckets=hf.relative_attention_num_buckets,
                       rel_max_distance=hf.relative_attention_max_distance, vocab_size=tok.vocab_size,
                       pad_id=tok.pad_id, **{"block_size": 512, **kept})
    weights, hs = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=torch.float32).state_dict(), hf.d_kv
    sd = {f"{ours}.weight": join([weights[f"{n}.weight"] * (hs ** 0.5 if n.endswith(".q") else 1.0) for n in names],
                                 kind, config.n_head) for ours, names, kind in t5_pairs(config)}
    for ours, theirs in (("transformer.wte", "shared"), ("lm_head", "lm_head")):
        sd[f"{ours}.weight"] = torch.zeros(config.padded_vocab, config.n_embd)
        sd[f"{ours}.weight"][ids[ids >= 0]] = weights[f"{theirs}.weight"][ids >= 0]
    return {"model": {k: v.to(device) for k, v in sd.items()}, "model_args": asdict(config), "tokenizer": tok.name,
            "tokenizer_json": tok.definition, "config": meta.get("config", {"init_from": path}),
            "iter_num": meta.get("iter_num", 0), "best_val_loss": meta.get("best_val_loss"), "optimizer": None}


def _check_weights(path: str) -> str:
    """The folder's model.safetensors, checked whole (its header, and data that cover the file). SystemExit naming
    the file and the fix when it is missing, truncated or not a safetensors file."""
    from safetensors import SafetensorError, safe_open
    f = os.path.join(path, "model.safetensors")
    if not os.path.isfile(f):
        raise SystemExit(f"{path} has no model.safetensors: copy it into the folder, or export the model again")
    try:
        with safe_open(f, "pt"):  # parses the header and checks that the data cover the file
            pass
    except (SafetensorError, OSError, ValueError) as e:
        raise SystemExit(f"{f} is truncated or corrupt ({str(e)[:100]}): copy or export it again") from None
    return f


def _known_tokenizer(path: str) -> str:
    """The name of our tokenizer whose ids and EOT the folder's tokenizer gives, on a probe text."""
    from transformers import AutoTokenizer
    if not any(os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "vocab.json", "tokenizer.model")):
        raise SystemExit(f"{path} has no tokenizer files (tokenizer.json and tokenizer_config.json, or vocab.json and "
                         f"merges.txt): copy them into the folder (export.py writes them), or export the model again")
    try:
        hf_tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 (transformers raises many kinds for a missing or odd tokenizer)
        raise SystemExit(f"{path}: its tokenizer files do not load ({type(e).__name__}: {str(e)[:80]}): copy them "
                         f"again (export.py writes them); ours are gpt2, byte, bpeN")
    probe = "Once upon a time, Lily said: “Naïve café!” 東京 🐉\n\n  It's 3.14, isn't it?"
    for name in ("gpt2", "byte"):  # a trained BPE comes with our metadata (config.json's nanostories.tokenizer_json)
        tok = get_tokenizer(name)
        if hf_tok(probe, add_special_tokens=False)["input_ids"] == tok.encode(probe) and \
                hf_tok.eos_token_id == tok.eot_id:
            return name
    raise SystemExit(f"{path}: its tokenizer is none of ours (gpt2, byte: ids and EOT must be equal)")


def _gpt_args(hf, layout: str, tok, path: str) -> dict:
    """GPTConfig fields (all but bias) of a transformers config; SystemExit listing every setting model.py lacks."""
    rope = getattr(hf, "rope_parameters", None) or {"rope_theta": getattr(hf, "rope_theta", None) or getattr(
        hf, "rotary_emb_base", 10000.0), "partial_rotary_factor": getattr(hf, "rotary_pct", 1.0)}  # transformers 4
    want = {"vocab_size": (hf.vocab_size, tok.vocab_size)}  # setting: (the folder's, what model.py computes)
    if layout == "gpt2":
        args = dict(block_size=hf.n_positions, n_layer=hf.n_layer, n_head=hf.n_head, n_embd=hf.n_embd,
                    mlp_hidden=hf.n_inner or 0, rope=False, norm="layernorm", mlp="gelu")
        want.update(activation_function=(hf.activation_function, "gelu"), layer_norm_epsilon=(
            hf.layer_norm_epsilon, 1e-5), scale_attn_by_inverse_layer_idx=(hf.scale_attn_by_inverse_layer_idx, False),
            scale_attn_weights=(hf.scale_attn_weights, True))
    else:
        llama = layout in ("llama", "qwen3")
        args = dict(block_size=hf.max_position_embeddings, n_layer=hf.num_hidden_layers, n_embd=hf.hidden_size,
                    n_head=hf.num_attention_heads, mlp_hidden=hf.intermediate_size, rope=True,
                    qk_norm=layout == "qwen3",
                    rope_theta=float(rope["rope_theta"]), norm="rmsnorm" if llama else "layernorm",
                    mlp={"silu": "swiglu", "gelu": "geglu"}.get(hf.hidden_act, "") if llama else "gelu")
        hs = args["n_embd"] // args["n_head"]
        want.update(rope_type=(rope.get("rope_type", "default"), "default"), hidden_act=(hf.hidden_act, (
            hf.hidden_act if args["mlp"] else "silu or gelu") if llama else "gelu"),
            partial_rotary_factor=(rope.get("partial_rotary_factor", 1.0), 1.0))
        if layout == "qwen3":
            want["use_sliding_window"] = (getattr(hf, "use_sliding_window", False), False)
        kv = getattr(hf, "num_key_value_heads", None) or args["n_head"]
        args["n_kv_head"] = 0 if kv == args["n_head"] else kv  # grouped-query attention
        want.update(dict(head_dim=(getattr(hf, "head_dim", None) or hs, hs), rms_norm_eps=(hf.rms_norm_eps, 1e-6),
                         num_key_value_heads=(kv, kv if args["n_head"] % kv == 0 else "a divisor of the heads"))
                    if llama else dict(use_parallel_residual=(hf.use_parallel_residual, False),
                                       layer_norm_eps=(hf.layer_norm_eps, 1e-5)))
    bad = [f"{k}={have!r} (needs {need!r})" for k, (have, need) in want.items() if have != need]
    if bad:
        raise SystemExit(f"{path}: this {layout} config is not one model.py computes: {'; '.join(bad)}")
    args.update(vocab_size=tok.vocab_size, pad_id=-1 if tok.pad_id is None else tok.pad_id,
                tie_weights=hf.tie_word_embeddings)
    with torch.device("meta"):  # mlp_hidden=0 where it is the default width: the config equals the original's
        if MLP(GPTConfig(**{**args, "mlp_hidden": 0})).c_proj.in_features == args["mlp_hidden"]:
            args["mlp_hidden"] = 0
    return args
