// DPF expand-and-dot (`kernels::dpf::eval_dot_batch` / `eval_dot2_batch`), two entry
// points, with aes.wgsl prepended (binding 1, `aes_enc`). `WB` (16, 32, 64) and the ring
// prelude (ring32.wgsl / ring64.wgsl) are prepended by the host.
//
// Nodes are vec4<u32> (the little-endian words of the host's u128): the seed with the
// control bit t in bit 0, exactly as the CPU evaluator holds them. A dispatch works on
// "roots": subtree roots at one tree level, `2^rlog` consecutive roots per key, keys in
// the order of the per-tile key buffers. Node i of a level belongs to root i >> shift.
//
// `level`: one tree level, node i -> children 2i, 2i + 1:
//   child_L = AES_k0(s) ⊕ s ⊕ (t ? cwl : 0), child_R = AES_k1(s) ⊕ s ⊕ (t ? cwr : 0)
//   with s = node & !1 and cwl / cwr = seed CW | t_L / t_R CW of (key, level), stored at
//   cw[2·(key·d + level)] and cw[2·(key·d + level) + 1].
// `leaves`: leaf conversion into nb blocks (nb AES each leaf), block i being
//   Convert_i(s) = AES_k2(s ⊕ δ_i) ⊕ s ⊕ δ_i with δ_i = i·2^64 (i XORed into word z;
//   δ_0 = 0), plus the key's output CW block i (cwo[key·nb + i]) if t, word-wise. The
//   blocks in order are the leaf's 2^nu little-endian words (domain indices li·2^nu + w;
//   for 2^nu < 128/WB only the first 2^nu words of block 0), each multiplied by
//   table[((x − a) mod 2^kx)·2^ky + ((y − b) mod 2^ky)] for domain index a·2^ky + b,
//   and summed per root into out[out_base + root] (zeroed by the host; two u32 slots per
//   root for u64, low first) with atomic adds: each invocation sums 2^lpt_log
//   consecutive leaves of one root first (the host sets it for up to 4 blocks in all).
//   No workgroup barriers besides the table load (they dominate on software renderers).
//   The host adds the partial sums of a key and negates party 1's.

struct Params {
    count: u32,    // input nodes (level) or leaf nodes (leaves) of this dispatch
    shift: u32,    // log2(nodes per root) at this stage
    rlog: u32,     // log2(roots per key)
    level: u32,    // level: absolute tree level; leaves: position of root 0 in its key's level
    d: u32,        // tree levels per key
    nu: u32,       // leaves: log2(words used per leaf)
    kx: u32,
    ky: u32,
    out_base: u32, // leaves: first output slot of this dispatch
    nb: u32,       // leaves: blocks per leaf, ceil(2^nu / (128 / WB))
    lpt_log: u32,  // leaves: log2(leaves per invocation), at most shift
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// level
@group(0) @binding(2) var<storage, read> cw: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> lv_in: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> lv_out: array<vec4<u32>>;
// leaves
@group(0) @binding(5) var<storage, read> cwo: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> xy: array<u32>;
@group(0) @binding(7) var<storage, read> table: array<u32>;
@group(0) @binding(8) var<storage, read> leaves_in: array<vec4<u32>>;
@group(0) @binding(9) var<storage, read_write> out: array<atomic<u32>>;

@compute @workgroup_size(256)
fn level(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    aes_load_table(li, 256u);
    let i = (wid.x + wid.y * nwg.x) * 256u + li;
    if (i >= p.count) {
        return;
    }
    let node = lv_in[i];
    let s = vec4<u32>(node.x & 0xfffffffeu, node.y, node.z, node.w);
    var l = aes_enc(0u, s) ^ s;
    var r = aes_enc(1u, s) ^ s;
    if ((node.x & 1u) == 1u) {
        let key = (i >> p.shift) >> p.rlog;
        let c = 2u * (key * p.d + p.level);
        l ^= cw[c];
        r ^= cw[c + 1u];
    }
    lv_out[2u * i] = l;
    lv_out[2u * i + 1u] = r;
}

fn ld_t(e: u32) -> R {
    if (WB == 16u) {
        return r_from((table[e >> 1u] >> ((e & 1u) << 4u)) & 0xffffu, 0u);
    }
    if (WB == 64u) {
        return r_from(table[2u * e], table[2u * e + 1u]);
    }
    return r_from(table[e], 0u);
}

// Word w (WB bits, little-endian) of a block.
fn word(v: vec4<u32>, w: u32) -> R {
    if (WB == 16u) {
        return r_from((v[w >> 1u] >> ((w & 1u) << 4u)) & 0xffffu, 0u);
    }
    if (WB == 64u) {
        return r_from(v[2u * w], v[2u * w + 1u]);
    }
    return r_from(v[w], 0u);
}

// Unsigned contribution of leaf node i (root g, local index `local` under it): nb AES.
fn leaf_term(i: u32, g: u32, local: u32) -> R {
    let node = leaves_in[i];
    let key = g >> p.rlog;
    let t = (node.x & 1u) == 1u;
    let x = xy[2u * key];
    let y = xy[2u * key + 1u];
    let pos = p.level + (g & ((1u << p.rlog) - 1u));
    let li = (pos << p.shift) + local;
    let mx = (1u << p.kx) - 1u;
    let my = (1u << p.ky) - 1u;
    let e = 128u / WB;
    let wpb = min(e, 1u << p.nu); // words used per block
    var acc = r_zero();
    for (var bi = 0u; bi < p.nb; bi++) {
        // s ⊕ δ_bi: the seed (control bit cleared) with bi XORed into bits 64..96.
        let s = vec4<u32>(node.x & 0xfffffffeu, node.y, node.z ^ bi, node.w);
        let blk = aes_enc(2u, s) ^ s;
        let c = cwo[key * p.nb + bi];
        let j0 = (li << p.nu) + bi * e;
        for (var w = 0u; w < wpb; w++) {
            var v = word(blk, w);
            if (t) {
                v = r_add(v, word(c, w));
            }
            let j = j0 + w;
            let a = j >> p.ky;
            let b = j & my;
            acc = r_add(acc, r_mul(ld_t((((x - a) & mx) << p.ky) | ((y - b) & my)), v));
        }
    }
    return acc;
}

@compute @workgroup_size(256)
fn leaves(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    aes_load_table(li, 256u);
    let lpt_log = p.lpt_log;
    let t = (wid.x + wid.y * nwg.x) * 256u + li;
    let i0 = t << lpt_log;
    if (i0 >= p.count) {
        return;
    }
    let g = i0 >> p.shift;
    let local0 = i0 & ((1u << p.shift) - 1u);
    var acc = r_zero();
    for (var q = 0u; q < (1u << lpt_log); q++) {
        acc = r_add(acc, leaf_term(i0 + q, g, local0 + q));
    }
    // Wrapping sums are order independent: the atomic adds give the CPU's bits.
    if (WB == 64u) {
        // 64-bit sum from two u32 atomics: the low add returns the old low word, and
        // its wrap-around is exactly the carry this addend owes the high word.
        let slot = 2u * (p.out_base + g);
        let lo = r_lo(acc);
        let old = atomicAdd(&out[slot], lo);
        let carry = select(0u, 1u, old + lo < old);
        atomicAdd(&out[slot + 1u], r_hi(acc) + carry);
    } else {
        atomicAdd(&out[p.out_base + g], r_lo(acc));
    }
}
