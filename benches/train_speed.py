"""The PyTorch side of benches/train_speed.sh (dev only: transformers in .venv).

    train_speed.py make DIR SIZE    a random Llama of SIZE (small or large, the issue's two cases),
                                    or a random Qwen 3 (qwen3: the small case's sizes with 4 KV
                                    heads, QK-norm and head_dim 32), or a random Qwen3-MoE (qwen3-moe:
                                    the same attention, 8 experts of 256, 2 per token), with a
                                    byte-level tokenizer, saved as a HF directory
    train_speed.py train DIR N      N AdamW steps of LlamaForCausalLM (SDPA attention) on random
                                    tokens [BATCH, SEQ]; prints the tokens/s of steps 2..N
"""
import os
import sys
import time

import torch
import transformers

from hf_dir import save_with_tokenizer

SIZES = {
    # layers, hidden, heads, MLP, vocab
    "small": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=8, intermediate_size=688, vocab_size=4096),
    "large": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=2048, vocab_size=8192),
}


def make(out, size):
    torch.manual_seed(0)
    if size == "qwen3-moe":
        # The small case's attention and 8 experts of 256, 2 per token, every layer; the
        # load-balancing loss on (transformers adds it with output_router_logits).
        cfg = transformers.Qwen3MoeConfig(num_key_value_heads=4, head_dim=32, max_position_embeddings=1024,
                                          bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                                          num_experts=8, num_experts_per_tok=2, moe_intermediate_size=256,
                                          norm_topk_prob=True, output_router_logits=True, **SIZES["small"])
        save_with_tokenizer(transformers.Qwen3MoeForCausalLM(cfg), out)
        return
    if size == "qwen3":
        cfg = transformers.Qwen3Config(num_key_value_heads=4, head_dim=32, max_position_embeddings=1024,
                                       bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, **SIZES["small"])
        save_with_tokenizer(transformers.Qwen3ForCausalLM(cfg), out)
        return
    kw = SIZES[size]
    cfg = transformers.LlamaConfig(num_key_value_heads=kw["num_attention_heads"], max_position_embeddings=1024,
                                   bos_token_id=1, eos_token_id=2, **kw)
    model = transformers.LlamaForCausalLM(cfg)
    save_with_tokenizer(model, out)


def train(d, n):
    B, T = int(os.environ["BATCH"]), int(os.environ["SEQ"])
    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    kw = {}
    if os.environ.get("EXPERTS"):
        # A mixture of experts: transformers' experts implementation (`eager` loops over them).
        kw["experts_implementation"] = os.environ["EXPERTS"]
    model = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="sdpa", **kw)
    print("experts:", getattr(model.config, "_experts_implementation", None), file=sys.stderr)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, model.config.vocab_size, (B, T + 1))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = model(input_ids=x[:, :-1], labels=x[:, :-1]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    print(f"{B * T * (n - 1) / sum(times[1:]):.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    else:
        train(sys.argv[2], int(sys.argv[3]))
