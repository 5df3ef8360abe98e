# GPT-2 tokens, 6 layers x 384 wide x 6 heads, block 512, tied, GELU, dropout 0.1.
# ~30M parameters (19.3M of them the tied 50,257 x 384 embedding): NOT the paper's 33M GPT-Neo model
# (TinyStories-33M uses GPT-Neo's local attention and a 2048-token window); the name is its size class.
# A GPU config: python train.py config/tinystories_33m.py --batch_size=32
out_dir = "out-tinystories-33m"
dataset = "tinystories"
tokenizer = "gpt2"
eval_interval = 1000
eval_tokens = 200_000          # evaluations during training score the first 200k val tokens; the last scores all
log_interval = 50

# tokens per optimizer step: 16 batch x 512 block x 8 accumulation = 65,536 (x DDP ranks share the 8 micro-steps)
batch_size = 16
block_size = 512
gradient_accumulation_steps = 8

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.1
bias = True
tie_weights = True
mlp = "gelu"

learning_rate = 1e-4
weight_decay = 0.1
grad_clip = 0.5
warmup_iters = 1000            # optimizer steps
max_iters = 20_000             # 20k x 65,536 = 1.3B tokens, ~2.6 epochs of the 474M-token TinyStories train split
lr_decay_iters = 20_000
min_lr = 1e-5
