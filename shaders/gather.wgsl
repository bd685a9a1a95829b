// Per-lookup gathers: out[i] = tables[i·2^k + (ix[i] << ky | iy[i])] (1-D gather: ky = 0
// and `two` = 0, iy ignored). `WB` is 16, 32 or 64. Tables are packed words (u16: two per
// u32; u32: one; u64: two u32, low half first: the little-endian memory of the host
// slice). The output is packed the same way, so each invocation writes whole u32:
// u16: lookups 2t and 2t+1 into out[t]; u32: lookup t; u64: lookup t into out[2t],
// out[2t + 1]. Indices are checked on the host (a bad index is a caller bug there).

struct Params {
    n: u32,
    k: u32,
    ky: u32,
    two: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tables: array<u32>;
@group(0) @binding(2) var<storage, read> ix: array<u32>;
@group(0) @binding(3) var<storage, read> iy: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

// Word offset of lookup i's entry in `tables` (in words of WB bits).
fn entry(i: u32) -> u32 {
    var j = ix[i];
    if (p.two != 0u) {
        j = (j << p.ky) | iy[i];
    }
    return (i << p.k) + j;
}

fn ld16(e: u32) -> u32 {
    return (tables[e >> 1u] >> ((e & 1u) << 4u)) & 0xffffu;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let t = (wid.x + wid.y * nwg.x) * 64u + li;
    if (WB == 16u) {
        let i = 2u * t;
        if (i < p.n) {
            var v = ld16(entry(i));
            if (i + 1u < p.n) {
                v |= ld16(entry(i + 1u)) << 16u;
            }
            out[t] = v;
        }
    } else if (WB == 32u) {
        if (t < p.n) {
            out[t] = tables[entry(t)];
        }
    } else {
        if (t < p.n) {
            let e = entry(t);
            out[2u * t] = tables[2u * e];
            out[2u * t + 1u] = tables[2u * e + 1u];
        }
    }
}
