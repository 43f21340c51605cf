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
