"""The PyTorch side of benches/finetune.sh (dev only: transformers and peft in .venv).

    finetune.py make DIR          a random Llama (hidden 768, 4 layers, vocab 128) + tokenizer
    finetune.py train DIR MODE N  N AdamW steps on random tokens [BATCH, SEQ] (default 4, 128); MODE is full, lora,
                                  full-ckpt or lora-ckpt (ckpt: gradient checkpointing of each
                                  decoder layer); prints the mean seconds per step after the first
"""
import os
import sys

import torch
import transformers

from hf_dir import save_with_tokenizer, timed_steps

B, T = int(os.environ.get("BATCH", "4")), int(os.environ.get("SEQ", "128"))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make(out):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=128, hidden_size=768, intermediate_size=2048, num_hidden_layers=4,
        num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(cfg)
    save_with_tokenizer(model, out)


def train(d, mode, n):
    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    model = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="sdpa")
    if mode.startswith("lora"):
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
    if mode.endswith("ckpt"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if mode.startswith("lora"):
            model.enable_input_require_grads()
    x = torch.randint(0, 128, (B, T))
    timed_steps(model, x, n)

if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        train(sys.argv[2], sys.argv[3], int(sys.argv[4]))
