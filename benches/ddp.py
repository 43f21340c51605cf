"""The PyTorch side of benches/ddp.sh (dev only: transformers in .venv), run under torchrun.

    ddp.py DIR N    N AdamW steps of LlamaForCausalLM (SDPA attention) wrapped in
                    DistributedDataParallel over Gloo; each rank trains on its BATCH rows of one
                    global batch of random tokens; rank 0 prints the global tokens/s of steps 2..N
"""
import os
import sys
import time

import torch
import torch.distributed as dist
import transformers
from torch.nn.parallel import DistributedDataParallel


def main(d, n):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    B, T = int(os.environ["BATCH"]), int(os.environ["SEQ"])
    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    model = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="sdpa")
    model.train()
    ddp = DistributedDataParallel(model)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
    x = torch.randint(0, model.config.vocab_size, (B * world, T + 1))[rank * B:(rank + 1) * B]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = ddp(input_ids=x[:, :-1], labels=x[:, :-1]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        print(f"{B * world * T * (n - 1) / sum(times[1:]):.1f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
