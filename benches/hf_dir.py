"""What the benchmarks' Python sides share: saving a random model as a HuggingFace directory."""
import os
import shutil


def save_with_tokenizer(model, out):
    """Saves `model` into `out` (replacing it) with the byte-level tokenizer of the test
    fixture `tests/fixtures/hf/llama-lora-base`, so that pzt's text data can read it."""
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    here = os.path.dirname(os.path.abspath(__file__))
    tok = os.path.join(here, "..", "tests", "fixtures", "hf", "llama-lora-base")
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(tok, f), out)


def timed_steps(model, x, n):
    """Trains `model` (its parameters that require grad, AdamW) for `n` steps on the tokens `x`
    (inputs and labels) and prints the mean seconds per step after the first."""
    import time

    import torch

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    print(f"{sum(times[1:]) / max(n - 1, 1):.3f}")
