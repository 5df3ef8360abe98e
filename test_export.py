"""
Export: nanostories models in transformers, safetensors and peft, and back, with equal logits (export.py, hf.py,
lora.export_lora). transformers, peft, safetensors and tokenizers are export-only dependencies: the module is skipped
without them.

    python -m pytest -q test_export.py
"""
import errno
import gzip
import json
import os
import re
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch

# skipped only where a package is absent; any other ImportError fails (a module of this repo once shadowed the
# `kernels` package that peft imports, and all of this file was skipped without a word)
pytest.importorskip("transformers", exc_type=ModuleNotFoundError)
pytest.importorskip("peft", exc_type=ModuleNotFoundError)

import peft  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import export  # noqa: E402
import hf as hf_py  # noqa: E402
from checkpoint import load_model, save_checkpoint  # noqa: E402
from lora import apply_lora, export_lora, merge_lora, save_lora  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import get_tokenizer, train_bpe  # noqa: E402

REPO = Path(__file__).resolve().parent
SHARED = REPO.parent / "shared"
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local: the hub must never be asked
VAL = REPO / "data" / "tinystories_excerpt" / "valid.txt.gz"
TOL = 1e-5  # max |dlogit| in fp32 (measured 0 to 1e-6)
TEXTS = ["Once upon a time, there was a little dragon named Spot.\nSpot liked to fly.",
         "Lily saw a castle. “Wow!” she said. Naïve café, crème brûlée, 東京, emoji 🐉🏰, a tab\there.",
         "Tom typed <|endoftext|> on the screen and laughed. It's 3.14 o'clock, isn't it?", "", "  \n\n  x"]
LAYOUT = {"gpt2": {}, "llama": dict(rope=True, norm="rmsnorm", mlp="swiglu"), "neox": dict(rope=True),
          "llama_gqa": dict(rope=True, norm="rmsnorm", mlp="swiglu", n_kv_head=1),  # 2 query heads per k/v head
          "qwen3": dict(rope=True, norm="rmsnorm", mlp="swiglu", qk_norm=True)}  # LLaMA + q/k norms, no MLP bias


@pytest.fixture(autouse=True)
def one_thread():
    # tiny matmuls run faster on one thread, and the 2 cores are shared with other jobs
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_model(tokenizer="byte", seed=0, **kw):
    """A tiny GPT with every tensor random and far from its init (norm gains ~1 +- 0.3, biases ~0.1, weights 0.1-0.3):
    a mapping that swaps, transposes or drops any tensor changes the logits by far more than TOL."""
    tok = get_tokenizer(tokenizer)
    cfg = dict(block_size=64, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32,
               pad_id=-1 if tok.pad_id is None else tok.pad_id)
    torch.manual_seed(seed)
    m = GPT(GPTConfig(**{**cfg, **kw})).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * (0.3 if name.endswith("weight") else 0.1) + name.endswith("weight"))
            else:  # lm_head rows wider than `other`, so an out_vocab model rarely prefers the shared row
                p.normal_(0.0, 0.3 if name in ("lm_head.weight", "transformer.wte.weight") else 0.1)
        if m.config.out_vocab:
            m.kept_ids.copy_(torch.randperm(tok.vocab_size)[:m.config.out_vocab].sort().values)
    return m, {"tokenizer": tokenizer, "config": {"out_dir": "out-test"}, "iter_num": 7, "best_val_loss": 2.5}


def hf_model(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def greedy_hf(hf, ids, n):
    hf.generation_config.eos_token_id = None  # all n tokens, past any EOT, as our generate without stop_ids
    return hf.generate(ids, max_new_tokens=n, do_sample=False)


CASES = [(lay, tie, bias, 0) for lay in LAYOUT for tie in (True, False) for bias in (True, False)
         if not (lay == "qwen3" and bias)]  # Qwen3's MLP has no biases
CASES += [("llama-geglu", False, True, 0), ("llama", True, False, 100), ("gpt2", False, True, 200)]


@pytest.mark.parametrize("layout,tie,bias,out_vocab", CASES)
def test_export_equals_transformers_and_imports_back(tmp_path, layout, tie, bias, out_vocab):
    kw = dict(rope=True, norm="rmsnorm", mlp="geglu") if layout == "llama-geglu" else LAYOUT[layout]
    m, ckpt = random_model(tie_weights=tie, bias=bias, out_vocab=out_vocab, **kw)
    export.export_hf(m, ckpt, str(tmp_path / "hf"), "card")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["vocab_size"] == 358 and cfg["eos_token_id"] == 256 and cfg["bos_token_id"] is None
    assert cfg["tie_word_embeddings"] == (tie and not out_vocab)  # an out_vocab head exports untied
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 256 and gen.get("bos_token_id") is None  # no BOS: not LLaMA's default 1
    hf = hf_model(tmp_path / "hf")
    x = torch.randint(0, 358, (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = m(x)[0], hf(x).logits
    assert ours.shape == theirs.shape == (3, 64, 358)
    assert ours.std() > 0.5 and (ours - theirs).abs().max() <= TOL  # non-trivial logits, equal
    ids = torch.tensor([[256, 79, 110, 99]])  # EOT "Onc"
    ref = m.generate(ids, 30, temperature=0)
    assert torch.equal(greedy_hf(hf, ids, 30), ref)  # 30 greedy tokens, HF's generate and its KV cache
    back, ck = load_model(str(tmp_path / "hf"))  # import back through checkpoint.load_model
    with torch.no_grad():
        assert (back(x)[0] - ours).abs().max() <= TOL
    assert ck["tokenizer"] == "byte" and ck["iter_num"] == 7 and ck["best_val_loss"] == 2.5
    want = {**ck["model_args"], **dict(bias=bias, tie_weights=tie and not out_vocab, out_vocab=0)}
    assert ck["model_args"] == want and back.config.mlp == m.config.mlp


def test_out_vocab_head_is_an_ordinary_full_vocab_head():
    # model.py's out_vocab head is exactly the full lm_head export writes: rows kept_ids[k] of lm_head, every other
    # row `other`. Its plain logits, its K+1-row fused loss and its gradients equal that head's full cross-entropy
    m, _ = random_model(out_vocab=50)
    m.train()
    m.transformer.drop.p = 0.0
    head = hf_py.hf_state_dict(m)["lm_head.weight"]  # (358, C)
    unseen = torch.ones(358, dtype=torch.bool)
    unseen[m.kept_ids] = False
    assert torch.equal(head[unseen], m.other.detach().expand(int(unseen.sum()), -1))
    x, y = torch.randint(0, 358, (2, 40)), torch.randint(0, 358, (2, 40))
    y[0, :3] = -1
    assert unseen[y.clamp(min=0)].any()  # some targets are unseen ids: their -log p(id) = logZ - other.x
    h = m.transformer.ln_f(m._run(m.transformer.h, *m._embed(x), None))
    with torch.no_grad():
        assert (m(x)[0] - h @ head.t()).abs().max() <= TOL
    _, loss = m(x, y, return_logits=False)  # the fused K+1-row loss
    loss.backward()
    grads = [p.grad.clone() for p in (m.other, m.transformer.h[0].attn.c_attn.weight)]
    m.zero_grad()
    full = torch.where(unseen[:, None], m.other[None], m.lm_head.weight[:358])  # the same head, with autograd
    ref = torch.nn.functional.cross_entropy(h.flatten(0, 1) @ full.t(), y.flatten(), ignore_index=-1)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 1e-5
    for g, p in zip(grads, (m.other, m.transformer.h[0].attn.c_attn.weight)):
        assert (g - p.grad).abs().max() <= 1e-6


@pytest.mark.parametrize("name", ["gpt2", "byte", "bpe4096"])
def test_tokenizer_ids_equal_ours(tmp_path, name):
    """A transformers tokenizer from the export's files gives our ids on all 1,000 validation stories; for a BPE of
    ours, trained on the shipped train split, AutoTokenizer loads its tokenizer.json offline."""
    stories = lambda f: [s.strip() for s in gzip.open(f, "rt", encoding="utf-8").read().split("<|endoftext|>")]
    tok = get_tokenizer(name) if not name.startswith("bpe") else get_tokenizer(name, train_bpe(
        stories(VAL.with_name("train-000.txt.gz")), 4096))
    hf_py.hf_tokenizer(tok, 256).save_pretrained(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    texts = list(TEXTS)
    if VAL.exists():  # the genuine shared val stories
        texts += [s.strip() for s in gzip.open(VAL, "rt", encoding="utf-8").read().split("<|endoftext|>")]
    ids = hf(texts, add_special_tokens=False)["input_ids"]
    assert ids == tok.encode_batch(texts)  # also: "<|endoftext|>" inside a story is text, not EOT
    assert [hf.decode(i) for i in ids[:len(TEXTS)]] == TEXTS
    assert hf.eos_token_id == tok.eot_id and len(hf) == tok.vocab_size
    assert hf.decode([tok.eot_id] + ids[0], skip_special_tokens=True) == TEXTS[0]
    if name == "byte":
        assert hf.pad_token_id == 257 and hf.convert_tokens_to_ids("<|sentinel_99|>") == 357


@pytest.mark.parametrize("layout", ["gpt2", "llama", "neox", "llama_gqa"])
def test_lora_adapter_in_peft_equals_ours(tmp_path, layout):
    m, ckpt = random_model(tie_weights=False, **LAYOUT[layout])
    save_checkpoint(str(tmp_path / "base.pt"), m, "byte", ckpt["config"], iter_num=7)
    export.export_hf(m, ckpt, str(tmp_path / "hf"))
    apply_lora(m, r=4, alpha=8.0, dropout=0.0, targets=("c_attn", "mlp.c_fc", "attn.c_proj")).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.1)  # B = 0 at init would make any mapping of B pass
    save_lora(str(tmp_path / "lora.pt"), m, "byte", {}, base=str(tmp_path / "base.pt"))
    export_lora(str(tmp_path / "lora.pt"), str(tmp_path / "peft"))
    assert (tmp_path / "peft" / "adapter_model.safetensors").exists()
    x = torch.randint(0, 358, (2, 64), generator=torch.Generator().manual_seed(2))
    pm = peft.PeftModel.from_pretrained(hf_model(tmp_path / "hf"), str(tmp_path / "peft")).eval()
    with torch.no_grad():
        ours, theirs = m(x)[0], pm(input_ids=x).logits
        assert (ours - theirs).abs().max() <= TOL
        with pm.disable_adapter():
            assert (pm(input_ids=x).logits - ours).abs().max() > 1e-2  # the adapter changes the logits
        merged = pm.merge_and_unload()(x).logits
        assert (merge_lora(m)(x)[0] - merged).abs().max() <= TOL


def test_qwen3_export_with_learned_qk_gains_is_refused_on_import(tmp_path):
    m, ckpt = random_model(**LAYOUT["qwen3"], bias=False)
    export.export_hf(m, ckpt, str(tmp_path / "hf"))
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "qwen3"
    hf = hf_model(tmp_path / "hf")
    with torch.no_grad():
        hf.model.layers[1].self_attn.k_norm.weight.mul_(1.5)  # learned gains: model.py's qk_norm has none
    hf.save_pretrained(tmp_path / "gains")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tmp_path / "hf" / f, tmp_path / "gains" / f)
    with pytest.raises(SystemExit, match="q_norm / k_norm gains are learned"):
        load_model(str(tmp_path / "gains"))


def test_native_safetensors_round_trip_encoder_decoder(tmp_path):
    m, ckpt = random_model(arch="encoder_decoder", n_enc_layer=2, rope=True, norm="rmsnorm", mlp="swiglu")
    with pytest.raises(SystemExit, match="no transformers class.*supported are.*--format=nanostories"):
        export.export_hf(m, ckpt, str(tmp_path / "hf"))
    export.export_native(m, ckpt, str(tmp_path / "st"))
    assert "lm_head.weight" not in load_file(tmp_path / "st" / "model.safetensors")  # tied: stored once
    back, ck = load_model(str(tmp_path / "st"))
    assert back.lm_head.weight is back.transformer.wte.weight  # re-tied on load
    src, idx = torch.randint(0, 358, (2, 20)), torch.randint(0, 358, (2, 9))
    with torch.no_grad():
        assert torch.equal(back(idx, src=src)[0], m(idx, src=src)[0])
    assert ck["model_args"] == m.config.__dict__ and ck["tokenizer"] == "byte" and ck["iter_num"] == 7


def write_foreign(path, cls_config, tokenizer="gpt2", **kw):
    """A transformers model made by transformers (random init) + a tokenizer: a folder nanostories did not write."""
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(getattr(transformers, cls_config)(**kw)).eval()
    hf.save_pretrained(path)
    hf_py.hf_tokenizer(tokenizer, 64).save_pretrained(path)
    return hf


def test_import_foreign_folders_and_refusals(tmp_path):
    small = dict(vocab_size=358, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64)
    hf = write_foreign(tmp_path / "llama", "LlamaConfig", "byte", attention_bias=True, **small)
    with torch.no_grad():
        for n, p in hf.named_parameters():
            p.add_(torch.randn_like(p) * 0.1)  # HF's init leaves biases and gains trivial
    hf.save_pretrained(tmp_path / "llama")
    ck = hf_py.read_dir(str(tmp_path / "llama"))  # what train.py's init_from=DIR needs
    assert {"model", "model_args", "tokenizer", "config", "iter_num", "best_val_loss"} <= ck.keys()
    ours, _ = load_model(str(tmp_path / "llama"))
    assert ours.config.bias and ours.config.mlp == "swiglu" and ck["tokenizer"] == "byte"
    x = torch.randint(0, 358, (2, 64))
    with torch.no_grad():
        assert (ours(x)[0] - hf(x).logits).abs().max() <= TOL
    refused = [("gelu_new", "GPT2Config", dict(vocab_size=358, n_embd=32, n_layer=1, n_head=2, n_positions=64)),
               ("head_dim=8", "LlamaConfig", {**small, "head_dim": 8}),  # heads narrower than hidden / heads
               ("use_parallel_residual", "GPTNeoXConfig", small),
               ("vocab_size=50257", "LlamaConfig", {**small, "vocab_size": 50257}),  # byte tokenizer, GPT-2 vocab
               ("model_type 'opt' is not supported", "OPTConfig", dict(vocab_size=358, hidden_size=32, ffn_dim=64,
                                                                       num_hidden_layers=1, num_attention_heads=2))]
    for i, (match, cls, kw) in enumerate(refused):
        write_foreign(tmp_path / f"bad{i}", cls, "byte", **kw)
        with pytest.raises(SystemExit, match=match):
            load_model(str(tmp_path / f"bad{i}"))
    with pytest.raises(SystemExit, match="supported are decoders with learned wpe"):
        hf_py.layout_of(GPTConfig(norm="rmsnorm"))  # learned positions + RMSNorm: no transformers class


def run_script(monkeypatch, script, *args):
    """python script args..., in this process (a fresh interpreter would spend seconds importing transformers)."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(REPO / script), run_name="__main__")


def test_cli_export_check_and_lora_export(tmp_path, monkeypatch, capsys):
    # the README's commands: export.py --check prints max |dlogit|, greedy agreement and a pipeline story, on the
    # quick start's layout (GPT-2 tokens, out_vocab, RoPE + RMSNorm + SwiGLU); lora.py --export writes peft's files
    m, ckpt = random_model("gpt2", out_vocab=300, rope=True, norm="rmsnorm", mlp="swiglu", bias=False)
    save_checkpoint(str(tmp_path / "ckpt.pt"), m, "gpt2", ckpt["config"], iter_num=7, best_val_loss=2.5)
    run_script(monkeypatch, "export.py", f"--out_dir={tmp_path}", "--check=True")
    out = capsys.readouterr().out
    assert float(out.split("max |dlogit| ")[1].split()[0]) <= TOL and "greedy: 59 of 59 tokens identical" in out
    assert "pipeline story:\nOnce upon a time" in out
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "CDLA-Sharing-1.0" in card and "val loss 2.5000" in card and "(llama)" in card
    apply_lora(m, r=2, alpha=4.0, dropout=0.0)
    save_lora(str(tmp_path / "lora.pt"), m, "gpt2", {}, base=str(tmp_path / "ckpt.pt"))
    run_script(monkeypatch, "lora.py", f"--export={tmp_path / 'lora.pt'}", f"--to={tmp_path / 'peft'}")
    adapter = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert adapter["r"] == 2 and adapter["lora_alpha"] == 4.0 and len(adapter["target_modules"]) == 6  # q/k/v x 2


def test_export_never_deletes_what_it_did_not_write(tmp_path, monkeypatch, capsys):
    """An export writes a new folder, or replaces one that an export wrote; a file, a user's folder or a training run's
    out_dir at --to is refused in one line and left byte for byte; a full disk leaves nothing partial."""
    m, ckpt = random_model(**LAYOUT["llama"])
    save_checkpoint(str(tmp_path / "run" / "ckpt.pt"), m, "byte", ckpt["config"], iter_num=7)
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine too")
    snapshot = lambda: {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    before = snapshot()
    for to, what in [("afile", "a file"), ("mine", "a folder of files that no export wrote"),
                     ("run", "a folder of files that no export wrote")]:
        for write in (lambda d: export.export_hf(m, ckpt, d), lambda d: export.export_native(m, ckpt, d)):
            with pytest.raises(SystemExit, match=f"{tmp_path / to} is {what}: nothing was written or deleted"):
                write(str(tmp_path / to))
    assert snapshot() == before
    apply_lora(m, r=2, alpha=4.0, dropout=0.0)
    save_lora(str(tmp_path / "run" / "lora.pt"), m, "byte", {}, base=str(tmp_path / "run" / "ckpt.pt"))
    before = snapshot()
    with pytest.raises(SystemExit, match="mine is a folder of files that no export wrote"):
        export_lora(str(tmp_path / "run" / "lora.pt"), str(tmp_path / "mine"))
    assert snapshot() == before
    run_script(monkeypatch, "export.py", f"--out_dir={tmp_path / 'run'}")  # -> run/hf, then again: its own folder
    run_script(monkeypatch, "export.py", f"--out_dir={tmp_path / 'run'}")
    (tmp_path / "run" / "hf" / "my_eval.json").write_text("{}")  # a file of the user's in the export: kept
    with pytest.raises(SystemExit, match="hf is a folder of files that no export wrote"):
        run_script(monkeypatch, "export.py", f"--out_dir={tmp_path / 'run'}")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("safetensors.torch.save_file", full)
    with pytest.raises(SystemExit, match=r"could not write .*st \(disk full\): it needs about \d+ MB free there; "
                                         r"nothing was written"):
        export.export_native(m, ckpt, str(tmp_path / "st"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("st")]
    with pytest.raises(SystemExit) as e:
        run_script(monkeypatch, "export.py", "--help")
    assert e.value.code == 0 and re.search(r"--to=''\s+the folder to write", capsys.readouterr().out)


def test_broken_hf_folders_are_named(tmp_path):
    """A transformers folder with its weights cut short or its tokenizer files missing: one line naming the file."""
    small = dict(vocab_size=358, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64)
    write_foreign(tmp_path / "notok", "LlamaConfig", "byte", **small)
    for f in os.listdir(tmp_path / "notok"):
        if f.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            os.remove(tmp_path / "notok" / f)
    with pytest.raises(SystemExit, match="notok has no tokenizer files"):
        load_model(str(tmp_path / "notok"))
    write_foreign(tmp_path / "cut", "LlamaConfig", "byte", **small)
    data = (tmp_path / "cut" / "model.safetensors").read_bytes()
    (tmp_path / "cut" / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(SystemExit, match="cut/model.safetensors is truncated or corrupt"):
        load_model(str(tmp_path / "cut"))


T5 = dict(arch="encoder_decoder", n_enc_layer=2, rel_buckets=8, rel_max_distance=20, norm="rmsnorm", bias=False,
          tie_weights=False, tgt_len=32, dec_prefix=8)


@pytest.mark.parametrize("mlp", ["geglu", "geglu_tanh", "swiglu"])
def test_t5_export_equals_ours_generates_the_same_and_imports_back(tmp_path, mlp):
    """The encoder-decoder with T5 buckets as T5ForConditionalGeneration + ByT5Tokenizer: equal logits on our ids with
    padded sources, HF's greedy continuation equal to ours, and the folder read back to the same model."""
    m, ckpt = random_model(mlp=mlp, **T5)
    for t in (m.transformer.rel_bias, m.transformer.enc_rel_bias):
        torch.nn.init.normal_(t.weight, std=1.0)  # a bias far from its small init: a wrong bucket shows
    export.export_hf(m, ckpt, str(tmp_path / "t5"))
    assert json.loads((tmp_path / "t5" / "config.json").read_text())["model_type"] == "t5"
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "t5")
    text = "Once upon a time, Lily said: “Naïve café!” 東京 🐉"
    assert type(hf_tok).__name__ == "ByT5Tokenizer" and hf_tok(text, add_special_tokens=False).input_ids == [
        b + 3 for b in text.encode()]  # ByT5's ids: our bytes + 3
    r = export.compare_t5(m, get_tokenizer("byte"), str(tmp_path / "t5"))
    assert r["max_dlogit"] <= TOL and r["greedy_same"] == r["greedy_n"] == 32 - 1 - 8, r
    back, ck = load_model(str(tmp_path / "t5"))
    src, dec = torch.randint(0, 256, (2, 64)), torch.randint(0, 256, (2, 32))
    src[0, 40:] = 257  # padding
    with torch.no_grad():
        assert back.config == m.config and torch.equal(back(dec, src=src)[0], m(dec, src=src)[0])
    assert ck["tokenizer"] == "byte" and ck["iter_num"] == 7


def test_foreign_t5_folder_imports_with_equal_logits_and_lora_exports_to_peft(tmp_path):
    """A T5 (ByT5 tokenizer) that transformers made, not this repo: read as our encoder-decoder with HF's logits;
    then a LoRA adapter on it exported for peft computes what ours does."""
    import transformers
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=384, d_model=32, d_kv=16, d_ff=48, num_layers=2, num_decoder_layers=1,
                                num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0)
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        hf.shared.weight.mul_(0.1)  # T5 initialises its embedding at std 1: logits of ~10, where fp32 sums differ
    hf.save_pretrained(tmp_path / "byt5")
    transformers.ByT5Tokenizer().save_pretrained(tmp_path / "byt5")
    ours, ck = load_model(str(tmp_path / "byt5"))
    assert ours.config.mlp == "geglu_tanh" and ours.config.n_layer == 1 and ck["tokenizer"] == "byte"
    src, dec = torch.randint(0, 256, (2, 20)), torch.randint(0, 256, (2, 12))
    to_hf = lambda t: t + 3  # bytes only here: ByT5's id is the byte + 3
    with torch.no_grad():
        theirs = hf(input_ids=to_hf(src), decoder_input_ids=to_hf(dec)).logits[..., 3:259]
        assert (ours(dec, src=src)[0][..., :256] - theirs).abs().max() <= TOL
    save_checkpoint(str(tmp_path / "base.pt"), ours, "byte", {}, iter_num=1)
    apply_lora(ours, r=4, alpha=8.0, dropout=0.0, targets=("c_attn", "c_q", "c_kv", "mlp.c_fc"))
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.1)
    save_lora(str(tmp_path / "lora.pt"), ours, "byte", {}, base=str(tmp_path / "base.pt"))
    export_lora(str(tmp_path / "lora.pt"), str(tmp_path / "peft"))
    pm = peft.PeftModel.from_pretrained(transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "byt5"),
                                        str(tmp_path / "peft")).eval()
    with torch.no_grad():
        theirs = pm(input_ids=to_hf(src), decoder_input_ids=to_hf(dec)).logits[..., 3:259]
        assert (ours.eval()(dec, src=src)[0][..., :256] - theirs).abs().max() <= TOL
