#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (not committed) from
the repository's own files; see FUZZING.md. Run from the repository root:
    python3 fuzz/make_seeds.py [CHECKPOINT_DIR...]
CHECKPOINT_DIRs (pzt checkpoint directories, e.g. made by a 4-step `pzt train`) add their
state.json files to the state_json seeds."""
import glob, json, os, re, struct, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("SEEDS_OUT", os.path.join(ROOT, "fuzz", "corpus"))
n = {}


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, re.sub(r"[^A-Za-z0-9_.-]", "_", name)), "wb") as f:
        f.write(data)
    n[target] = n.get(target, 0) + 1


def read(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


# recipe: the shipped recipes and model configs, their paths pointed at the fixtures that the
# target lays out next to the fuzzed recipe (model.toml, hf/, ckpt/, tokenizer.json, data.txt).
def relocate(t):
    t = t.replace('"../configs/models/tiny-transformer.toml"', '"model.toml"')
    t = re.sub(r'"\.\./tests/fixtures/hf/[a-z0-9-]+/tokenizer.json"', '"hf/tokenizer.json"', t)
    t = re.sub(r'"\.\./tests/fixtures/hf/[a-z0-9-]+"', '"hf"', t)
    t = t.replace('"../tests/fixtures/chat.jsonl"', '"chat.jsonl"')
    return t


for p in sorted(glob.glob(os.path.join(ROOT, "recipes", "*.toml"))):
    t = open(p).read()
    if "llama2-7b.toml" in t:
        t = t.replace('include = ["../configs/models/llama2-7b.toml"]\n', "") + "\n" + read(
            "configs/models/llama2-7b.toml").decode()
    put("recipe", os.path.basename(p), relocate(t))
for p in sorted(glob.glob(os.path.join(ROOT, "configs", "models", "*.toml"))):
    put("recipe", "config-" + os.path.basename(p), open(p).read())
for p in sorted(glob.glob(os.path.join(ROOT, "tests", "golden", "*.toml"))):
    put("recipe", "golden-" + os.path.basename(p), relocate(open(p).read()))
put("recipe", "softcap-set.toml", "#set model.input.axes.seq=128\n#set run.name=\"other\"\n"
    + relocate(read("recipes/tiny-transformer-softcap.toml").decode()))
put("recipe", "from-checkpoint.toml",
    '[run]\nname = "again"\n[model]\ncheckpoint = "ckpt"\n[[patch]]\nselect = "Affine"\n'
    'action = "freeze"\n[strategy]\nkind = "lora"\n[strategy.lora]\nrank = 2\n')
put("recipe", "text-data.toml",
    read("recipes/mlp.toml").decode().replace('input = { axes = { batch = 32, features = 4 }, dtype = "float32" }\n', "")
    + '\n[data]\nsource = "text"\nfiles = ["data.txt"]\ntokenizer = "tokenizer.json"\nseq_len = 8\n'
    '[train]\nsteps = 2\nbatch_size = 2\n[optim]\nkind = "sgd"\nlr = 0.1\nmomentum = 0.9\n'
    '[checkpoint]\nevery_steps = 1\nkeep_last = 1\n')
put("recipe", "hf-lora.toml",
    '[model]\nhf = "hf"\ninput = { axes = { batch = 2, seq = 8 }, dtype = "int64" }\n'
    '[[patch]]\nselect = "Attention"\naction = "checkpoint"\n'
    '[strategy]\nkind = "lora"\n[strategy.lora]\ntargets = ["q_proj", "v_proj"]\nrank = 4\nalpha = 8.0\n'
    '[data]\nsource = "chat"\nfiles = ["chat.jsonl"]\nseq_len = 64\n')

# selector
for i, s in enumerate([
    "Attention Linear", "Attention > input_to_query", "blocks.*.mlp", "blocks.1.attention",
    "Linear[0]", "Linear[-1]", "Linear", "blocks.**.down", "Nope", "Attention >",
    "Attention > query_key_to_attn > ContractTogether", "Attention > query_key_to_attn > *",
    "lm_head > *", "lm_head", "TanhSoftCap", "blocks.*", "blocks.*.mlp.**.down", "embed",
    "final_norm", "LowRankAdapter", "Sequential > > Identity", "Linear[", "Linear[x]", "**",
    "layers.0.self_attn", "Linear[-100]", "Residual > delta > Sequential[1] Linear[2]",
    "**.weights", "a..b", "*x", "Sequential Attention > input_to_key > RenameAxes[0]",
]):
    put("selector", "sel-%02d" % i, s)

# hf_config
for p in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "hf", "*", "config.json"))):
    put("hf_config", os.path.basename(os.path.dirname(p)) + ".json", read(os.path.relpath(p, ROOT)))

# safetensors_header: valid checkpoints of the target's tiny Llama (config in the target), in
# the supported dtypes and with the usual mistakes, and the headers of the repository's files.
TINY = [
    ("model.embed_tokens.weight", [16, 8]),
    ("model.layers.0.self_attn.q_proj.weight", [8, 8]),
    ("model.layers.0.self_attn.k_proj.weight", [4, 8]),
    ("model.layers.0.self_attn.v_proj.weight", [4, 8]),
    ("model.layers.0.self_attn.o_proj.weight", [8, 8]),
    ("model.layers.0.mlp.gate_proj.weight", [8, 8]),
    ("model.layers.0.mlp.up_proj.weight", [8, 8]),
    ("model.layers.0.mlp.down_proj.weight", [8, 8]),
    ("model.layers.0.input_layernorm.weight", [8]),
    ("model.layers.0.post_attention_layernorm.weight", [8]),
    ("model.norm.weight", [8]),
    ("lm_head.weight", [16, 8]),
]
SIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "BOOL": 1, "U8": 1}


def st(tensors, dtype="F16", meta=None, fill=b"\x01"):
    header, off, data = {}, 0, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, shape in tensors:
        k = 1
        for s in shape:
            k *= s
        nb = k * SIZE[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + nb]}
        data += (fill * nb)[:nb]
        off += nb
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


put("safetensors_header", "tiny-f16", st(TINY, meta={"format": "pt"}))
put("safetensors_header", "tiny-bf16", st(TINY, "BF16"))
put("safetensors_header", "tiny-f32", st(TINY, "F32", fill=b"\x00\x00\x80\x3f"))
put("safetensors_header", "tiny-missing", st(TINY[:-1]))
put("safetensors_header", "tiny-extra", st(TINY + [("model.extra.weight", [2])]))
put("safetensors_header", "tiny-wrong-shape", st(TINY[:-1] + [("lm_head.weight", [8, 16])]))
put("safetensors_header", "i64", st([("a", [3]), ("b", [0, 5])], "I64"))
put("safetensors_header", "bool", st([("a", [3])], "BOOL"))
put("safetensors_header", "empty-header", struct.pack("<Q", 8) + b"{}      ")
for p in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "**", "*.safetensors"), recursive=True)):
    rel = os.path.relpath(p, ROOT)
    put("safetensors_header", rel.replace("tests/fixtures/", ""), read(rel)[:4096])

# state_json
for i, d in enumerate(sys.argv[1:]):
    s0 = json.load(open(os.path.join(d, "state.json")))
    put("state_json", "state-%d.json" % i, json.dumps(s0, indent=2))
    s = dict(s0, rng_cpu=s0["rng_cpu"][:64])
    put("state_json", "state-%d-short-rng.json" % i, json.dumps(s, indent=2))
    s = dict(s0, best=[0.25, 2], base={"model": "hf", "parameters": 3, "fingerprint": "0123456789abcdef"})
    put("state_json", "state-%d-base.json" % i, json.dumps(s))
    s = dict(s0, cursor=18446744073709551615, seed=18446744073709551615)
    put("state_json", "state-%d-cursor.json" % i, json.dumps(s))

# tokenizer_json
put("tokenizer_json", "wordlevel.json", read("tests/fixtures/wordlevel-tokenizer.json"))
for p in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "hf", "*", "tokenizer.json"))):
    put("tokenizer_json", os.path.basename(os.path.dirname(p)) + ".json", read(os.path.relpath(p, ROOT)))

print(n)
