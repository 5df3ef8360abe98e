# The smalllm system: a BPE vocabulary of 16K trained on TinyStories, 8 layers x 384 wide x 6 heads, context 512,
# RoPE, GELU, pre-norm LayerNorm (~20-30M parameters; here 21.7M: 6.3M of them the tied 16,384 x 384 embedding).
# A GPU config: the tokenizer is trained by prepare.py on the train split, then the model:
#   python prepare.py --source=DIR --tokenizer=bpe16384      # DIR: the release files (or none: the HF hub)
#   python train.py config/tinystories_smalllm.py
#   python sample.py --out_dir=out-tinystories-smalllm --interactive=True --repetition_penalty=1.2
out_dir = "out-tinystories-smalllm"
dataset = "tinystories"
tokenizer = "bpe16384"         # data/tinystories/bpe16384/{train,val}.bin and tokenizer.json
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
rope = True
norm = "layernorm"
mlp = "gelu"
dropout = 0.1
tie_weights = True

learning_rate = 6e-4
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 1000
max_iters = 20_000             # 1.3B tokens
lr_decay_iters = 20_000
min_lr = 6e-5
