"""The PyTorch side of benches/generate.sh (dev only: transformers in .venv).

    generate.py DIR N PROMPT_IDS...   greedy generation of exactly N new tokens with the KV cache
                                      (transformers `generate`, SDPA); prints new tokens/s, then
                                      the new ids
"""
import os
import sys
import time

import torch
import transformers

d, n, prompt = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3:]]
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
model = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="sdpa").eval()
x = torch.tensor([prompt])
best = None
for _ in range(2):  # the first call warms up
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    t = time.perf_counter() - t0
    best = t if best is None else min(best, t)
print(f"{n / best:.1f}")
print(" ".join(str(i) for i in out[0, len(prompt):].tolist()))
