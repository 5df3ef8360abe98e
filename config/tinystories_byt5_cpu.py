# A small ByT5-style byte-level encoder-decoder that trains in ~10 minutes on 2 CPU cores (bf16 autocast):
#   python train.py config/tinystories_byt5_cpu.py
#   python sample.py --out_dir=out-tinystories-byt5-cpu --start="Once upon a time"
out_dir = "out-tinystories-byt5-cpu"
dataset = "tinystories"
tokenizer = "byte"
arch = "encoder_decoder"
eval_interval = 200
eval_tokens = 16_384           # during training: the first 16k val bytes; the last evaluation scores all of val
log_interval = 10

# bytes per optimizer step: 16 batch x 128 decoder targets = 2,048 continuation bytes (span-corruption steps
# predict ~45 bytes per sample: 15% of the ~300 raw bytes behind a 256-byte encoder input, plus sentinels)
batch_size = 16
block_size = 256               # encoder input bytes
tgt_len = 128
gradient_accumulation_steps = 1
span_ratio = 0.25              # continuation is the task sample.py asks for: give it 3 of 4 micro-steps
noise_density = 0.15
mean_span = 20.0

n_enc_layer = 6                # ByT5's 3:1 encoder:decoder depth
n_layer = 2
n_embd = 256
n_head = 4
mlp = "geglu"
norm = "rmsnorm"
bias = False
rope = True
dropout = 0.1
tie_weights = True

learning_rate = 2e-3
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 20
max_iters = 600
lr_decay_iters = 600
min_lr = 2e-4
