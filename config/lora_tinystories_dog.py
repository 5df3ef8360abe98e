# LoRA fine-tune of the quick-start model on the stories about dogs (lora.py; Hu et al. 2021, arXiv 2106.09685):
#   python prepare.py --source=data/tinystories_excerpt --filter='(?i)\b(dogs?|pupp(y|ies))\b' --name=tinystories_dog \
#       --tokenizer=bpe4096 --tokenizer_from=data/tinystories/bpe4096     # the base's tokenizer, not a new one
#   python train.py config/lora_tinystories_dog.py
# The architecture comes from init_from; only the adapters train, and only they are saved (out_dir/lora.pt).
init_from = "out-tinystories-cpu/ckpt.pt"  # the base model: read, never written
out_dir = "out-lora-dog"
dataset = "tinystories_dog"    # 142 train stories; val: the 67 dog stories of the val file
tokenizer = "bpe4096"          # the quick start's
eval_interval = 50
eval_tokens = 0                # the theme's val split is only ~14k tokens: score all of it every time
log_interval = 10

lora_r = 8                     # rank of each update B A
lora_alpha = 16.0              # the update is scaled by alpha / r = 2
lora_dropout = 0.05            # on the LoRA path's input only
lora_targets = "c_attn"        # the fused q/k/v projection of every layer (see apply_lora's NOTE)

# tokens per optimizer step: 8 batch x 256 block = 2,048, so ~17 steps per epoch of the theme's train split
batch_size = 8
block_size = 256               # at most the base's block_size
dropout = 0.0

learning_rate = 1e-3           # adapters start at zero and are few: a higher rate than pretraining's
weight_decay = 0.0             # decay would pull B A back towards the base
warmup_iters = 20
max_iters = 150                # 307k tokens, ~9 epochs of the theme: in a 300-step run the theme val loss had stopped
lr_decay_iters = 150           # falling by step 100
min_lr = 1e-4
