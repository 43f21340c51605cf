"""The PyTorch side of benches/gpu.sh (runs on a lent GPU machine, whose image has transformers
and peft; or on the CPU with SHAPE=tiny, to try the script).

    gpu.py make DIR SHAPE              a random Llama (tinyllama: 22 layers, d2048, 32 query / 4 KV
                                       heads, MLP 5632, vocab 32000; tiny: 2 layers, d64) with a
                                       byte-level tokenizer, saved in bfloat16
    gpu.py train DIR MODE STEPS DEV    MODE eager | compile | peft: LlamaForCausalLM (SDPA), float32
                                       parameters under bfloat16 autocast, fused AdamW (peft: LoRA r16,
                                       alpha 32 on all seven projections); prints
                                       "tokens_per_s peak_GiB" over steps 3..STEPS
    gpu.py flops DIR SEQ               training FLOPs per token (6 N + 12 L d T, N without embeddings)
"""
import os
import sys
import time

import torch
import transformers

from hf_dir import save_with_tokenizer

SHAPES = {
    "tinyllama": dict(num_hidden_layers=22, hidden_size=2048, num_attention_heads=32, num_key_value_heads=4,
                      intermediate_size=5632, vocab_size=32000),
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=512),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make(out, shape):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
                                   rms_norm_eps=1e-5, **SHAPES[shape])
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    save_with_tokenizer(model, out)


def flops(d, seq):
    c = transformers.AutoConfig.from_pretrained(d)
    h, L, f, v = c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size
    kv = h // c.num_attention_heads * c.num_key_value_heads
    n = L * (2 * h * h + 2 * h * kv + 3 * h * f) + h * v  # lm_head counts, the embedding does not
    print(6 * n + 12 * L * h * seq)


def train(d, mode, n, dev):
    B, T = int(os.environ.get("BATCH", "8")), int(os.environ.get("SEQ", "1024"))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="sdpa",
                                                              torch_dtype=torch.float32).to(dev)
    if mode == "peft":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=(dev == "cuda"))
    fwd = torch.compile(model) if mode == "compile" else model
    x = torch.randint(0, model.config.vocab_size, (B, T), device=dev)
    cuda = dev == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    times = []
    for i in range(n):
        if i == 2 and cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device_type=dev, dtype=torch.bfloat16):
            loss = fwd(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    print(f"{B * T * (n - 2) / sum(times[2:]):.1f} {peak:.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "flops":
        flops(sys.argv[2], int(sys.argv[3]))
    else:
        train(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
