# GPT-2 tokens, 8 layers x 384 wide x 6 heads, RoPE instead of learned positions, block 512.
# A GPU config: python train.py config/tinystories_rope.py
out_dir = "out-tinystories-rope"
dataset = "tinystories"
tokenizer = "gpt2"
eval_interval = 1000
eval_tokens = 200_000
log_interval = 50

# tokens per optimizer step: 32 batch x 512 block x 4 accumulation = 65,536
batch_size = 32
block_size = 512
gradient_accumulation_steps = 4

n_layer = 8
n_head = 6
n_embd = 384
dropout = 0.1
rope = True                    # rotary embeddings (Su et al. 2021): no wpe table
tie_weights = True

learning_rate = 3e-4
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 2000
max_iters = 20_000             # 1.3B tokens
lr_decay_iters = 20_000
min_lr = 3e-5
