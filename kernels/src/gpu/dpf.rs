//! Host side of the DPF expand-and-dot (`shaders/dpf.wgsl`).
//!
//! The tree is expanded breadth first on the device, one dispatch per level, for a group
//! of keys at once (key-major node buffers, as the CPU's `Expander`), then one dispatch
//! converts the leaves (each into nb = ceil(2^nu / E) tweaked AES blocks, E = 128/BITS
//! words per block: 4 blocks unless the domain is tiny, see `crate::dpf::LEAF_BLOCKS`)
//! and multiplies them into the table, summing per key. Groups hold as many whole trees
//! as fit one node buffer (`Gpu::dpf_nodes` nodes); a tree larger than that is expanded
//! to a level whose subtrees fit, and the subtrees are finished one after the other,
//! their partial sums added on the host (wrapping sums: same result). Party 1's negation
//! is applied on the host.

use super::{Gpu, GpuError, Kernel, Pooled};
use crate::dpf::keys::KeysRef;
use crate::dpf::DpfKeys;
use crate::word::Word;

/// Node as the shader sees it: the little-endian u32 words of the u128.
fn block(v: u128) -> [u32; 4] {
    [
        v as u32,
        (v >> 32) as u32,
        (v >> 64) as u32,
        (v >> 96) as u32,
    ]
}

/// The output correction words packed little-endian into the key's nb leaf blocks: block
/// i holds words i·E .. (i + 1)·E (E = 128/BITS); a key with fewer than E words has one
/// block, zero past them.
fn cw_out_blocks<W: Word>(cw_out: &[W]) -> impl Iterator<Item = [u32; 4]> + '_ {
    let e = (128 / W::BITS) as usize;
    cw_out.chunks(e).map(|ws| {
        block(ws.iter().enumerate().fold(0u128, |b, (i, w)| {
            b | (w.to_u64() as u128) << (i as u32 * W::BITS)
        }))
    })
}

/// log2 of the AES blocks one leaf-pass invocation converts (whole leaves of one root, so
/// 2^min(LEAF_INV_BLOCKS_LOG − log2 nb, shift) leaves each): fewer atomics per sum.
const LEAF_INV_BLOCKS_LOG: u32 = 2;

/// Per-key buffers of a group of keys: level correction words, output CW blocks (nb per
/// key), (x, y).
struct KeyBufs<'g> {
    cw: Pooled<'g>,
    cwo: Pooled<'g>,
    xy: Pooled<'g>,
}

fn key_bufs<'g, W: Word>(
    gpu: &'g Gpu,
    keys: &KeysRef<'_, W>,
    xs: &[u32],
    ys: &[u32],
) -> Result<KeyBufs<'g>, GpuError> {
    let mut cw = Vec::with_capacity(keys.len() * keys.d * 2);
    for i in 0..keys.len() {
        for l in 0..keys.d {
            let (cl, cr) = keys.cw(i, l);
            cw.push(block(cl));
            cw.push(block(cr));
        }
    }
    let cwo: Vec<[u32; 4]> = (0..keys.len())
        .flat_map(|i| cw_out_blocks(keys.cw_out(i)))
        .collect();
    let xy: Vec<u32> = xs.iter().zip(ys).flat_map(|(&x, &y)| [x, y]).collect();
    Ok(KeyBufs {
        cw: gpu.upload(&cw)?,
        cwo: gpu.upload(&cwo)?,
        xy: gpu.upload(&xy)?,
    })
}

/// Shape of the evaluation (shared by all keys of a call).
#[derive(Clone, Copy)]
struct Shape {
    d: u32,
    nu: u32,
    /// Blocks per leaf: ceil(2^nu / E).
    nb: u32,
    kx: u32,
    ky: u32,
}

/// See `Gpu::dpf_eval_dot2_batch`.
pub(super) fn eval_dot2_batch<W: Word>(
    gpu: &Gpu,
    keys: &DpfKeys<W>,
    table: &[W],
    kx: u32,
    ky: u32,
    xs: &[u32],
    ys: &[u32],
) -> Result<Vec<W>, GpuError> {
    assert_eq!(
        keys.len(),
        xs.len(),
        "eval_dot batch: keys and xs lengths differ"
    );
    assert_eq!(
        keys.len(),
        ys.len(),
        "eval_dot batch: keys and ys lengths differ"
    );
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let k = kx + ky;
    assert!(
        (1..=crate::dpf::MAX_K).contains(&k),
        "dpf: key domain outside 1..=24"
    );
    assert_eq!(
        table.len(),
        1usize << k,
        "eval_dot batch: table.len() != 2^k"
    );
    // nu = min(k, log2(LEAF_BLOCKS·E)) levels packed into a leaf of nb blocks.
    let nu = crate::dpf::leaf_levels::<W>(k);
    let d = k - nu;
    let nb = (1u32 << nu).div_ceil(128 / W::BITS);
    // A `DpfKeys` holds well-formed keys of one domain and party.
    assert_eq!(keys.k(), k, "eval_dot batch: key on the wrong domain");
    let all = keys.view();
    let table_bytes = table.len() as u64 * super::word_bytes::<W>();
    if table_bytes > gpu.max_binding {
        return Err(GpuError::Unsupported(format!(
            "dpf: a table of 2^{k} words exceeds one storage binding"
        )));
    }
    let cap = gpu.dpf_nodes;
    let cap_log = cap.trailing_zeros();
    if d > 2 * cap_log {
        return Err(GpuError::Unsupported(format!(
            "dpf: a tree of depth {d} needs more than {cap} nodes per level split"
        )));
    }
    // Keys per group: whole trees up to the node cap; key data must fit a binding too.
    let key_bytes = 32 * d as u64 + 16 * nb as u64;
    let per_group = ((cap >> d.min(cap_log)) as u64)
        .min(gpu.max_binding / key_bytes)
        .max(1) as usize;
    let shape = Shape { d, nu, nb, kx, ky };
    let mut out = vec![W::ZERO; keys.len()];
    gpu.scoped(|| {
        let level = gpu.pipeline(Kernel::DpfLevel, W::BITS)?;
        let leaves = gpu.pipeline(Kernel::DpfLeaves, W::BITS)?;
        let pipes = Pipes {
            level: &level,
            leaves: &leaves,
        };
        let tbuf = gpu.upload(table)?;
        for g0 in (0..keys.len()).step_by(per_group) {
            let g1 = (g0 + per_group).min(keys.len());
            let group = all.range(g0, g1);
            let sums = if (1usize << d) <= cap {
                whole_trees(gpu, &pipes, &tbuf, shape, &group, &xs[g0..g1], &ys[g0..g1])?
            } else {
                let mut sums = Vec::with_capacity(group.len());
                for i in 0..group.len() {
                    let (x, y) = (&xs[g0 + i..g0 + i + 1], &ys[g0 + i..g0 + i + 1]);
                    let key = group.range(i, i + 1);
                    sums.push(split_tree(gpu, &pipes, &tbuf, shape, &key, x, y)?);
                }
                sums
            };
            for (o, v) in out[g0..g1].iter_mut().zip(sums) {
                *o = if all.party == 1 { v.wneg() } else { v };
            }
        }
        Ok(())
    })?;
    Ok(out)
}

struct Pipes<'a> {
    level: &'a wgpu::ComputePipeline,
    leaves: &'a wgpu::ComputePipeline,
}

/// Node buffers for `nodes` nodes (16 bytes each).
fn nodes_buf(gpu: &Gpu, nodes: usize) -> Result<Pooled<'_>, GpuError> {
    gpu.storage(nodes as u64 * 16)
}

/// Records the level dispatches taking `roots` (at tree level `from`, `count` roots, each
/// key owning 2^rlog consecutive roots) down to level `to`, ping-ponging between `a` and
/// `b`; returns which buffer holds the result (`roots` itself if from == to).
#[allow(clippy::too_many_arguments)]
fn levels<'b>(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    pipe: &wgpu::ComputePipeline,
    kb: &KeyBufs<'_>,
    d: u32,
    roots: &'b wgpu::Buffer,
    count: usize,
    rlog: u32,
    from: u32,
    to: u32,
    a: &'b wgpu::Buffer,
    b: &'b wgpu::Buffer,
) -> Result<&'b wgpu::Buffer, GpuError> {
    let mut cur = roots;
    for lvl in from..to {
        let step = lvl - from;
        let n = count << step;
        let dst = if step.is_multiple_of(2) { a } else { b };
        let params = [n as u32, step, rlog, lvl, d, 0, 0, 0, 0, 0, 0, 0];
        gpu.dispatch_linear(
            enc,
            pipe,
            &params,
            &[(1, &gpu.aes), (2, &kb.cw), (3, cur), (4, dst)],
            n.div_ceil(256) as u64,
        )?;
        cur = dst;
    }
    Ok(cur)
}

/// Records the leaf dispatch over `count` leaf nodes in `nodes`, 2^shift per root,
/// writing the per-root sums to `out[out_base ..]`.
#[allow(clippy::too_many_arguments)]
fn leaf_pass(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    pipe: &wgpu::ComputePipeline,
    kb: &KeyBufs<'_>,
    tbuf: &wgpu::Buffer,
    s: Shape,
    nodes: &wgpu::Buffer,
    count: usize,
    shift: u32,
    rlog: u32,
    pos: u32,
    out: &wgpu::Buffer,
    out_base: u32,
) -> Result<(), GpuError> {
    // Invocations: one per 2^lpt_log leaves, 256 per workgroup.
    let lpt_log = shift.min(LEAF_INV_BLOCKS_LOG.saturating_sub(s.nb.trailing_zeros()));
    let groups = (count >> lpt_log).div_ceil(256);
    let params = [
        count as u32,
        shift,
        rlog,
        pos,
        s.d,
        s.nu,
        s.kx,
        s.ky,
        out_base,
        s.nb,
        lpt_log,
        0,
    ];
    gpu.dispatch_linear(
        enc,
        pipe,
        &params,
        &[
            (1, &gpu.aes),
            (5, &kb.cwo),
            (6, &kb.xy),
            (7, tbuf),
            (8, nodes),
            (9, out),
        ],
        groups as u64,
    )
}

/// Unsigned sums of a group of keys whose trees fit one node buffer together.
fn whole_trees<W: Word>(
    gpu: &Gpu,
    pipes: &Pipes<'_>,
    tbuf: &wgpu::Buffer,
    s: Shape,
    keys: &KeysRef<'_, W>,
    xs: &[u32],
    ys: &[u32],
) -> Result<Vec<W>, GpuError> {
    let g = keys.len();
    let kb = key_bufs(gpu, keys, xs, ys)?;
    let roots: Vec<[u32; 4]> = (0..g).map(|i| block(keys.root(i))).collect();
    let rbuf = gpu.upload(&roots)?;
    let leaves = g << s.d;
    let (a, b) = if s.d > 0 {
        (nodes_buf(gpu, leaves)?, nodes_buf(gpu, leaves)?)
    } else {
        (nodes_buf(gpu, 1)?, nodes_buf(gpu, 1)?)
    };
    let out = gpu.output(g as u64 * super::out_bytes::<W>())?;
    let mut enc = gpu.encoder();
    enc.clear_buffer(&out, 0, None);
    let nodes = levels(
        gpu,
        &mut enc,
        pipes.level,
        &kb,
        s.d,
        &rbuf,
        g,
        0,
        0,
        s.d,
        &a,
        &b,
    )?;
    leaf_pass(
        gpu,
        &mut enc,
        pipes.leaves,
        &kb,
        tbuf,
        s,
        nodes,
        leaves,
        s.d,
        0,
        0,
        &out,
        0,
    )?;
    gpu.read_ring(enc, &out, g)
}

/// Unsigned sum of one key whose tree exceeds the node buffer: the top `top` levels are
/// expanded once, then each of the 2^top subtrees separately.
fn split_tree<W: Word>(
    gpu: &Gpu,
    pipes: &Pipes<'_>,
    tbuf: &wgpu::Buffer,
    s: Shape,
    key: &KeysRef<'_, W>,
    xs: &[u32],
    ys: &[u32],
) -> Result<W, GpuError> {
    let cap_log = gpu.dpf_nodes.trailing_zeros();
    let sub = cap_log.min(s.d);
    let top = s.d - sub;
    let chunks = 1usize << top;
    let kb = key_bufs(gpu, key, xs, ys)?;
    let rbuf = gpu.upload(&[block(key.root(0))])?;
    let (ta, tb) = (nodes_buf(gpu, chunks)?, nodes_buf(gpu, chunks)?);
    let (a, b) = (nodes_buf(gpu, 1 << sub)?, nodes_buf(gpu, 1 << sub)?);
    let croot = nodes_buf(gpu, 1)?;
    let out = gpu.output(chunks as u64 * super::out_bytes::<W>())?;
    let mut enc = gpu.encoder();
    enc.clear_buffer(&out, 0, None);
    let tops = levels(
        gpu,
        &mut enc,
        pipes.level,
        &kb,
        s.d,
        &rbuf,
        1,
        0,
        0,
        top,
        &ta,
        &tb,
    )?;
    for c in 0..chunks {
        enc.copy_buffer_to_buffer(tops, c as u64 * 16, &croot, 0, 16);
        let nodes = levels(
            gpu,
            &mut enc,
            pipes.level,
            &kb,
            s.d,
            &croot,
            1,
            0,
            top,
            s.d,
            &a,
            &b,
        )?;
        leaf_pass(
            gpu,
            &mut enc,
            pipes.leaves,
            &kb,
            tbuf,
            s,
            nodes,
            1 << sub,
            sub,
            0,
            c as u32,
            &out,
            c as u32,
        )?;
    }
    let parts: Vec<W> = gpu.read_ring(enc, &out, chunks)?;
    Ok(parts.iter().fold(W::ZERO, |acc, &v| acc.wadd(v)))
}
