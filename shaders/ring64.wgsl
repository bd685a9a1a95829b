// Ring words for WB = 64, emulated: vec2<u32> (x = low half, y = high half), the
// little-endian memory of a u64. Same interface as ring32.wgsl.

alias R = vec2<u32>;

fn r_zero() -> R {
    return vec2<u32>(0u, 0u);
}

fn r_from(lo: u32, hi: u32) -> R {
    return vec2<u32>(lo, hi);
}

fn r_lo(a: R) -> u32 {
    return a.x;
}

fn r_hi(a: R) -> u32 {
    return a.y;
}

fn r_add(a: R, b: R) -> R {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

fn r_neg(a: R) -> R {
    // Two's complement: !a + 1.
    return r_add(vec2<u32>(~a.x, ~a.y), vec2<u32>(1u, 0u));
}

// Full 64-bit product of two u32 (16-bit limbs: WGSL has no widening multiply).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // Middle terms: p01 + p10 may carry out of 32 bits.
    let mid = p01 + p10;
    let mid_carry = select(0u, 0x10000u, mid < p01);
    let lo = p00 + (mid << 16u);
    let lo_carry = select(0u, 1u, lo < p00);
    return vec2<u32>(lo, p11 + (mid >> 16u) + mid_carry + lo_carry);
}

// Product mod 2^64: the low 64 bits of (a.y·2^32 + a.x)(b.y·2^32 + b.x).
fn r_mul(a: R, b: R) -> R {
    let p = mul_wide(a.x, b.x);
    return vec2<u32>(p.x, p.y + a.x * b.y + a.y * b.x);
}
