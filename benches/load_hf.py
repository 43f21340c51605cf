"""Loading benchmark helper (dev only: needs `transformers` in .venv).

  python benches/load_hf.py make DIR     writes a random Llama checkpoint of ~0.5 GB (fp32)
  python benches/load_hf.py load DIR     loads it with transformers and runs 8 tokens
"""
import sys
import time

import torch
import transformers

cmd, d = sys.argv[1], sys.argv[2]
if cmd == "make":
    cfg = transformers.LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                                   num_attention_heads=16, num_key_value_heads=4)
    with torch.no_grad():
        m = transformers.LlamaForCausalLM(cfg)
    m.save_pretrained(d)
    print("parameters", sum(p.numel() for p in m.parameters()))
else:
    t0 = time.perf_counter()
    m = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        m(torch.arange(1, 9)[None]).logits
    print(f"transformers load + 8-token forward: {time.perf_counter() - t0:.2f} s")
