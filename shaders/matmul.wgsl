// C = A·B mod 2^WB (row-major A m×k, B k×n; C m×n). The host prepends `WB` (16, 32 or
// 64) and ring32.wgsl / ring64.wgsl (the word type R and its +, ·). Inputs are packed
// words: u16 two per u32 (element e in bits 16·(e & 1) of u32 e >> 1, i.e. the
// little-endian memory of a &[u16]), u64 as two u32 (low half first). Outputs: one u32
// per element below 64 bits (the host keeps the low WB bits: u32 arithmetic is exact
// mod 2^16), two for u64.
//
// The host splits large products into blocks of rows (and of columns) so that every
// buffer fits a storage binding and the grid fits the dispatch limits.
//
// Tiling: a 16×16 workgroup computes a 64×64 tile of C, each invocation a 4×4 block
// (rows y + 16i, columns x + 16j: neighbouring invocations read neighbouring words of
// workgroup memory), staging 64×8 of A and 8×64 of B per step of 8 along k. Each word
// loaded from global memory is used 64 times, each from workgroup memory 4 times.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> c: array<u32>;

fn ld_a(e: u32) -> R {
    if (WB == 16u) {
        return r_from((a[e >> 1u] >> ((e & 1u) << 4u)) & 0xffffu, 0u);
    }
    if (WB == 64u) {
        return r_from(a[2u * e], a[2u * e + 1u]);
    }
    return r_from(a[e], 0u);
}

fn ld_b(e: u32) -> R {
    if (WB == 16u) {
        return r_from((b[e >> 1u] >> ((e & 1u) << 4u)) & 0xffffu, 0u);
    }
    if (WB == 64u) {
        return r_from(b[2u * e], b[2u * e + 1u]);
    }
    return r_from(b[e], 0u);
}

fn st_c(e: u32, v: R) {
    if (WB == 64u) {
        c[2u * e] = r_lo(v);
        c[2u * e + 1u] = r_hi(v);
    } else {
        c[e] = r_lo(v);
    }
}

const TM: u32 = 64u; // rows of C per workgroup
const TN: u32 = 64u; // columns of C per workgroup
const TK: u32 = 8u;  // depth staged per step

var<workgroup> ta: array<array<R, TM>, TK>; // [kk][row]
var<workgroup> tb: array<array<R, TN>, TK>; // [kk][col]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let r0 = wid.y * TM;
    let c0 = wid.x * TN;
    // Invocation (x, y) owns rows y + 16·i and columns x + 16·j, i, j < 4.
    var acc: array<R, 16>;
    for (var q = 0u; q < 16u; q++) {
        acc[q] = r_zero();
    }
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // 64×8 of A and 8×64 of B: two words of each per invocation.
        for (var h = 0u; h < 2u; h++) {
            let e = li + 256u * h;
            let row = r0 + (e >> 3u);
            let kk = k0 + (e & 7u);
            var v = r_zero();
            if (row < p.m && kk < p.k) {
                v = ld_a(row * p.k + kk);
            }
            ta[e & 7u][e >> 3u] = v;
            let kb = k0 + (e >> 6u);
            let col = c0 + (e & 63u);
            var w = r_zero();
            if (kb < p.k && col < p.n) {
                w = ld_b(kb * p.n + col);
            }
            tb[e >> 6u][e & 63u] = w;
        }
        workgroupBarrier();
        for (var t = 0u; t < TK; t++) {
            let a0 = ta[t][lid.y];
            let a1 = ta[t][lid.y + 16u];
            let a2 = ta[t][lid.y + 32u];
            let a3 = ta[t][lid.y + 48u];
            for (var j = 0u; j < 4u; j++) {
                let b = tb[t][lid.x + 16u * j];
                acc[j] = r_add(acc[j], r_mul(a0, b));
                acc[4u + j] = r_add(acc[4u + j], r_mul(a1, b));
                acc[8u + j] = r_add(acc[8u + j], r_mul(a2, b));
                acc[12u + j] = r_add(acc[12u + j], r_mul(a3, b));
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = r0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let col = c0 + lid.x + 16u * j;
            if (row < p.m && col < p.n) {
                st_c(row * p.n + col, acc[4u * i + j]);
            }
        }
    }
}
