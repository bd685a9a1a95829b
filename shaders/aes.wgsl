// Fixed-key AES-128 (encryption only) with one 256-entry T-table, shared by the DPF
// kernels (prepended to dpf.wgsl by the host).
//
// Why T-tables: one table lookup + XOR per byte and round is the fastest portable AES
// on GPUs (no AES instructions in WGSL); the 1 KB table lives in workgroup memory, so
// lookups are on-chip. Bitsliced AES avoids data-dependent indexing (a side channel
// concern for secret keys), but the keys here are fixed and public, and the seeds being
// encrypted never leave the party's own device anyway.
//
// Layout (buffer `aes_tab`, 256 + 3·44 u32, built by the host): entries 0..256 are
// T0[x] = (2·S[x]) | S[x] << 8 | S[x] << 16 | (3·S[x]) << 24, the MixColumns column of a
// row-0 byte in little-endian byte order (T1..T3 are its rotations by 8, 16, 24 bits; the
// S-box is byte 1 of T0); then the 11 round keys of each fixed key k0, k1, k2 (44 u32
// per key). A 128-bit block is a vec4<u32> of little-endian words (x = bits 0..31), the
// little-endian bytes of the host's u128: word c is AES state column c, byte r its row r.

@group(0) @binding(1) var<storage, read> aes_tab: array<u32>;

var<workgroup> tt: array<u32, 256>;

// Copies T0 into workgroup memory; every invocation of the workgroup must call it (in
// uniform control flow) before using `aes_enc`.
fn aes_load_table(li: u32, wg: u32) {
    for (var i = li; i < 256u; i += wg) {
        tt[i] = aes_tab[i];
    }
    workgroupBarrier();
}

fn rotl(v: u32, r: u32) -> u32 {
    return (v << r) | (v >> (32u - r));
}

fn sbox(v: u32) -> u32 {
    return (tt[v] >> 8u) & 0xffu;
}

// AES-128 encryption of `blk` under fixed key `which` (0, 1, 2).
fn aes_enc(which: u32, blk: vec4<u32>) -> vec4<u32> {
    let base = 256u + which * 44u;
    var s0 = blk.x ^ aes_tab[base];
    var s1 = blk.y ^ aes_tab[base + 1u];
    var s2 = blk.z ^ aes_tab[base + 2u];
    var s3 = blk.w ^ aes_tab[base + 3u];
    for (var r = 1u; r < 10u; r++) {
        let o = base + 4u * r;
        // SubBytes + ShiftRows (row r of column c comes from column c + r) + MixColumns.
        let t0 = tt[s0 & 0xffu] ^ rotl(tt[(s1 >> 8u) & 0xffu], 8u)
            ^ rotl(tt[(s2 >> 16u) & 0xffu], 16u) ^ rotl(tt[s3 >> 24u], 24u) ^ aes_tab[o];
        let t1 = tt[s1 & 0xffu] ^ rotl(tt[(s2 >> 8u) & 0xffu], 8u)
            ^ rotl(tt[(s3 >> 16u) & 0xffu], 16u) ^ rotl(tt[s0 >> 24u], 24u) ^ aes_tab[o + 1u];
        let t2 = tt[s2 & 0xffu] ^ rotl(tt[(s3 >> 8u) & 0xffu], 8u)
            ^ rotl(tt[(s0 >> 16u) & 0xffu], 16u) ^ rotl(tt[s1 >> 24u], 24u) ^ aes_tab[o + 2u];
        let t3 = tt[s3 & 0xffu] ^ rotl(tt[(s0 >> 8u) & 0xffu], 8u)
            ^ rotl(tt[(s1 >> 16u) & 0xffu], 16u) ^ rotl(tt[s2 >> 24u], 24u) ^ aes_tab[o + 3u];
        s0 = t0;
        s1 = t1;
        s2 = t2;
        s3 = t3;
    }
    let o = base + 40u;
    // Last round: no MixColumns.
    let u0 = sbox(s0 & 0xffu) | (sbox((s1 >> 8u) & 0xffu) << 8u)
        | (sbox((s2 >> 16u) & 0xffu) << 16u) | (sbox(s3 >> 24u) << 24u);
    let u1 = sbox(s1 & 0xffu) | (sbox((s2 >> 8u) & 0xffu) << 8u)
        | (sbox((s3 >> 16u) & 0xffu) << 16u) | (sbox(s0 >> 24u) << 24u);
    let u2 = sbox(s2 & 0xffu) | (sbox((s3 >> 8u) & 0xffu) << 8u)
        | (sbox((s0 >> 16u) & 0xffu) << 16u) | (sbox(s1 >> 24u) << 24u);
    let u3 = sbox(s3 & 0xffu) | (sbox((s0 >> 8u) & 0xffu) << 8u)
        | (sbox((s1 >> 16u) & 0xffu) << 16u) | (sbox(s2 >> 24u) << 24u);
    return vec4<u32>(u0 ^ aes_tab[o], u1 ^ aes_tab[o + 1u], u2 ^ aes_tab[o + 2u],
        u3 ^ aes_tab[o + 3u]);
}
