// 1-bit fully connected layer: Y = X·S mod 2^WB, S in {−1, +1}^(d_in × d_out).
// WB (16, 32, 64) and the ring prelude are prepended as for matmul.wgsl.
// X: n × d_in row-major packed words (as in matmul.wgsl). Signs: the
// u64 words of `PackedSigns` seen as u32 (little-endian): column c owns `wpc32` =
// 2·ceil(d_in / 64) consecutive u32, bit r % 32 of u32 `c·wpc32 + r / 32` is 1 iff
// S[r, c] = +1 (padding bits are 0, and the matching X entries are loaded as 0, so they
// never contribute). Y: one u32 per element (two for u64; the host keeps the low WB
// bits).
//
// y[i, c] = Σ_r (bit ? x[i, r] : −x[i, r]): one select and one add per weight, no
// multiply. A 16×16 workgroup computes a 64×64 tile of Y, each invocation a 4×4 block
// (rows y + 16i, columns x + 16j), staging 64 rows × 16 inputs of X in workgroup memory
// per step; the 16 sign bits of each of its columns for the step sit in a register.

struct Params {
    n: u32,
    d_in: u32,
    d_out: u32,
    wpc32: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

fn ld_x(e: u32) -> R {
    if (WB == 16u) {
        return r_from((x[e >> 1u] >> ((e & 1u) << 4u)) & 0xffffu, 0u);
    }
    if (WB == 64u) {
        return r_from(x[2u * e], x[2u * e + 1u]);
    }
    return r_from(x[e], 0u);
}

fn st_y(e: u32, v: R) {
    if (WB == 64u) {
        y[2u * e] = r_lo(v);
        y[2u * e + 1u] = r_hi(v);
    } else {
        y[e] = r_lo(v);
    }
}

const TR: u32 = 64u; // rows of Y per workgroup
const TC: u32 = 64u; // columns of Y per workgroup
const TI: u32 = 16u; // inputs staged per step

var<workgroup> tx: array<array<R, TR>, TI>; // [input][row]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let r0 = wid.y * TR;
    let c0 = wid.x * TC;
    // Invocation (x, y) owns rows y + 16·i and columns x + 16·j, i, j < 4.
    var acc: array<R, 16>;
    for (var q = 0u; q < 16u; q++) {
        acc[q] = r_zero();
    }
    for (var k0 = 0u; k0 < p.d_in; k0 += TI) {
        // 64 rows × 16 inputs of X: four words per invocation.
        for (var h = 0u; h < 4u; h++) {
            let e = li + 256u * h;
            let row = r0 + (e >> 4u);
            let r = k0 + (e & 15u);
            var v = r_zero();
            if (row < p.n && r < p.d_in) {
                v = ld_x(row * p.d_in + r);
            }
            tx[e & 15u][e >> 4u] = v;
        }
        // The 16 sign bits of each of this invocation's columns for this step.
        var bits: array<u32, 4>;
        for (var j = 0u; j < 4u; j++) {
            let col = c0 + lid.x + 16u * j;
            bits[j] = 0u;
            if (col < p.d_out) {
                bits[j] = w[col * p.wpc32 + (k0 >> 5u)] >> (k0 & 16u);
            }
        }
        workgroupBarrier();
        for (var t = 0u; t < TI; t++) {
            for (var i = 0u; i < 4u; i++) {
                let v = tx[t][lid.y + 16u * i];
                let nv = r_neg(v);
                for (var j = 0u; j < 4u; j++) {
                    let plus = ((bits[j] >> t) & 1u) == 1u;
                    acc[4u * i + j] = r_add(acc[4u * i + j], select(nv, v, plus));
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = r0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let col = c0 + lid.x + 16u * j;
            if (row < p.n && col < p.d_out) {
                st_y(row * p.d_out + col, acc[4u * i + j]);
            }
        }
    }
}
