// Ring words for WB = 16 or 32: one u32 (u16 values in its low half; u32 arithmetic is
// exact mod 2^16). Same interface as ring64.wgsl; the host prepends one of the two.

alias R = u32;

fn r_zero() -> R {
    return 0u;
}

// The word with low half `lo` and high half `hi` (hi is ignored below 64 bits).
fn r_from(lo: u32, hi: u32) -> R {
    return lo;
}

fn r_lo(a: R) -> u32 {
    return a;
}

fn r_hi(a: R) -> u32 {
    return 0u;
}

fn r_add(a: R, b: R) -> R {
    return a + b;
}

fn r_neg(a: R) -> R {
    return 0u - a;
}

fn r_mul(a: R, b: R) -> R {
    return a * b;
}
