// Dealer table rotations: copy r of the output is `out[r·2^k + i] = table[(i − rho[r])
// mod 2^k]`, i.e. `kernels::lut::rotate_table(table, k, rho[r])` for every r. `WB` is 16,
// 32 or 64; table and output packed as in gather.wgsl (each invocation writes one u32:
// u16 elements 2t and 2t + 1, which may belong to different copies when k = 0).

struct Params {
    total: u32, // rotated words in this dispatch (copies × 2^k)
    k: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> rho: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

// Table index of output element e.
fn src(e: u32) -> u32 {
    let mask = (1u << p.k) - 1u;
    return ((e & mask) - rho[e >> p.k]) & mask;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let t = (wid.x + wid.y * nwg.x) * 64u + li;
    if (WB == 16u) {
        let e = 2u * t;
        if (e < p.total) {
            let s0 = src(e);
            var v = (table[s0 >> 1u] >> ((s0 & 1u) << 4u)) & 0xffffu;
            if (e + 1u < p.total) {
                let s1 = src(e + 1u);
                v |= ((table[s1 >> 1u] >> ((s1 & 1u) << 4u)) & 0xffffu) << 16u;
            }
            out[t] = v;
        }
    } else if (WB == 32u) {
        if (t < p.total) {
            out[t] = table[src(t)];
        }
    } else {
        if (t < p.total) {
            let s = src(t);
            out[2u * t] = table[2u * s];
            out[2u * t + 1u] = table[2u * s + 1u];
        }
    }
}
