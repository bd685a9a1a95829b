//! The engine: one type that runs the encoder program as any of the four roles.
//!
//! The program (harness) is written once against [`Engine`]; each building block is a
//! method that does the work of the role the engine plays:
//!
//! | role    | a masked value holds         | an additive value holds | the block does              |
//! |---------|------------------------------|--------------------------|-----------------------------|
//! | Dealer  | the mask r                   | nothing (shape only)     | deals material, offline     |
//! | P0 / P1 | x^ (where known), share of r | its share                | offline pass, then online   |
//! | Plain   | the value x, and r (carries) | the value                | the plaintext reference     |
//!
//! P0 and P1 walk the program twice: an offline pass (masks and dealer material only:
//! they receive the dealer's messages, do the input-independent work of block 1 and keep
//! what the online pass needs) and an online pass that consumes it. Every block draws its
//! randomness from streams indexed by its operation number, so the dealer, the parties
//! and the plaintext reference agree on every mask without talking about it.

use crate::account::{OpKind, Phase};
use crate::ctx::Ctx;
use crate::error::{ProtocolError, Result};
use crate::net::PartyId;
use crate::registry::{PrivateModel, Registry};
use crate::ring::{self, Ring};
use crate::seed::{self, DealerSeeds, Purpose, Seed};
use rand_chacha::ChaCha12Rng;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    P0,
    P1,
    Dealer,
    Plain,
}

/// Who learns an opened value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reveal {
    Both,
    P0,
}

/// How a public table is dealt (PROTOCOL.md blocks 4 and 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LutMode {
    /// Rotated table shares: 2^k words per lookup, a gather online.
    Rotated,
    /// DPF keys: about (k - nu)(lambda + 2) + 2 lambda bits per lookup, 2^k MACs online.
    Dpf,
    /// Whichever needs less dealer material for the table's k and output ring.
    Auto,
}

/// How a table's window drops the bits below it (PROTOCOL.md block 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Free: the index is floor(z / 2^j) + c with the carry c of the mask's low bits,
    /// 1 with probability (z mod 2^j) / 2^j (unbiased stochastic rounding). No message.
    #[default]
    Stochastic,
    /// Exact round(z / 2^j) (to nearest): the carry is computed by a comparison (a DCF key
    /// per lookup) and removed through one more exchange of k bits each way
    /// (`blocks::exact`). The secure run then equals the plaintext quantized model with
    /// deterministic rounding bit for bit, whatever the dealer's masks.
    Exact,
}

/// Bits [j, j+k) of a masked value: the index of a table over that window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub j: u32,
    pub k: u32,
}

/// A masked value [[x]]: x^ = x + r public to the parties that hold it, r shared.
#[derive(Clone, Debug)]
pub struct Masked<R> {
    pub shape: Vec<usize>,
    /// x^ (P0/P1 where known); the value x (Plain).
    pub hat: Option<Vec<R>>,
    /// The party's share of r; the whole r (Dealer, Plain with carries).
    pub r: Option<Vec<R>>,
    /// Index bits P1 received for windows of a value whose x^ only P0 holds.
    pub win: Vec<(Window, Vec<u32>)>,
}

/// An additive value <x>.
#[derive(Clone, Debug)]
pub struct Additive<R> {
    pub shape: Vec<usize>,
    /// The party's share; the value (Plain); None for the dealer.
    pub s: Option<Vec<R>>,
}

impl<R> Masked<R> {
    pub fn len(&self) -> usize {
        crate::tensor::numel(&self.shape)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
impl<R> Additive<R> {
    pub fn len(&self) -> usize {
        crate::tensor::numel(&self.shape)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Statistics the plaintext reference keeps: table indices that left their window
/// (aliasing), per operation kind.
#[derive(Clone, Debug, Default)]
pub struct PlainStats {
    pub lookups: u64,
    pub out_of_window: u64,
    pub carries: u64,
}

/// Per-operation randomness: the streams every role derives for operation `idx`.
pub(crate) struct OpState {
    pub idx: u64,
    /// P0's share stream (Dealer, P0).
    pub p0: Option<ChaCha12Rng>,
    /// Mask stream (Dealer, Plain with carries).
    pub mask: Option<ChaCha12Rng>,
    /// Dealer-internal stream.
    pub mat: Option<ChaCha12Rng>,
    /// Dealer: what goes to P1 / P0. P1/P0 (offline): what came from the dealer.
    pub blob1: Vec<u8>,
    pub blob0: Vec<u8>,
    pub cursor: usize,
}

impl OpState {
    pub fn tag(&self) -> u32 {
        self.idx as u32
    }
    /// A fresh uniform mask (Dealer), or the same mask regenerated (Plain with carries),
    /// or zeros (Plain without carries: deterministic rounding).
    pub fn mask<R: Ring>(&mut self, n: usize) -> Vec<R> {
        match self.mask.as_mut() {
            Some(m) => seed::uniform(m, n),
            None => vec![R::ZERO; n],
        }
    }
    /// P0's share drawn from its seed stream.
    pub fn p0_share<R: Ring>(&mut self, n: usize) -> Result<Vec<R>> {
        let s = self
            .p0
            .as_mut()
            .ok_or_else(|| ProtocolError::Internal("no P0 seed stream".into()))?;
        Ok(seed::uniform(s, n))
    }
    /// Dealer: share `v` between P0 (seed) and P1 (material); returns P0's share.
    pub fn deal<R: Ring>(&mut self, v: &[R]) -> Result<Vec<R>> {
        let s0: Vec<R> = self.p0_share(v.len())?;
        let s1: Vec<R> = v.iter().zip(&s0).map(|(a, b)| a.wsub(*b)).collect();
        ring::encode(&s1, &mut self.blob1);
        Ok(s0)
    }
    /// Dealer: put `v` in P1's material as is (values only P1 gets).
    pub fn give_p1<R: Ring>(&mut self, v: &[R]) {
        ring::encode(v, &mut self.blob1);
    }
    /// P1 (offline): the next `n` elements of this operation's material.
    pub fn take<R: Ring>(&mut self, n: usize) -> Result<Vec<R>> {
        let buf = &self.blob1[self.cursor..];
        let (v, rest) = ring::decode::<R>(buf, n, PartyId::Dealer, "dealer material")?;
        self.cursor = self.blob1.len() - rest.len();
        Ok(v)
    }
    /// P1's share of a dealt value, or P0's, by role.
    pub fn share<R: Ring>(&mut self, role: Role, n: usize) -> Result<Vec<R>> {
        match role {
            Role::P0 => self.p0_share(n),
            Role::P1 => self.take(n),
            _ => Err(ProtocolError::Internal("share() outside P0/P1".into())),
        }
    }
}

pub struct Engine {
    pub role: Role,
    pub ctx: Ctx,
    online: bool,
    op: u64,
    seeds: Option<DealerSeeds>,
    p0_seed: Option<Seed>,
    mask_seed: Option<Seed>,
    pub reg: Registry,
    pub model: Option<Arc<PrivateModel>>,
    prep: crate::prep::PrepQueue,
    pub lut_mode: LutMode,
    pub truncation: Truncation,
    pub plain_stats: PlainStats,
    /// Material already used online, freed after the online phase (freeing a million
    /// small DPF keys is allocator work, not protocol work; keeping them until the end does
    /// not raise the peak, they were all in memory before the query).
    retired: Vec<Box<dyn std::any::Any + Send>>,
}

impl Engine {
    fn base(role: Role, me: PartyId) -> Self {
        Engine {
            role,
            ctx: Ctx::new(me),
            online: false,
            op: 0,
            seeds: None,
            p0_seed: None,
            mask_seed: None,
            reg: Registry::default(),
            model: None,
            prep: Default::default(),
            lut_mode: LutMode::Auto,
            truncation: Truncation::Stochastic,
            plain_stats: PlainStats::default(),
            retired: vec![],
        }
    }
    /// The server, holding the private model.
    pub fn p0(model: Arc<PrivateModel>) -> Self {
        let mut e = Self::base(Role::P0, PartyId::P0);
        e.model = Some(model);
        e
    }
    /// The client.
    pub fn p1() -> Self {
        Self::base(Role::P1, PartyId::P1)
    }
    /// The dealer with its seeds.
    pub fn dealer(seeds: DealerSeeds) -> Self {
        let mut e = Self::base(Role::Dealer, PartyId::Dealer);
        e.p0_seed = Some(seeds.p0);
        e.mask_seed = Some(seeds.mask);
        e.seeds = Some(seeds);
        e
    }
    /// The plaintext quantized reference. With `carry_seed` (the dealer's mask seed) its
    /// table indices take exactly the carries of the secure run; without it, every index is
    /// floor(z / 2^j) (deterministic rounding).
    pub fn plain(model: Arc<PrivateModel>, carry_seed: Option<Seed>) -> Self {
        let mut e = Self::base(Role::Plain, PartyId::P0);
        e.model = Some(model);
        e.mask_seed = carry_seed;
        e.online = true;
        e
    }

    pub fn is_online(&self) -> bool {
        self.online
    }
    /// True where the block computes on data (online parties and the plaintext reference).
    pub(crate) fn computes(&self) -> bool {
        self.online || self.role == Role::Plain
    }
    pub fn set_lut_mode(&mut self, m: LutMode) {
        self.lut_mode = m;
    }
    /// Every role of a run must use the same mode (it changes the operation sequence).
    pub fn set_truncation(&mut self, t: Truncation) {
        self.truncation = t;
    }

    /// Label what follows for the accounting.
    pub fn at(&mut self, layer: u16, kind: OpKind) {
        let phase = self.ctx.phase;
        self.ctx.label(phase, layer, kind);
    }

    /// Start a phase. For P0/P1, `Phase::Offline` starts the offline pass and
    /// `Phase::Online` the online one; the operation counter restarts so both passes see the
    /// same indices.
    pub fn start_phase(&mut self, phase: Phase) -> Result<()> {
        self.ctx.close_label();
        self.ctx
            .label(phase, crate::account::NO_LAYER, OpKind::Other);
        self.op = 0;
        self.online = phase == Phase::Online || self.role == Role::Plain;
        if phase == Phase::Online && matches!(self.role, Role::P0 | Role::P1) {
            self.ctx.depth = 0;
        }
        Ok(())
    }

    /// Session start: the dealer sends P0 its share seed (32 bytes), the only dealer
    /// message P0 needs for all additive shares it will ever hold.
    pub fn exchange_seeds(&mut self) -> Result<()> {
        match self.role {
            Role::Dealer => {
                let s = self
                    .p0_seed
                    .ok_or_else(|| ProtocolError::Internal("no seed".into()))?;
                self.ctx.send(PartyId::P0, SEED_TAG, s.to_vec())
            }
            Role::P0 => {
                let b = self.ctx.recv(PartyId::Dealer, SEED_TAG)?;
                let s: Seed = b.as_slice().try_into().map_err(|_| {
                    ring::malformed(PartyId::Dealer, "seed", format!("{} bytes", b.len()))
                })?;
                self.p0_seed = Some(s);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn p0_seed(&self) -> Option<&Seed> {
        self.p0_seed.as_ref()
    }

    /// Begin an operation: derive its streams. `material`: whether the dealer sends P1
    /// (and, with `to_p0`, P0) a message for it; in the offline pass the parties receive it
    /// here.
    pub(crate) fn begin(&mut self, material: bool, to_p0: bool) -> Result<OpState> {
        let idx = self.op;
        self.op += 1;
        let p0 = match self.role {
            Role::Dealer | Role::P0 => self
                .p0_seed
                .as_ref()
                .map(|s| seed::stream(s, Purpose::P0Share, idx)),
            _ => None,
        };
        let mask = match self.role {
            Role::Dealer | Role::Plain => self
                .mask_seed
                .as_ref()
                .map(|s| seed::stream(s, Purpose::Mask, idx)),
            _ => None,
        };
        let mat = self
            .seeds
            .as_ref()
            .map(|s| seed::stream(&s.material, Purpose::Material, idx));
        let mut st = OpState {
            idx,
            p0,
            mask,
            mat,
            blob1: vec![],
            blob0: vec![],
            cursor: 0,
        };
        if material && !self.online {
            match self.role {
                Role::P1 => st.blob1 = self.ctx.recv(PartyId::Dealer, st.tag())?,
                Role::P0 if to_p0 => st.blob1 = self.ctx.recv(PartyId::Dealer, st.tag())?,
                _ => {}
            }
        }
        Ok(st)
    }

    /// Dealer: send the operation's material.
    pub(crate) fn ship(&mut self, st: OpState, to_p0: bool) -> Result<()> {
        if self.role != Role::Dealer {
            return Ok(());
        }
        let tag = st.tag();
        self.ctx.send(PartyId::P1, tag, st.blob1)?;
        if to_p0 {
            self.ctx.send(PartyId::P0, tag, st.blob0)?;
        }
        Ok(())
    }

    /// P1 (offline): the whole material must have been consumed.
    pub(crate) fn check_consumed(&self, st: &OpState) -> Result<()> {
        if self.role == Role::P1 && !self.online && st.cursor != st.blob1.len() {
            return Err(ring::malformed(
                PartyId::Dealer,
                "dealer material",
                format!(
                    "op #{}: {} bytes left over",
                    st.idx,
                    st.blob1.len() - st.cursor
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn push_prep<T: crate::prep::Prep>(&mut self, t: T) -> Result<()> {
        self.prep.push(t)
    }
    pub(crate) fn pop_prep<T: crate::prep::Prep>(&mut self, what: &'static str) -> Result<T> {
        self.prep.pop(what)
    }
    /// Keep used material until [`Self::free_retired`].
    pub(crate) fn retire<T: std::any::Any + Send>(&mut self, t: T) {
        self.retired.push(Box::new(t));
    }
    /// Free the material used online (call after the online phase).
    pub fn free_retired(&mut self) {
        self.retired.clear();
    }
    /// Keep the offline pass's results in a file in `dir` instead of memory, bound to
    /// `session` (a file of another session is refused when read back).
    pub fn spill_to(&mut self, dir: &std::path::Path, session: u64) -> Result<()> {
        let tag = format!("{:?}", self.role).to_lowercase();
        self.prep.spill_to(dir, &tag, session)
    }
    /// Bytes of offline results spilled to disk.
    pub fn spilled_bytes(&self) -> u64 {
        self.prep.spilled_bytes()
    }
    /// Bytes-free check that the online pass consumed every offline result.
    pub fn prep_left(&self) -> usize {
        self.prep.len()
    }
}

/// Tags of the messages outside the program's operations (operation tags count up from
/// 0; the transport's hello frame uses u32::MAX).
pub const SEED_TAG: u32 = u32::MAX - 3;

pub(crate) fn need<'a, T>(v: &'a Option<T>, what: &'static str) -> Result<&'a T> {
    v.as_ref()
        .ok_or_else(|| ProtocolError::Internal(format!("missing {what}")))
}
