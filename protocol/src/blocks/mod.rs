//! The building blocks of PROTOCOL.md, as methods of [`crate::engine::Engine`]. Each
//! method's doc comment says whether it communicates, in which phase, and how much
//! (n = number of elements, w = bytes per ring element).

pub mod exact;
pub mod linear;
pub mod local;
pub mod lut;
pub mod matmul;
pub mod open;
pub mod product;
pub mod trunc;

use crate::ring::Ring;

/// a + b elementwise in the ring.
pub(crate) fn vadd<R: Ring>(a: &[R], b: &[R]) -> Vec<R> {
    a.iter().zip(b).map(|(x, y)| x.wadd(*y)).collect()
}
/// a - b elementwise in the ring.
pub(crate) fn vsub<R: Ring>(a: &[R], b: &[R]) -> Vec<R> {
    a.iter().zip(b).map(|(x, y)| x.wsub(*y)).collect()
}
/// a * b elementwise in the ring.
pub(crate) fn vmul<R: Ring>(a: &[R], b: &[R]) -> Vec<R> {
    a.iter().zip(b).map(|(x, y)| x.wmul(*y)).collect()
}
/// -a elementwise.
pub(crate) fn vneg<R: Ring>(a: &[R]) -> Vec<R> {
    a.iter().map(|x| x.wneg()).collect()
}
/// Broadcast `b` (one value per row, `rows` rows) over rows of `cols` columns, or return
/// it as is when it already has rows*cols elements.
pub(crate) fn bcast_rows<R: Ring>(b: &[R], rows: usize, cols: usize) -> Vec<R> {
    if b.len() == rows * cols {
        return b.to_vec();
    }
    b.iter()
        .flat_map(|&v| std::iter::repeat_n(v, cols))
        .collect()
}
/// Broadcast a per-column vector over `rows` rows.
pub(crate) fn bcast_cols<R: Ring>(c: &[R], rows: usize) -> Vec<R> {
    let mut out = Vec::with_capacity(rows * c.len());
    for _ in 0..rows {
        out.extend_from_slice(c);
    }
    out
}
