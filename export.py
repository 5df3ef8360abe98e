"""
Export a trained model to the ecosystem's formats, with equal logits (hf.py has the mapping):

  python export.py --out_dir=out-tinystories-cpu               # a transformers folder (default out_dir/hf, or --to)
  python export.py --out_dir=out-tinystories-cpu --check=True  # ... then compare it with ours, and write a story
  python export.py --out_dir=out-byt5 --format=nanostories     # any model, encoder-decoder too: our own safetensors
  python lora.py --export=out-lora-dog/lora.pt --to=DIR        # a LoRA adapter in peft's format
  python sample.py --out_dir=DIR, train.py --init_from=DIR     # such folders, or GPT-2 / LLaMA / NeoX ones

Past block_size our generate slides its window, HF's GPT-2 raises and LLaMA / NeoX extrapolate RoPE to positions
never trained.
"""
import json
import os
import sys
from dataclasses import asdict

import torch

from checkpoint import load_model
from configurator import configure
from errors import one_line_errors
from hf import byt5_ids, hf_config, hf_state_dict, hf_tokenizer, layout_of, write_dir
from model import GPT
from tokenizer import tokenizer_of


mb = lambda tensors: sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6  # a state dict's size


def _meta(model, ckpt) -> dict:
    """What a folder keeps of our checkpoint besides the weights (JSON), for read_dir."""
    return {"model_args": asdict(model.config), "tokenizer": ckpt["tokenizer"], "config": ckpt.get("config") or {},
            "tokenizer_json": ckpt.get("tokenizer_json"),
            "iter_num": ckpt.get("iter_num", 0), "best_val_loss": ckpt.get("best_val_loss")}


def export_hf(model: GPT, ckpt: dict, to: str, card: str = ""):
    """Write a folder that transformers' AutoModelForCausalLM (AutoModelForSeq2SeqLM: T5), AutoTokenizer and pipeline
    load offline: config.json (our checkpoint's metadata under "nanostories"), model.safetensors (fp32),
    generation_config.json, the tokenizer and README.md (card). SystemExit for a layout no transformers class computes
    (layout_of)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, ByT5Tokenizer
    tok, t5 = tokenizer_of(ckpt), layout_of(model.config) == "t5"
    if model.config.vocab_size != tok.vocab_size or (t5 and tok.name != "byte"):
        raise SystemExit(f"vocab_size {model.config.vocab_size} is not tokenizer {tok.name}'s {tok.vocab_size}, or a "
                         f"T5 export is not of the byte tokenizer (ByT5's)")
    config = hf_config(model, tok)
    config.nanostories = _meta(model, ckpt)  # an extra field transformers keeps; read_dir reads it back
    hf = (AutoModelForSeq2SeqLM if t5 else AutoModelForCausalLM).from_config(config)
    if t5:  # transformers 5 builds T5 with lm_head tied to shared; ByT5's are two matrices: saved and loaded as two
        hf.lm_head.weight, hf.config.tie_word_embeddings = torch.nn.Parameter(hf.lm_head.weight.clone()), False
    sd = hf_state_dict(model)  # every random tensor is replaced
    for k, v in hf.state_dict().items():  # biases HF has and bias=False drops: zeros compute the same
        if k.endswith(".bias"):
            sd.setdefault(k, torch.zeros(v.shape))
    hf.load_state_dict(sd, strict=True)
    if t5:  # our sampling never writes PAD, a sentinel, or an id we do not have; HF's generate neither
        hf.generation_config.suppress_tokens = [i for i, o in enumerate(byt5_ids().tolist()) if o < 0 or
                                                (o in tok.special_ids and o != tok.eot_id)]

    def fill(d):
        hf.save_pretrained(d)
        (ByT5Tokenizer(model_max_length=model.config.block_size) if t5 else
         hf_tokenizer(tok, model.config.block_size)).save_pretrained(d)
        open(os.path.join(d, "README.md"), "w", encoding="utf-8").write(card)
    write_dir(to, fill, mb(sd))


def export_native(model: GPT, ckpt: dict, to: str):
    """Any model (encoder-decoder too) as model.safetensors (our state-dict names) + config.json ({"nanostories":
    metadata}), which checkpoint.load_model reads back exactly. safetensors refuses tensors that share
    storage: a tied lm_head.weight is left out and tied again on load."""
    from safetensors.torch import save_file
    sd = {k: v.contiguous() for k, v in model.state_dict().items()
          if not (model.config.tie_weights and k == "lm_head.weight")}

    def fill(d):
        save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        json.dump({"nanostories": _meta(model, ckpt)}, open(os.path.join(d, "config.json"), "w"), indent=1)
    write_dir(to, fill, mb(sd))


def model_card(model: GPT, ckpt: dict, out_dir: str) -> str:
    """README.md of an export: architecture, parameters, data and its license, the training command (the config file
    with this out_dir), val loss and bits per byte (out_dir/eval.json, else the checkpoint's best val loss)."""
    c, cfg, path = model.config, ckpt.get("config") or {}, os.path.join(out_dir, "eval.json")
    ev = json.load(open(path)) if os.path.exists(path) else {"loss": ckpt.get("best_val_loss"),
                                                              "iter": ckpt["iter_num"]}
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")
    cmd = next((f"python train.py config/{f}" for f in sorted(os.listdir(root))
                if f'out_dir = "{cfg.get("out_dir")}"' in open(os.path.join(root, f)).read()),
               "python train.py (settings: nanostories.config in config.json)")
    score = (f"val loss {ev['loss']:.4f} nats/token" if ev.get("loss") is not None else "not evaluated") + (
        f", {ev['bpb']:.4f} bits per byte" if ev.get("bpb") is not None else "")
    positions = "RoPE" if c.rope else f"T5 buckets ({c.rel_buckets})" if c.rel_buckets else "learned positions"
    arch = (f"{c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, {positions}, {c.norm}, {c.mlp}, bias={c.bias}, "
            f"tie_weights={c.tie_weights}, block_size {c.block_size}" + (f", {c.n_enc_layer} encoder layers" if
            c.n_enc_layer else "") + (f", out_vocab={c.out_vocab} (exported as the full untied lm_head)" if c.out_vocab
                                      else ""))
    if layout_of(c) == "t5":  # the encoder reads the text after EOT (</s>), the decoder starts at pad + its tail
        tail = f" + src[-{c.dec_prefix}:]" if c.dec_prefix else ""
        reread = f", re-reads the input's last {c.dec_prefix} bytes" if c.dec_prefix else ""
        usage = f"""The encoder reads the text after `</s>` (our EOT); the decoder starts from `<pad>`{reread} and
writes up to {c.tgt_len} positions, as in training.

```python
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
tok, model = AutoTokenizer.from_pretrained("PATH"), AutoModelForSeq2SeqLM.from_pretrained("PATH")
src = [1] + tok("Once upon a time", add_special_tokens=False).input_ids
dec = [0]{tail}
cache = EncoderDecoderCache(DynamicCache(), DynamicCache())  # decoder and encoder depths may differ
out = model.generate(input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([dec]), max_new_tokens=64,
                     past_key_values=cache)
print(tok.decode(out[0, len(dec):]))
```"""
    else:
        usage = (f"Training stories start after `<|endoftext|>`: prepend its id to `input_ids` to start as sample.py "
                 f"does. Keep the prompt plus new tokens within {c.block_size}: past it nanostories slides its window, "
                 f"GPT-2 raises, and LLaMA / NeoX extrapolate RoPE to positions never trained.\n\n```python\nfrom "
                 f"transformers import pipeline\ngenerate = pipeline(\"text-generation\", model=\"PATH\")\nprint("
                 f"generate(\"Once upon a time\", do_sample=True, temperature=0.8, top_k=200)[0][\"generated_text\"])"
                 f"\n```")
    return f"""---
library_name: transformers
datasets: [roneneldan/TinyStories]
---
# nanostories {c.n_layer} x {c.n_embd} ({layout_of(c)})

A {model.num_params(False) / 1e6:.1f}M-parameter model of nanostories' model.py ({arch}), tokenizer
{ckpt["tokenizer"]}; exported by export.py with equal logits.

- Data: TinyStories (Eldan & Li 2023, arXiv 2305.07759), license CDLA-Sharing-1.0.
- Training: `{cmd}`, {ckpt["iter_num"]} steps. Evaluation (step {ev.get("iter")}): {score}.

{usage}
"""


@torch.no_grad()
def compare(model: GPT, tok, path: str, seed: int = 1337, prompt: str = "Once upon a time") -> dict:
    """Compare the export at path with our model, fp32 on the CPU: max |dlogit| over 4 x block_size random ids;
    greedy decoding from EOT + prompt up to block_size (HF's generate, EOS stopping off); and a story from
    transformers.pipeline("text-generation") at sample.py's settings (seed, temperature 0.8, top-k 200)."""
    from transformers import AutoModelForCausalLM, pipeline
    hf, model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), model.float().eval()
    x = torch.randint(0, tok.vocab_size, (4, model.config.block_size), generator=torch.Generator().manual_seed(seed))
    dlogit = (model(x)[0] - hf(x).logits).abs().max().item()
    ids = torch.tensor([[tok.eot_id] + tok.encode(prompt)])
    n = model.config.block_size - ids.size(1)
    ours = model.generate(ids, n, temperature=0)[0, ids.size(1):]
    hf.generation_config.eos_token_id = None  # all n tokens, past any EOT, as our generate without stop_ids
    # an explicit mask: our stories start with EOT, which is also GPT-2's pad id, and without a mask HF's generate
    # masks every pad id of the prompt out (here the EOT in front): the greedy tokens then part after ~100 tokens
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)[0, ids.size(1):]
    same = int((ours != theirs).cumsum(0).eq(0).sum())  # leading tokens that agree
    torch.manual_seed(seed)
    generate = pipeline("text-generation", model=path, dtype=torch.float32, device="cpu")
    story = generate(prompt, max_new_tokens=n, do_sample=True, temperature=0.8, top_k=200)[0]["generated_text"]
    return {"max_dlogit": dlogit, "greedy_same": same, "greedy_n": n, "story": story}


@torch.no_grad()
def compare_t5(model: GPT, tok, path: str, seed: int = 1337, prompt: str = "Once upon a time") -> dict:
    """compare for a T5 export: max |dlogit| on our ids over 4 random sources (two of them padded) and decoder inputs,
    and a greedy continuation of EOT + prompt as sample.py's first chunk (the decoder starts at PAD and re-reads the
    source's last dec_prefix ids) from ours and from HF's generate (EOS stopping off), with HF's text."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, logging
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    logging.set_verbosity_error()  # transformers 5 warns that it keeps an untied lm_head untied
    hf, model, c = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=torch.float32).eval(), model.float().eval(), \
        model.config
    ids = byt5_ids()
    to_hf = torch.zeros(c.vocab_size, dtype=torch.long)
    to_hf[ids[ids >= 0]] = torch.arange(len(ids))[ids >= 0]  # our id -> ByT5's
    g = torch.Generator().manual_seed(seed)
    src, dec = torch.randint(0, 256, (4, c.block_size), generator=g), torch.randint(0, 256, (4, c.tgt_len), generator=g)
    src[:2, c.block_size // 2:], dec[:, 0] = tok.pad_id, tok.pad_id  # padding; the decoder's start id
    theirs = hf(input_ids=to_hf[src], attention_mask=(src != tok.pad_id).long(), decoder_input_ids=to_hf[dec]).logits
    dlogit = (model(dec, src=src)[0] - theirs[..., to_hf]).abs().max().item()
    x = torch.tensor([[tok.eot_id] + tok.encode(prompt)])
    d = torch.cat([torch.full((1, 1), tok.pad_id), x[:, x.size(1) - min(c.dec_prefix, x.size(1)):]], dim=1)
    n = c.tgt_len - d.size(1)
    banned = [i for i in tok.special_ids if i != tok.eot_id]
    ours = model.generate(d, n, temperature=0, src=x, banned_ids=banned)[0, d.size(1):]
    hf.generation_config.eos_token_id = None  # all n tokens, as our generate without stop_ids
    # transformers 5 sizes T5's decoder cache by the encoder's depth: a cache that grows by layer serves any depths
    out = hf.generate(input_ids=to_hf[x], decoder_input_ids=to_hf[d], max_new_tokens=n, do_sample=False,
                      past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache()))[0, d.size(1):]
    same = int((to_hf[ours] != out).cumsum(0).eq(0).sum())  # leading tokens that agree
    story = prompt + AutoTokenizer.from_pretrained(path).decode(out, skip_special_tokens=True)
    return {"max_dlogit": dlogit, "greedy_same": same, "greedy_n": n, "story": story}


if __name__ == "__main__":
    one_line_errors()
    args = configure(dict(
        # -------------------------------------------------------------------------------------------------------------
        out_dir="out",        # the training run's folder
        ckpt_name="ckpt.pt",  # or best.pt
        to="",                # the folder to write (default: out_dir/hf, or out_dir/safetensors)
        format="hf",          # "hf" (a transformers folder) | "nanostories" (our safetensors: any model)
        check=False,          # compare the export with our model (logits, greedy tokens) and write a story
        seed=1337,            # --check: the random ids' and the story's seed
        # -------------------------------------------------------------------------------------------------------------
    ), sys.argv[1:], __file__)
    if args["format"] not in ("hf", "nanostories"):
        raise SystemExit(f"config error: format must be hf (transformers) or nanostories, got {args['format']!r}")
    model, ckpt = load_model(os.path.join(args["out_dir"], args["ckpt_name"]))
    to = args["to"] or os.path.join(args["out_dir"], "hf" if args["format"] == "hf" else "safetensors")
    if args["format"] == "hf":
        export_hf(model, ckpt, to, model_card(model, ckpt, args["out_dir"]))
    else:
        export_native(model, ckpt, to)
    print(f"wrote {to}: {', '.join(sorted(f for f in os.listdir(to) if not f.startswith('.')))}")
    if args["check"]:
        t5 = args["format"] == "hf" and layout_of(model.config) == "t5"
        r = (compare_t5 if t5 else compare)(model, tokenizer_of(ckpt), to, args["seed"])
        print(f"max |dlogit| {r['max_dlogit']:.2e} (fp32, 4 x {model.config.block_size} random ids); greedy: "
              f"{r['greedy_same']} of {r['greedy_n']} tokens identical\n{'generate' if t5 else 'pipeline'} story:\n"
              f"{r['story']}")
