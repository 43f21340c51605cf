"""The PyTorch side of benches/bigvocab.sh (dev only: transformers and peft in .venv).

    bigvocab.py make DIR            a random Qwen 3 with a 151,936-token vocabulary (hidden 256,
                                    2 layers, 4 query and 2 key/value heads of 64, MLP 768,
                                    untied head, float32) + a byte-level tokenizer
    bigvocab.py train DIR N B T     N AdamW steps of rank-16 LoRA on the seven projections, on
                                    random tokens [B, T]; prints the mean seconds per step after
                                    the first
"""
import sys

import torch
import transformers

from hf_dir import save_with_tokenizer, timed_steps

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make(out):
    torch.manual_seed(0)
    cfg = transformers.Qwen3Config(
        vocab_size=151936, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=1024,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )
    save_with_tokenizer(transformers.Qwen3ForCausalLM(cfg), out)


def train(d, n, b, t):
    import peft

    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="sdpa")
    model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
    x = torch.randint(0, 256, (b, t))
    timed_steps(model, x, n)

if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        train(sys.argv[2], *(int(a) for a in sys.argv[3:6]))
