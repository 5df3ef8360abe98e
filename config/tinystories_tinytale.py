# The tiny-tale system: its own BPE vocabulary, RoPE, RMSNorm, SwiGLU, grouped-query attention with 2 key/value
# heads, gradient checkpointing; it samples with a repetition penalty of 1.5. The sizes are ours (8 layers x 512 wide
# x 8 heads, 4 query heads per key/value head; 27.1M parameters, 4.2M of them the tied 8,192 x 512 embedding).
# A GPU config: the tokenizer is trained by prepare.py on the train split, then the model:
#   python prepare.py --source=DIR --tokenizer=bpe8192
#   python train.py config/tinystories_tinytale.py
#   python sample.py --out_dir=out-tinystories-tinytale --interactive=True --repetition_penalty=1.5
out_dir = "out-tinystories-tinytale"
dataset = "tinystories"
tokenizer = "bpe8192"          # data/tinystories/bpe8192/{train,val}.bin and tokenizer.json
eval_interval = 1000
eval_tokens = 200_000
log_interval = 50

# tokens per optimizer step: 32 batch x 512 block x 4 accumulation = 65,536
batch_size = 32
block_size = 512
gradient_accumulation_steps = 4

n_layer = 8
n_head = 8
n_kv_head = 2                  # each key/value head serves 4 query heads: the KV cache is a quarter of full MHA's
n_embd = 512
rope = True
norm = "rmsnorm"
mlp = "swiglu"
bias = False
dropout = 0.0
tie_weights = True
grad_checkpoint = True         # recompute each block in backward: less activation memory, ~30% more compute

learning_rate = 5e-4
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 1000
max_iters = 20_000
lr_decay_iters = 20_000
min_lr = 5e-5
