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
from hf import hf_config, hf_state_dict, hf_tokenizer, layout_of, write_dir
from model import GPT
from tokenizer import get_tokenizer


mb = lambda tensors: sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6  # a state dict's size


def _meta(model, ckpt) -> dict:
    """What a folder keeps of our checkpoint besides the weights (JSON), for read_dir."""
    return {"model_args": asdict(model.config), "tokenizer": ckpt["tokenizer"], "config": ckpt.get("config") or {},
            "iter_num": ckpt.get("iter_num", 0), "best_val_loss": ckpt.get("best_val_loss")}


def export_hf(model: GPT, ckpt: dict, to: str, card: str = ""):
    """Write a folder that transformers' AutoModelForCausalLM, AutoTokenizer and pipeline load offline: config.json
    (our checkpoint's metadata under "nanostories"), model.safetensors (fp32), generation_config.json, the tokenizer
    and README.md (card). SystemExit for a layout no transformers class computes (layout_of)."""
    from transformers import AutoModelForCausalLM
    tok = get_tokenizer(ckpt["tokenizer"])
    if model.config.vocab_size != tok.vocab_size:
        raise SystemExit(f"vocab_size {model.config.vocab_size} is not tokenizer {tok.name}'s {tok.vocab_size}")
    config = hf_config(model, tok)
    config.nanostories = _meta(model, ckpt)  # an extra field transformers keeps; read_dir reads it back
    hf, sd = AutoModelForCausalLM.from_config(config), hf_state_dict(model)  # every random tensor is replaced
    for k, v in hf.state_dict().items():  # biases HF has and bias=False drops: zeros compute the same
        if k.endswith(".bias"):
            sd.setdefault(k, torch.zeros(v.shape))
    hf.load_state_dict(sd, strict=True)

    def fill(d):
        hf.save_pretrained(d)
        hf_tokenizer(tok.name, model.config.block_size).save_pretrained(d)
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
    arch = (f"{c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, {'RoPE' if c.rope else 'learned positions'}, "
            f"{c.norm}, {c.mlp}, bias={c.bias}, tie_weights={c.tie_weights}, block_size {c.block_size}" +
            (f", out_vocab={c.out_vocab} (exported as the full untied lm_head)" if c.out_vocab else ""))
    return f"""---
library_name: transformers
pipeline_tag: text-generation
datasets: [roneneldan/TinyStories]
---
# nanostories {c.n_layer} x {c.n_embd} ({layout_of(c)})

A {model.num_params(False) / 1e6:.1f}M-parameter decoder of nanostories' model.py ({arch}), tokenizer
{ckpt["tokenizer"]}; exported by export.py with equal logits.

- Data: TinyStories (Eldan & Li 2023, arXiv 2305.07759), license CDLA-Sharing-1.0.
- Training: `{cmd}`, {ckpt["iter_num"]} steps. Evaluation (step {ev.get("iter")}): {score}.
- Training stories start after `<|endoftext|>`: prepend its id to `input_ids` to start as sample.py does. Keep the
  prompt plus new tokens within {c.block_size}: past it nanostories slides its window, GPT-2 raises, and LLaMA / NeoX
  extrapolate RoPE to positions never trained.

```python
from transformers import pipeline
generate = pipeline("text-generation", model="PATH")
print(generate("Once upon a time", do_sample=True, temperature=0.8, top_k=200)[0]["generated_text"])
```
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
        r = compare(model, get_tokenizer(ckpt["tokenizer"]), to, args["seed"])
        print(f"max |dlogit| {r['max_dlogit']:.2e} (fp32, 4 x {model.config.block_size} random ids); greedy: "
              f"{r['greedy_same']} of {r['greedy_n']} tokens identical\npipeline story:\n{r['story']}")
