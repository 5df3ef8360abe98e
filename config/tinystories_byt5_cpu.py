# A small ByT5-style byte-level encoder-decoder for a CPU, in a 10-minute budget:
#   python train.py config/tinystories_byt5_cpu.py
#   python sample.py --out_dir=out-tinystories-byt5-cpu --start="Once upon a time"
# Far from converged at this budget (< 1 epoch of bytes on a plain-AVX2 CPU), so no dropout; depth goes to the
# decoder, which does the predicting (2+4 layers); continuation on 9 of 10 steps, as it is what sample.py asks for.
# Sized for the plain AVX2 class (fp32): a byte model learns to spell with steps, so it is narrow and takes small,
# short steps at a high rate. The runs behind each choice are in RECORDS.md.
out_dir = "out-tinystories-byt5-cpu"
dataset = "tinystories"
tokenizer = "byte"
arch = "encoder_decoder"
time_budget = 600              # seconds for the whole run: max_iters is fixed from the measured pace (train.py)
eval_interval = 250
eval_tokens = 16_384           # during training: the first 16k val bytes
final_eval_tokens = 131_072    # the last evaluation: the first 131k of val's 788k bytes (~166 stories). All of val
#                                costs ~100 s of a plain-AVX2 CPU's 600 (every 96 scored bytes re-read 128 + 32 of
#                                context); eval_only scores all of it
log_interval = 10

# bytes per optimizer step: 8 batch x 128 decoder positions = 1,024, of which 8 x 96 = 768 are predicted on a
# continuation step (dec_prefix 32 are read, not scored); span-corruption steps predict ~23 bytes per sample:
# 15% of the ~150 raw bytes behind a 128-byte encoder input, plus sentinels. Small steps, as a byte model learns to
# spell with steps: on a Zen 3 (fp32) 600 s hold ~220 steps of 16 x 256 at 256 wide (39.0% known words), ~650 of
# 8 x 256 at 192 wide (88.8-91.6%), ~1,200 of 8 x 128 (94.3%)
batch_size = 8
block_size = 128               # encoder input bytes (~2 sentences)
tgt_len = 128                  # decoder positions per continuation sample
dec_prefix = 32                # the decoder re-reads the source's last 32 bytes: without them the first bytes it
#                                wrote often finished an already whole word ("Once upon a timeee,")
gradient_accumulation_steps = 1
span_ratio = 0.1               # continuation is the task sample.py asks for: 9 of 10 micro-steps
noise_density = 0.15
mean_span = 20.0

n_enc_layer = 2
n_layer = 4
n_embd = 192                   # 3 heads of 64
n_head = 3
mlp = "geglu"
norm = "rmsnorm"
bias = False
rope = True
dropout = 0.0
tie_weights = True

optimizer = "muon"             # Muon for the blocks' matrices, AdamW for embeddings and gains (model.py)
learning_rate = 4e-3           # at 192 wide, batch 8 on a Zen 3: 4e-3 91.6% known words, 2e-3 83.9%
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 20              # the time budget plans after these steps (train.py)
max_iters = 600               # used only with --time_budget=0; the budget sets both from the pace
lr_decay_iters = 600
min_lr = 4e-4                  # learning_rate / 10
