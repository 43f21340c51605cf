"""The TRL side of benches/dpo.sh (dev only: transformers, peft, datasets and trl in .venv).

    dpo.py rows FILE              writes the benchmark's preference rows (plain pairs, JSON lines)
    dpo.py train DIR FILE N       N steps of TRL's DPOTrainer (LoRA rank 16 on the seven
                                  projections, the reference the adapters off, AdamW, batch BATCH
                                  pairs, 2 threads, float32 or PRECISION=bf16 autocast: TRL's
                                  default is bf16) on the model in DIR (benches/finetune.py make);
                                  prints the mean seconds per step after the first
"""
import json
import os
import random
import sys
import tempfile
import time

import torch

B = int(os.environ.get("BATCH", "4"))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def rows(path):
    rnd = random.Random(0)
    word = lambda: "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 8)))
    with open(path, "w") as f:
        for _ in range(256):
            prompt = " ".join(word() for _ in range(12))
            chosen = " " + " ".join(word() for _ in range(10))
            rejected = " " + " ".join(word() for _ in range(11))
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")


def train(d, data, n):
    import datasets
    import peft
    import transformers
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    torch.set_num_threads(2)
    datasets.disable_progress_bars()
    tok = transformers.AutoTokenizer.from_pretrained(d)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="sdpa")
    ds = datasets.Dataset.from_list([json.loads(line) for line in open(data)])
    args = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=B, max_steps=n, learning_rate=1e-4,
                     beta=0.1, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1000,
                     dataloader_num_workers=0, lr_scheduler_type="constant",
                     bf16=os.environ.get("PRECISION", "fp32") == "bf16")
    cfg = peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS)
    times = []

    class Clock(transformers.TrainerCallback):
        """The wall time between the ends of consecutive steps: everything a step does."""

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    t = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=cfg,
                   callbacks=[Clock()])
    t.train()
    print(f"{(times[-1] - times[0]) / (len(times) - 1):.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "rows":
        rows(sys.argv[2])
    else:
        train(sys.argv[2], sys.argv[3], int(sys.argv[4]))
