"""PyTorch side of the planning benchmark: build a Llama-2-7B-shaped model on the meta device
(shapes only, nothing allocated) and count its parameters. Run by benches/plan.sh."""
import time

t0 = time.perf_counter()
import torch  # noqa: E402
from torch import nn  # noqa: E402

t_import = time.perf_counter() - t0


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))


class Block(nn.Module):
    def __init__(self, d, h, f):
        super().__init__()
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.gate = nn.Linear(d, f, bias=False)
        self.up = nn.Linear(d, f, bias=False)
        self.down = nn.Linear(f, d, bias=False)
        self.n1 = RMSNorm(d)
        self.n2 = RMSNorm(d)


class Llama(nn.Module):
    def __init__(self, vocab=32000, d=4096, layers=32, heads=32, ffn=11008):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, ffn) for _ in range(layers))
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)


t1 = time.perf_counter()
with torch.device("meta"):
    m = Llama().to(torch.bfloat16)
n = sum(p.numel() for p in m.parameters())
t_build = time.perf_counter() - t1
print(f"pytorch: import {t_import:.2f} s, meta build + count {t_build:.3f} s, parameters {n:,}")
assert n == 6_738_415_616
