"""benches/qlora.sh's model (dev only: transformers in .venv).

    qlora.py make DIR   a random Llama of 12 layers x d1024 (16 heads of 64, MLP 2816, vocab
                        32000, untied head) in bfloat16, with a byte-level tokenizer
"""
import sys

import torch
import transformers

from hf_dir import save_with_tokenizer


def make(out):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=12,
        num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=1024,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )
    save_with_tokenizer(transformers.LlamaForCausalLM(cfg).to(torch.bfloat16), out)


if __name__ == "__main__":
    make(sys.argv[2])
