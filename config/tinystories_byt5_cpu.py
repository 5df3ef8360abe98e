# A small ByT5-style byte-level encoder-decoder for 2 CPU cores (bf16 autocast), ~10-15 minutes:
#   python train.py config/tinystories_byt5_cpu.py
#   python sample.py --out_dir=out-tinystories-byt5-cpu --start="Once upon a time"
# Measured choices (README "Encoder-decoder"; 600 steps, full-val continuation bpb, GPU runs of this CPU config): at
# this budget the model is far from converged (< 1 epoch), so no dropout (0.1: 2.23 vs 2.18 for 6+2 layers), and
# depth goes to the decoder, which does the predicting: 6+2 layers (128 decoder bytes) 2.18, 3+3 2.08, 2+4 1.96
# (256 decoder bytes; about the same compute per step; ByT5's 3:1 encoder:decoder depth is for span corruption at
# scale); with dec_prefix, 1+5 1.98, 2+4 1.92, 3+3 1.95; span corruption on 10% of the steps rather than 25%
# (1.92 vs 2.21), as continuation is what sample.py asks for.
out_dir = "out-tinystories-byt5-cpu"
dataset = "tinystories"
tokenizer = "byte"
arch = "encoder_decoder"
eval_interval = 200
eval_tokens = 16_384           # during training: the first 16k val bytes; the last evaluation scores all of val
log_interval = 10

# bytes per optimizer step: 16 batch x 256 decoder positions = 4,096, of which 16 x 192 = 3,072 are predicted on a
# continuation step (dec_prefix 64 are read, not scored); span-corruption steps predict ~45 bytes per sample:
# 15% of the ~300 raw bytes behind a 256-byte encoder input, plus sentinels
batch_size = 16
block_size = 256               # encoder input bytes
tgt_len = 256                  # decoder positions per continuation sample
dec_prefix = 64                # the decoder re-reads the source's last 64 bytes: without them the first bytes it
#                                wrote often finished an already whole word ("Once upon a timeee,")
gradient_accumulation_steps = 1
span_ratio = 0.1               # continuation is the task sample.py asks for: 9 of 10 micro-steps
noise_density = 0.15
mean_span = 20.0

n_enc_layer = 2
n_layer = 4
n_embd = 256
n_head = 4
mlp = "geglu"
norm = "rmsnorm"
bias = False
rope = True
dropout = 0.0
tie_weights = True

learning_rate = 2e-3
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 20
max_iters = 600
lr_decay_iters = 600
min_lr = 2e-4
