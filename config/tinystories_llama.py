# A LLaMA-style decoder on GPT-2 tokens: RoPE + RMSNorm + SwiGLU, no biases.
# 8 layers x 512 wide x 8 heads; SwiGLU hidden = 8/3 x 512 rounded up to 64 = 1408.
# A GPU config: python train.py config/tinystories_llama.py
out_dir = "out-tinystories-llama"
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
n_head = 8
n_embd = 512
dropout = 0.0
bias = False
rope = True
norm = "rmsnorm"
mlp = "swiglu"
tie_weights = True

learning_rate = 5e-4
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 1000
max_iters = 20_000
lr_decay_iters = 20_000
min_lr = 5e-5
