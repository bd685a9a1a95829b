#!/usr/bin/env python3
"""BERT-base under SPU 0.9.5 (SecretFlow): the SEMI2K and CHEETAH protocols, one encoder
layer and/or the whole model at a given sequence length, two party processes linked by
brpc on loopback, random weights (peers_common.py, the same for every peer).

CHEETAH is SPU's 2PC protocol that carries BumbleBee's (Lu et al., NDSS 2025) matrix
multiplication and activation optimizations: the closest real stand-in for "Lu et al."
that runs here. SEMI2K is SPU's additive-sharing protocol with a trusted-first-party
dealer for Beaver triples.

The model is written in jax.numpy and compiled by SPU's frontend. The weights are
secret-shared with owner rank 0 (P0) and the input with owner rank 1 (P1) before the clock
starts; the clock covers `Runtime.run` (the secure forward pass) on each party. Bytes
sent per party: SPU's own link statistics when its profile log reports them (parsed
from each party's log), else the party's socket writes (/proc/self/io wchar delta, an
upper bound). Rounds: SPU's send actions when the log reports them, else empty.

usage: spu_bert.py [--seq 128] [--what layer|model|both] [--protocols semi2k,cheetah]
                   [--csv results/peers.csv] [--port 61900]
"""

import argparse
import math
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers_common as pc  # noqa: E402

def jax_forward(seq, layers, whole):
    import jax
    import jax.numpy as jnp

    d = pc.HIDDEN // pc.HEADS

    def layernorm(h, g, b):
        mu = h.mean(-1, keepdims=True)
        c = h - mu
        var = (c * c).mean(-1, keepdims=True)
        return c * jax.lax.rsqrt(var + pc.EPS) * g + b

    def gelu(h):
        return 0.5 * h * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h ** 3)))

    def heads(t):
        return t.reshape(seq, pc.HEADS, d).transpose(1, 0, 2)

    def layer(h, w):
        q, k, v = (heads(h @ w["w" + c] + w["b" + c]) for c in "qkv")
        p = jax.nn.softmax(q @ k.transpose(0, 2, 1) / math.sqrt(d), axis=-1)
        ctx = (p @ v).transpose(1, 0, 2).reshape(seq, pc.HIDDEN)
        h = layernorm(h + ctx @ w["wo"] + w["bo"], w["g1"], w["b1"])
        f = gelu(h @ w["w1"] + w["c1"]) @ w["w2"] + w["c2"]
        return layernorm(h + f, w["g2"], w["b2"])

    def fwd(x, ws, head):
        for w in ws:
            x = layer(x, w)
        if not whole:
            return x
        pooled = jnp.tanh(x[0] @ head["wp"] + head["bp"])
        return pooled @ head["wc"] + head["bc"]

    return fwd


def wchar():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return None


def party(rank, job, port):
    """One party, in a fresh interpreter (`spu_bert.py --party RANK --job DIR`): forking the
    parent after JAX has compiled deadlocks (JAX is multithreaded), so the parent writes
    the config, the executable and each party's input shares to DIR and starts the parties
    with subprocess; each writes back its time, socket writes and output shares."""
    import pickle
    from spu import libspu
    from spu import api as spu_api

    with open(os.path.join(job, "job.pkl"), "rb") as f:
        j = pickle.load(f)
    desc = libspu.link.Desc()
    desc.recv_timeout_ms = 4 * 3600 * 1000
    desc.http_max_payload_size = 32 * 1024 * 1024
    for r in range(2):
        desc.add_party(f"p{r}", f"127.0.0.1:{port + r}")
    lctx = libspu.link.create_brpc(desc, rank)
    cfg = libspu.RuntimeConfig()
    cfg.ParseFromString(j["config"])
    rt = spu_api.Runtime(lctx, cfg)
    exe = libspu.Executable()
    exe.ParseFromString(j["exe"])
    for name, (meta, chunks) in zip(exe.input_names, j["shares"][rank]):
        sh = libspu.Share()
        sh.meta = meta
        sh.share_chunks = chunks
        rt.set_var(name, sh)
    del j
    lctx.barrier()
    w0 = wchar()
    t0 = time.perf_counter()
    rt.run(exe)
    dt = time.perf_counter() - t0
    w1 = wchar()
    outs = []
    for n in exe.output_names:
        sh = rt.get_var(n)
        outs.append((sh.meta, list(sh.share_chunks)))
    lctx.barrier()
    with open(os.path.join(job, f"out{rank}.pkl"), "wb") as f:
        pickle.dump((rank, dt, None if w0 is None else w1 - w0, outs), f)
    sys.stdout.flush()
    sys.stderr.flush()


LINK_RE = re.compile(r"Link details: total send bytes\s*[:=]?\s*(\d+).*?send actions\s*[:=]?\s*(\d+)", re.S)


def link_stats(log):
    """(bytes, rounds) from SPU's profile summary in a party's log, or None."""
    try:
        text = open(log, errors="replace").read()
    except OSError:
        return None
    m = LINK_RE.findall(text)
    return (int(m[-1][0]), int(m[-1][1])) if m else None


def main():
    ap = pc.common_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    ap.add_argument("--protocols", default="semi2k,cheetah")
    ap.add_argument("--port", type=int, default=61900)
    ap.add_argument("--party", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--job", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.party is not None:
        return party(a.party, a.job, a.port)
    import numpy as np
    from spu import libspu
    from spu import api as spu_api
    from spu.utils import frontend as spu_fe

    for proto in a.protocols.split(","):
        kind = {"semi2k": libspu.ProtocolKind.SEMI2K, "cheetah": libspu.ProtocolKind.CHEETAH}[proto]
        for layers, whole in pc.cases(a.what):
            ws, head = pc.random_weights(layers, a.model_seed)
            x = pc.random_input(a.seq, a.input_seed)
            cfg = libspu.RuntimeConfig(protocol=kind, field=libspu.FieldType.FM64)
            cfg.fxp_fraction_bits = 18
            cfg.enable_hal_profile = True
            cfg.enable_pphlo_profile = True
            fwd = jax_forward(a.seq, layers, whole)
            import jax
            flat, _ = jax.tree_util.tree_flatten((x, ws, head))
            owners = [1] + [0] * (len(flat) - 1)  # x from P1, every weight from P0
            names = [f"in{i}" for i in range(len(flat))]
            exe, _ = spu_fe.compile(
                spu_fe.Kind.JAX, fwd, (x, ws, head), {}, names,
                [libspu.Visibility.VIS_SECRET] * len(flat),
                lambda outs: [f"out{i}" for i in range(len(outs))],
            )
            io = spu_api.Io(2, cfg)
            shares = [io.make_shares(np.asarray(v), libspu.Visibility.VIS_SECRET, o)
                      for v, o in zip(flat, owners)]
            tmp = tempfile.mkdtemp(prefix="spu-bert-")
            logs = [os.path.join(tmp, f"p{r}.log") for r in range(2)]
            with open(os.path.join(tmp, "job.pkl"), "wb") as f:
                pickle.dump({"config": cfg.SerializeToString(),
                             "exe": exe.SerializeToString(),
                             "shares": [[(sh[r].meta, list(sh[r].share_chunks)) for sh in shares]
                                        for r in range(2)]}, f)
            del shares
            procs = []
            for r in range(2):
                lf = open(logs[r], "w")
                procs.append(subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), "--party", str(r),
                     "--job", tmp, "--port", str(a.port)], stdout=lf, stderr=subprocess.STDOUT))
            for p in procs:
                p.wait()
                if p.returncode != 0:
                    for o in procs:
                        o.kill()
                    sys.exit(f"party exited with {p.returncode}; logs in {tmp}")
            res = []
            for r in range(2):
                with open(os.path.join(tmp, f"out{r}.pkl"), "rb") as f:
                    res.append(pickle.load(f))
            share_objs = []
            for _, _, _, outs in res:
                meta, chunks = outs[0]
                s = libspu.Share()
                s.meta = meta
                s.share_chunks = chunks
                share_objs.append(s)
            y = io.reconstruct(share_objs)
            ref = pc.forward_np(x, ws, head, whole)
            err = abs(np.asarray(y) - ref).max()
            online = max(r[1] for r in res)
            stats = [link_stats(l) for l in logs]
            if all(stats):
                b0, b1 = stats[0][0], stats[1][0]
                rounds = max(s[1] for s in stats)
                how = "SPU link statistics"
            else:
                b0, b1 = res[0][2], res[1][2]
                rounds = None
                how = "socket writes (wchar), rounds not reported"
            what = "model" if whole else "layer"
            mb = lambda b: "?" if b is None else f"{b / 1e6:.1f}"
            print(f"spu {proto} {what} seq {a.seq}: online {online:.3f} s, P0 {mb(b0)} MB, "
                  f"P1 {mb(b1)} MB, rounds {rounds if rounds is not None else '?'} ({how}), "
                  f"max |err| vs float {err:.4f}; logs in {tmp}")
            pc.append_row(a.csv, pc.row(f"spu-0.9.5-{proto}", a.seq, layers, "fxp18-fm64",
                                        online, b0, b1, rounds, err,
                                        f"SPU 0.9.5 {proto.upper()}, brpc over loopback; bytes: {how}"))


if __name__ == "__main__":
    main()
