#!/usr/bin/env python3
"""Writes the committed seed inputs of the fuzz targets (fuzz/seeds/<target>/).

Each seed is a valid (or nearly valid) input in the layout the target reads, so that
libFuzzer starts from inputs that get past the first checks. Run from the repository root.
"""
import json
import os
import random
import struct

R = random.Random(1)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)))


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# frame: 4 control bytes (chunk, chunk multiplier, stall flag, max_frame exponent),
# then frames of session 7 from P0 (the hello, a small and an empty frame).
def frame(session, sender, flight, tag, payload, magic=b"QBRT", version=1):
    return magic + struct.pack("<HQBIII", version, session, sender, flight, tag, len(payload)) + payload


stream = frame(7, 0, 0, 0xFFFFFFFF, b"") + frame(7, 0, 1, 5, b"abcdefgh") + frame(7, 2, 2, 6, b"")
put("frame", "three-frames", bytes([3, 1, 0, 20]) + stream)
put("frame", "stalled-chunks", bytes([1, 0, 1, 10]) + stream)
put("frame", "too-long", bytes([8, 0, 0, 4]) + frame(7, 0, 1, 5, b"x" * 64))
put("frame", "wrong-session", bytes([8, 0, 0, 20]) + frame(8, 0, 1, 5, b"x"))

# message: selector byte, element count (u16 LE), payload.
put("message", "u16x4", bytes([0]) + struct.pack("<H", 4) + bytes(range(8)))
put("message", "u32x2", bytes([1]) + struct.pack("<H", 2) + bytes(range(8)))
put("message", "u64x1", bytes([2]) + struct.pack("<H", 1) + bytes(range(8)))
put("message", "bits", bytes([3, 3, 0]) + bytes(range(16)))
# A spill-file item: a vector of 2 u32 (u64 count, then the words).
put("message", "prep-vec", bytes([1]) + struct.pack("<H", 0) + struct.pack("<Q", 2) + bytes(8))
# DPF keys over u32: k = 2 (no tree level: header, root seed, 4 output words) and
# k = 4 (two levels: two seed CWs and a byte of control bits).
k2 = bytes([3]) + bytes(16) + bytes(range(16))
k4 = bytes([0]) + bytes(16) + bytes(32) + bytes([0b0110]) + bytes(range(16))
put("message", "dpf-k2", bytes([4, 2, 1]) + k2)
put("message", "dpf-k4", bytes([4, 4, 1]) + k4)
put("message", "keys-k2", bytes([1]) + struct.pack("<H", 0) + struct.pack("<Q", 2) + bytes([2]) + k2 + k2)

# safetensors: mode 0 = the bytes are the file; mode 1 = edits of a valid file.
H, F, V, P, T, L = 8, 16, 16, 8, 2, 1


def tensors():
    t = {}
    p = "bert."
    t[p + "embeddings.word_embeddings.weight"] = [V, H]
    t[p + "embeddings.position_embeddings.weight"] = [P, H]
    t[p + "embeddings.token_type_embeddings.weight"] = [T, H]
    t[p + "embeddings.LayerNorm.weight"] = [H]
    t[p + "embeddings.LayerNorm.bias"] = [H]
    for i in range(L):
        b = f"{p}encoder.layer.{i}."
        for n in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]:
            t[b + n + ".weight"] = [H, H]
            t[b + n + ".bias"] = [H]
        t[b + "intermediate.dense.weight"] = [F, H]
        t[b + "intermediate.dense.bias"] = [F]
        t[b + "output.dense.weight"] = [H, F]
        t[b + "output.dense.bias"] = [H]
        for n in ["attention.output.LayerNorm", "output.LayerNorm"]:
            t[b + n + ".weight"] = [H]
            t[b + n + ".bias"] = [H]
    t[p + "pooler.dense.weight"] = [H, H]
    t[p + "pooler.dense.bias"] = [H]
    t["classifier.weight"] = [2, H]
    t["classifier.bias"] = [2]
    return t


def safetensors(dtype="F32", drop=None, meta=None):
    header, data = {}, b""
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    for name, shape in sorted(tensors().items()):
        if name == drop:
            continue
        n = 1
        for s in shape:
            n *= s
        if dtype == "F32":
            raw = b"".join(struct.pack("<f", R.uniform(-0.1, 0.1)) for _ in range(n))
        elif dtype == "F16":
            raw = b"".join(struct.pack("<e", R.uniform(-0.1, 0.1)) for _ in range(n))
        else:
            raw = b"".join(struct.pack("<f", R.uniform(-0.1, 0.1))[2:] for _ in range(n))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n * size]}
        data += raw
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "valid-f32", b"\x00" + safetensors())
put("safetensors", "valid-bf16", b"\x00" + safetensors("BF16"))
put("safetensors", "valid-f16-meta", b"\x00" + safetensors("F16", meta={"format": "pt"}))
put("safetensors", "missing-tensor", b"\x00" + safetensors(drop="bert.pooler.dense.bias"))
put("safetensors", "edit-none", b"\x01")
put("safetensors", "edit-dtype-shape", bytes([1, 0, 3, 4, 0, 1, 5, 2, 9, 8, 0, 1, 0]))
put("safetensors", "edit-offsets-truncate", bytes([1, 5, 7, 3, 1, 8, 0, 200, 7]))
put("safetensors", "edit-metadata", bytes([1, 6, 0, 0, 5]))

# config: selector byte (0 quant, 1 net profile, 2 config.json, 3 head JSON), text.
for i, q in enumerate(["w1a4", "w8a8", "w1a8-att8", "w2a4-att4"]):
    put("config", f"quant-{i}", b"\x00" + q.encode())
for i, n in enumerate(["lan", "wan", "1gbps,0.5ms", "400mbps,4ms", "inf,50us"]):
    put("config", f"net-{i}", b"\x01" + n.encode())
hf = {
    "architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 384,
    "intermediate_size": 1536, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
    "num_attention_heads": 12, "num_hidden_layers": 6, "position_embedding_type": "absolute",
    "type_vocab_size": 2, "vocab_size": 30522, "id2label": {"0": "NEG", "1": "POS"},
}
put("config", "hf-config", b"\x02" + json.dumps(hf).encode())
# Head JSON: the first byte after the selector doubles as the expected width (b % 8):
# '{' is 123, 123 % 8 = 3 weights.
head = {"features": "fuzz", "w": [0.5, -1.0, 2.0], "b": 0.1, "lambda": 1.0, "train_accuracy": 0.9, "train_size": 10}
put("config", "head", b"\x03" + json.dumps(head).encode())
