//! A row-major tensor of ring elements and the few shape moves the encoder needs.
//! Shape moves are local: they apply the same permutation to values, shares and masks.

use crate::error::{shape_err, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl<T: Copy + Default> Tensor<T> {
    pub fn new(shape: &[usize], data: Vec<T>) -> Result<Self> {
        if numel(shape) != data.len() {
            return Err(shape_err(
                "tensor",
                format!(
                    "shape {shape:?} needs {} elements, got {}",
                    numel(shape),
                    data.len()
                ),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![T::default(); numel(shape)],
        }
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Size of the last axis.
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.cols()).unwrap_or(0)
    }
    pub fn map<U: Copy + Default>(&self, f: impl Fn(T) -> U) -> Tensor<U> {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&x| f(x)).collect(),
        }
    }
    pub fn with_shape(mut self, shape: &[usize]) -> Result<Self> {
        if numel(shape) != self.data.len() {
            return Err(shape_err(
                "reshape",
                format!("{:?} -> {shape:?}", self.shape),
            ));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }
}

/// The local shape moves of the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// (b·n, h·d) -> (b·h, n, d): per sequence of a batch of `batch`, split the heads.
    SplitHeads { batch: usize, heads: usize },
    /// (b·h, n, d) -> (b·n, h·d): the inverse.
    MergeHeads { batch: usize },
    /// (..., a, b) -> (..., b, a)
    TransposeLast2,
    /// (b·n, d) -> (b, d): keep the first row of each of `batch` sequences.
    FirstRows { batch: usize },
}

impl Move {
    pub fn apply<T: Copy + Default>(&self, t: &Tensor<T>) -> Result<Tensor<T>> {
        match *self {
            Move::SplitHeads { batch, heads } => {
                if t.shape.len() != 2
                    || heads == 0
                    || batch == 0
                    || !t.shape[1].is_multiple_of(heads)
                    || !t.shape[0].is_multiple_of(batch)
                {
                    return Err(shape_err(
                        "split_heads",
                        format!("{:?} / {batch}x{heads}", t.shape),
                    ));
                }
                let (n, hd) = (t.shape[0] / batch, t.shape[1]);
                let d = hd / heads;
                let mut out = vec![T::default(); t.data.len()];
                for b in 0..batch {
                    for h in 0..heads {
                        for i in 0..n {
                            let src = (b * n + i) * hd + h * d;
                            let dst = ((b * heads + h) * n + i) * d;
                            out[dst..dst + d].copy_from_slice(&t.data[src..src + d]);
                        }
                    }
                }
                Tensor::new(&[batch * heads, n, d], out)
            }
            Move::MergeHeads { batch } => {
                if t.shape.len() != 3 || batch == 0 || !t.shape[0].is_multiple_of(batch) {
                    return Err(shape_err("merge_heads", format!("{:?}", t.shape)));
                }
                let (heads, n, d) = (t.shape[0] / batch, t.shape[1], t.shape[2]);
                let hd = heads * d;
                let mut out = vec![T::default(); t.data.len()];
                for b in 0..batch {
                    for h in 0..heads {
                        for i in 0..n {
                            let src = ((b * heads + h) * n + i) * d;
                            let dst = (b * n + i) * hd + h * d;
                            out[dst..dst + d].copy_from_slice(&t.data[src..src + d]);
                        }
                    }
                }
                Tensor::new(&[batch * n, hd], out)
            }
            Move::TransposeLast2 => {
                let r = t.shape.len();
                if r < 2 {
                    return Err(shape_err("transpose", format!("{:?}", t.shape)));
                }
                let (a, b) = (t.shape[r - 2], t.shape[r - 1]);
                let batch = t.data.len() / (a * b).max(1);
                let mut out = Vec::with_capacity(t.data.len());
                for bi in 0..batch {
                    out.extend(kernels::ops::transpose(
                        &t.data[bi * a * b..(bi + 1) * a * b],
                        a,
                        b,
                    ));
                }
                let mut shape = t.shape.clone();
                shape.swap(r - 2, r - 1);
                Tensor::new(&shape, out)
            }
            Move::FirstRows { batch } => {
                if t.shape.len() != 2 || batch == 0 || !t.shape[0].is_multiple_of(batch) {
                    return Err(shape_err("first_rows", format!("{:?} / {batch}", t.shape)));
                }
                let (n, d) = (t.shape[0] / batch, t.shape[1]);
                let mut out = Vec::with_capacity(batch * d);
                for b in 0..batch {
                    out.extend_from_slice(&t.data[b * n * d..b * n * d + d]);
                }
                Tensor::new(&[batch, d], out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip_and_transpose() {
        let t = Tensor::new(&[3, 4], (0..12u32).collect()).unwrap();
        let h = Move::SplitHeads { batch: 1, heads: 2 }.apply(&t).unwrap();
        assert_eq!(h.shape, vec![2, 3, 2]);
        assert_eq!(&h.data[..6], &[0, 1, 4, 5, 8, 9]);
        assert_eq!(Move::MergeHeads { batch: 1 }.apply(&h).unwrap(), t);
        let t4 = Tensor::new(&[4, 4], (0..16u32).collect()).unwrap();
        let h4 = Move::SplitHeads { batch: 2, heads: 2 }.apply(&t4).unwrap();
        assert_eq!(h4.shape, vec![4, 2, 2]);
        assert_eq!(&h4.data[8..12], &[8, 9, 12, 13]);
        assert_eq!(Move::MergeHeads { batch: 2 }.apply(&h4).unwrap(), t4);
        assert_eq!(
            Move::FirstRows { batch: 2 }.apply(&t4).unwrap().data,
            vec![0, 1, 2, 3, 8, 9, 10, 11]
        );
        let tt = Move::TransposeLast2.apply(&h).unwrap();
        assert_eq!(tt.shape, vec![2, 2, 3]);
        assert_eq!(&tt.data[..6], &[0, 4, 8, 1, 5, 9]);
        assert!(Move::SplitHeads { batch: 1, heads: 3 }.apply(&t).is_err());
    }
}
