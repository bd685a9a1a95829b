//! Moving between sharings: P1's input, additive -> masked (opening), masked -> additive
//! (local), and revealing a result to P1.

use crate::blocks::{vadd, vneg, vsub};
use crate::engine::{need, Additive, Engine, Masked, Reveal, Role};
use crate::error::{ProtocolError, Result};
use crate::net::PartyId;
use crate::ring::{self, Ring};

/// An opening in flight: its messages are sent, the replies not yet received. Several
/// openings started before any is finished share one flight.
pub struct Pending<R> {
    to: Reveal,
    tag: u32,
    shape: Vec<usize>,
    mine: Option<Vec<R>>,
    r: Option<Vec<R>>,
}

impl Engine {
    /// P1's input x becomes [[x]] with r0 = 0, r1 = r from the dealer.
    /// Offline: dealer -> P1, n w bytes. Online: P1 -> P0, x^ (n w bytes), one flight.
    pub fn input_p1<R: Ring>(&mut self, x: Option<&[R]>, shape: &[usize]) -> Result<Masked<R>> {
        let n = crate::tensor::numel(shape);
        let mut st = self.begin(true, false)?;
        let tag = st.tag();
        let out = |hat, r| Masked {
            shape: shape.to_vec(),
            hat,
            r: Some(r),
            win: vec![],
        };
        let m = match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let r: Vec<R> = st.mask(n);
                st.give_p1(&r);
                self.ship(st, false)?;
                return Ok(out(None, r));
            }
            (Role::Plain, _) => {
                let x = need(&x.map(|v| v.to_vec()), "P1's input")?.clone();
                check_len(&x, n, "input")?;
                let r = st.mask(n);
                out(Some(x), r)
            }
            (Role::P1, false) => {
                let r: Vec<R> = st.take(n)?;
                self.check_consumed(&st)?;
                self.push_prep(r.clone())?;
                out(None, r)
            }
            (Role::P0, false) => out(None, vec![R::ZERO; n]),
            (Role::P1, true) => {
                let r: Vec<R> = self.pop_prep("input")?;
                let x = x.ok_or_else(|| ProtocolError::Internal("P1 has no input".into()))?;
                check_len(x, n, "input")?;
                let hat = vadd(x, &r);
                let mut buf = vec![];
                ring::encode(&hat, &mut buf);
                self.ctx.send(PartyId::P0, tag, buf)?;
                out(Some(hat), r)
            }
            (Role::P0, true) => {
                let buf = self.ctx.recv(PartyId::P1, tag)?;
                let hat = ring::decode_exact(&buf, n, PartyId::P1, "input")?;
                out(Some(hat), vec![R::ZERO; n])
            }
        };
        Ok(m)
    }

    /// Start opening <x> as [[x]] with a fresh mask r from the dealer.
    /// Offline: dealer -> P1, n w bytes (P0's share of r from its seed). Online: P1 -> P0
    /// n w bytes, and with `Reveal::Both` also P0 -> P1 n w bytes, one flight.
    pub fn open_start<R: Ring>(&mut self, a: &Additive<R>, to: Reveal) -> Result<Pending<R>> {
        let n = a.len();
        let mut st = self.begin(true, false)?;
        let tag = st.tag();
        let mut p = Pending {
            to,
            tag,
            shape: a.shape.clone(),
            mine: None,
            r: None,
        };
        match (self.role, self.is_online()) {
            (Role::Dealer, _) => {
                let r: Vec<R> = st.mask(n);
                st.deal(&r)?;
                self.ship(st, false)?;
                p.r = Some(r);
            }
            (Role::Plain, _) => {
                p.mine = Some(need(&a.s, "value")?.clone());
                p.r = Some(st.mask(n));
            }
            (role, false) => {
                let r: Vec<R> = st.share(role, n)?;
                self.check_consumed(&st)?;
                self.push_prep(r.clone())?;
                p.r = Some(r);
            }
            (role, true) => {
                let r: Vec<R> = self.pop_prep("open")?;
                let s = need(&a.s, "share")?;
                check_len(s, n, "open")?;
                let m = vadd(s, &r);
                let send_to = match (role, to) {
                    (Role::P1, _) => Some(PartyId::P0),
                    (Role::P0, Reveal::Both) => Some(PartyId::P1),
                    _ => None,
                };
                if let Some(dst) = send_to {
                    let mut buf = Vec::with_capacity(n * (R::BITS as usize / 8));
                    ring::encode(&m, &mut buf);
                    self.ctx.send(dst, tag, buf)?;
                }
                p.mine = Some(m);
                p.r = Some(r);
            }
        }
        Ok(p)
    }

    /// Finish an opening: receive the peer's masked share.
    pub fn open_finish<R: Ring>(&mut self, p: Pending<R>) -> Result<Masked<R>> {
        let n = crate::tensor::numel(&p.shape);
        let hat = match (self.role, self.is_online()) {
            (Role::Plain, _) => p.mine,
            (Role::P0, true) => {
                let buf = self.ctx.recv(PartyId::P1, p.tag)?;
                let other: Vec<R> = ring::decode_exact(&buf, n, PartyId::P1, "opening")?;
                Some(vadd(need(&p.mine, "own share")?, &other))
            }
            (Role::P1, true) if p.to == Reveal::Both => {
                let buf = self.ctx.recv(PartyId::P0, p.tag)?;
                let other: Vec<R> = ring::decode_exact(&buf, n, PartyId::P0, "opening")?;
                Some(vadd(need(&p.mine, "own share")?, &other))
            }
            _ => None,
        };
        Ok(Masked {
            shape: p.shape,
            hat,
            r: p.r,
            win: vec![],
        })
    }

    /// Open one value: [`Self::open_start`] then [`Self::open_finish`].
    pub fn open<R: Ring>(&mut self, a: &Additive<R>, to: Reveal) -> Result<Masked<R>> {
        let p = self.open_start(a, to)?;
        self.open_finish(p)
    }

    /// [[x]] -> <x>, local: P0 holds x^ - r0, P1 holds -r1. Needs x^ at P0.
    pub fn to_additive<R: Ring>(&mut self, x: &Masked<R>) -> Result<Additive<R>> {
        let s = match (self.role, self.computes()) {
            (Role::Plain, _) => Some(need(&x.hat, "value")?.clone()),
            (Role::P0, true) => Some(vsub(need(&x.hat, "x^ at P0")?, need(&x.r, "r0")?)),
            (Role::P1, true) => Some(vneg(need(&x.r, "r1")?)),
            _ => None,
        };
        Ok(Additive {
            shape: x.shape.clone(),
            s,
        })
    }

    /// Reveal <x> to P1 (the output). Online: P0 -> P1, n w bytes, one flight. Returns the
    /// value at P1 and in the plaintext reference, None elsewhere.
    pub fn reveal_p1<R: Ring>(&mut self, a: &Additive<R>) -> Result<Option<Vec<R>>> {
        let st = self.begin(false, false)?;
        let tag = st.tag();
        let n = a.len();
        match (self.role, self.is_online()) {
            (Role::Plain, _) => Ok(Some(need(&a.s, "value")?.clone())),
            (Role::P0, true) => {
                let mut buf = vec![];
                ring::encode(need(&a.s, "share")?, &mut buf);
                self.ctx.send(PartyId::P1, tag, buf)?;
                Ok(None)
            }
            (Role::P1, true) => {
                let buf = self.ctx.recv(PartyId::P0, tag)?;
                let s0: Vec<R> = ring::decode_exact(&buf, n, PartyId::P0, "reveal")?;
                Ok(Some(vadd(&s0, need(&a.s, "share")?)))
            }
            _ => Ok(None),
        }
    }
}

pub(crate) fn check_len<T>(v: &[T], n: usize, what: &'static str) -> Result<()> {
    if v.len() != n {
        return Err(crate::error::shape_err(
            what,
            format!("{} elements, expected {n}", v.len()),
        ));
    }
    Ok(())
}
