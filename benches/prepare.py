"""The corpus and the Python side of benches/prepare.sh (dev only: `tokenizers` and numpy in
.venv, as transformers brings them).

    prepare.py make DIR MB       write MB megabytes of text as 16 MB files DIR/part-NNN.txt
    prepare.py tokenize DIR TOK  tokenize every file with the `tokenizers` library
                                 (encode_batch over lines, all threads) into one uint16
                                 memory-mapped array, as a Python data pipeline would
"""
import glob
import os
import random
import sys
import time


def make(d, mb):
    os.makedirs(d, exist_ok=True)
    rng = random.Random(0)
    words = [("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))))
             for _ in range(5000)]
    per = 16 << 20
    for i in range((mb << 20) // per):
        with open(os.path.join(d, f"part-{i:03d}.txt"), "w") as f:
            n = 0
            while n < per:
                line = " ".join(rng.choices(words, k=14)) + ".\n"
                f.write(line)
                n += len(line)


def tokenize(d, tok_path):
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tok_path)
    t0 = time.time()
    out = np.lib.format.open_memmap(os.path.join(d, "py-tokens.npy"), mode="w+", dtype=np.uint16, shape=(3 << 30,))
    n = 0
    for f in sorted(glob.glob(os.path.join(d, "part-*.txt"))):
        text = open(f).read()
        for enc in tok.encode_batch(text.splitlines(keepends=True)):
            ids = enc.ids
            out[n:n + len(ids)] = ids
            n += len(ids)
    out.flush()
    print(f"{n} tokens in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        tokenize(sys.argv[2], sys.argv[3])
