# A byte-level encoder-decoder with ByT5's architecture (Xue et al. 2021, arXiv 2105.13626; T5 v1.1): T5's relative
# position buckets (32, max distance 128, one table per stack), RMSNorm, no biases, a gated GELU (its tanh form, T5's
# "gated-gelu"), untied input and output embeddings, so it exports as T5ForConditionalGeneration (export.py). The
# sizes of ByT5-small: 12 encoder / 4 decoder layers (ByT5's 3:1 depth), width 1472, a 3,584 hidden layer, dropout
# 0.1. ByT5 has 6 heads of 64 (inner width 384); heads here span the whole width: 23 x 64 = 1472.
# Trained on a mix of span corruption (15% noise, mean span 20 bytes) and prefix-LM continuation, which is what
# sample.py asks of it (trained on span corruption alone, it sampled sentinels instead of stories).
# A GPU config: python train.py config/tinystories_byt5.py
out_dir = "out-tinystories-byt5"
dataset = "tinystories"
tokenizer = "byte"
arch = "encoder_decoder"
eval_interval = 1000
eval_tokens = 500_000
log_interval = 50

# bytes per optimizer step: 32 batch x 1024 encoder bytes x 8 accumulation = 262,144 = 2^18 bytes a step
batch_size = 32
block_size = 1024              # encoder input bytes
tgt_len = 256                  # continuation bytes the decoder predicts per sample
gradient_accumulation_steps = 8
span_ratio = 0.5               # half the micro-steps span corruption, half continuation
noise_density = 0.15
mean_span = 20.0

n_enc_layer = 12
n_layer = 4
n_embd = 1472
n_head = 23
mlp = "geglu_tanh"
mlp_hidden = 3584
norm = "rmsnorm"               # T5 uses RMSNorm without biases
bias = False
rel_buckets = 32               # T5's relative positions
rel_max_distance = 128
dropout = 0.1
tie_weights = False            # ByT5 unties them

learning_rate = 3e-4
weight_decay = 0.1
grad_clip = 1.0                # gradient-norm spikes stopped earlier runs of this size: clip them
warmup_iters = 1000
max_iters = 20_000
lr_decay_iters = 20_000
min_lr = 3e-5
