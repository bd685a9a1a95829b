"""Shared by crypten_bert.py and spu_bert.py: BERT-base shapes, seeded random weights and
inputs (identical for every peer), the float reference in NumPy, and rows in the columns
of the harness's results/runs.csv (plus its leading `protocol` column)."""

import csv
import math
import os
import platform

import numpy as np

# bert-base: hidden 768, 12 heads, FFN 3072, 12 layers; a 2-way classifier on the pooled
# first token, as in the harness.
HIDDEN, HEADS, FFN, LAYERS, CLASSES = 768, 12, 3072, 12, 2
EPS = 1e-12

CSV_COLUMNS = [
    "protocol", "model", "quant", "seq", "batch", "layers", "net", "transport",
    "lut_mode", "backend", "online_s", "offline_s", "online_mb", "online_mb_p0_to_p1",
    "online_mb_p1_to_p0", "dealer_mb_p0", "dealer_mb_p1", "offline_mb", "rounds",
    "verified", "max_abs_err_vs_plain", "max_abs_err_vs_float",
]


def random_weights(layers, seed=1):
    """Per layer: Wq, Wk, Wv, Wo (H x H), W1 (H x F), W2 (F x H), their biases, two
    LayerNorms; then the pooler and classifier. Scaled like an initialised BERT (std 0.02
    for the weights) so that activations stay in fixed-point range."""
    rng = np.random.default_rng(seed)
    n = lambda *s: (rng.standard_normal(s) * 0.02).astype(np.float32)
    ws = []
    for _ in range(layers):
        ws.append({
            "wq": n(HIDDEN, HIDDEN), "bq": n(HIDDEN),
            "wk": n(HIDDEN, HIDDEN), "bk": n(HIDDEN),
            "wv": n(HIDDEN, HIDDEN), "bv": n(HIDDEN),
            "wo": n(HIDDEN, HIDDEN), "bo": n(HIDDEN),
            "g1": np.ones(HIDDEN, np.float32), "b1": np.zeros(HIDDEN, np.float32),
            "w1": n(HIDDEN, FFN), "c1": n(FFN),
            "w2": n(FFN, HIDDEN), "c2": n(HIDDEN),
            "g2": np.ones(HIDDEN, np.float32), "b2": np.zeros(HIDDEN, np.float32),
        })
    head = {"wp": n(HIDDEN, HIDDEN), "bp": n(HIDDEN), "wc": n(HIDDEN, CLASSES), "bc": n(CLASSES)}
    return ws, head


def random_input(seq, seed=2):
    """The client's input: the embedded tokens (seq x hidden, LayerNorm-ed like BERT's
    embedding output). The embedding lookup itself is left out for every peer."""
    x = np.random.default_rng(seed).standard_normal((seq, HIDDEN)).astype(np.float32)
    return layernorm_np(x, np.ones(HIDDEN, np.float32), np.zeros(HIDDEN, np.float32))


def layernorm_np(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * g + b


def gelu_np(x):
    # the tanh form, which every peer evaluates
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax_np(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def layer_np(x, w):
    seq, d = x.shape[0], HIDDEN // HEADS
    heads = lambda t: t.reshape(seq, HEADS, d).transpose(1, 0, 2)
    q, k, v = (heads(x @ w["w" + c] + w["b" + c]) for c in "qkv")
    p = softmax_np(q @ k.transpose(0, 2, 1) / math.sqrt(d))
    ctx = (p @ v).transpose(1, 0, 2).reshape(seq, HIDDEN)
    h = layernorm_np(x + ctx @ w["wo"] + w["bo"], w["g1"], w["b1"])
    f = gelu_np(h @ w["w1"] + w["c1"]) @ w["w2"] + w["c2"]
    return layernorm_np(h + f, w["g2"], w["b2"])


def forward_np(x, ws, head, whole):
    """One layer (whole=False: its output) or the model (logits of the classifier)."""
    for w in ws:
        x = layer_np(x, w)
    if not whole:
        return x
    pooled = np.tanh(x[0] @ head["wp"] + head["bp"])
    return pooled @ head["wc"] + head["bc"]


def append_row(path, row):
    """Append one row (a dict over CSV_COLUMNS) to `path`, header first when new."""
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in CSV_COLUMNS})


def row(protocol, seq, layers, quant, online_s, bytes_p0, bytes_p1, rounds, err, backend,
        offline_s=""):
    mb = lambda b: "" if b is None else round(b / 1e6, 3)
    total = None if bytes_p0 is None or bytes_p1 is None else bytes_p0 + bytes_p1
    return {
        "protocol": protocol, "model": "bert-base", "quant": quant, "seq": seq, "batch": 1,
        "layers": layers, "net": "loopback", "transport": "tcp", "lut_mode": "",
        "backend": f"{backend}; {platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "online_s": round(online_s, 4), "offline_s": offline_s, "online_mb": mb(total),
        "online_mb_p0_to_p1": mb(bytes_p0), "online_mb_p1_to_p0": mb(bytes_p1),
        "dealer_mb_p0": "", "dealer_mb_p1": "", "offline_mb": "", "rounds": rounds if rounds is not None else "",
        "verified": "", "max_abs_err_vs_plain": "", "max_abs_err_vs_float": round(float(err), 5),
    }


def common_args(ap):
    ap.add_argument("--seq", type=int, default=128, help="sequence length (default 128)")
    ap.add_argument("--what", choices=["layer", "model", "both"], default="both",
                    help="one encoder layer, the whole model (12 layers + pooler + classifier), or both")
    ap.add_argument("--csv", default="results/peers.csv", help="CSV to append rows to")
    ap.add_argument("--model-seed", type=int, default=1)
    ap.add_argument("--input-seed", type=int, default=2)
    return ap


def cases(what):
    """(layers, whole model?) pairs to run."""
    return {"layer": [(1, False)], "model": [(LAYERS, True)],
            "both": [(1, False), (LAYERS, True)]}[what]
