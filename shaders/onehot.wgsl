// One public table against per-lookup vectors (`kernels::lut::onehot_dot`):
// out[i] = Σ_j table[(idx[i] − j) mod 2^k] · u[i·2^k + j]  (mod 2^WB). WB (16, 32, 64)
// and the ring prelude are prepended as for matmul.wgsl; table and u packed as there;
// out is one u32 per lookup (two for u64; the host keeps the low WB bits).
//
// Small tables (2^k <= 256): one invocation per lookup sums its 2^k terms in a loop, no
// workgroup memory and no barriers (barriers dominate on software renderers). Large
// tables: one workgroup of 256 per lookup, each invocation summing the terms
// j ≡ lid (mod 256) (coalesced reads of u), then a tree sum in workgroup memory.
// Wrapping sums are order independent, so the result equals the CPU's bit for bit.

struct Params {
    n: u32,
    k: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read> u: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

fn ld_t(e: u32) -> R {
    if (WB == 16u) {
        return r_from((table[e >> 1u] >> ((e & 1u) << 4u)) & 0xffffu, 0u);
    }
    if (WB == 64u) {
        return r_from(table[2u * e], table[2u * e + 1u]);
    }
    return r_from(table[e], 0u);
}

fn ld_u(e: u32) -> R {
    if (WB == 16u) {
        return r_from((u[e >> 1u] >> ((e & 1u) << 4u)) & 0xffffu, 0u);
    }
    if (WB == 64u) {
        return r_from(u[2u * e], u[2u * e + 1u]);
    }
    return r_from(u[e], 0u);
}

fn st_out(e: u32, v: R) {
    if (WB == 64u) {
        out[2u * e] = r_lo(v);
        out[2u * e + 1u] = r_hi(v);
    } else {
        out[e] = r_lo(v);
    }
}

const WG: u32 = 256u;
const SMALL: u32 = 256u;
var<workgroup> red: array<R, WG>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let g = wid.x + wid.y * nwg.x;
    let size = 1u << p.k;
    let mask = size - 1u;
    var acc = r_zero();
    var lookup = g;
    if (size <= SMALL) {
        lookup = g * WG + li;
        if (lookup < p.n) {
            let x = idx[lookup];
            let base = lookup << p.k;
            for (var j = 0u; j < size; j++) {
                acc = r_add(acc, r_mul(ld_t((x - j) & mask), ld_u(base + j)));
            }
            st_out(lookup, acc);
        }
        return;
    }
    if (lookup < p.n) {
        let x = idx[lookup];
        let base = lookup << p.k;
        for (var j = li; j < size; j += WG) {
            acc = r_add(acc, r_mul(ld_t((x - j) & mask), ld_u(base + j)));
        }
    }
    red[li] = acc;
    workgroupBarrier();
    for (var s = 1u; s < WG; s <<= 1u) {
        if ((li & (2u * s - 1u)) == 0u) {
            red[li] = r_add(red[li], red[li + s]);
        }
        workgroupBarrier();
    }
    if (li == 0u && lookup < p.n) {
        st_out(lookup, red[li]);
    }
}
