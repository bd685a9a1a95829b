//! The session handshake: before any protocol message, every party tells each peer the
//! public parameters of the run it is about to do, and both refuse a mismatch with an
//! error naming the field (`handshake with P1: sequence length differs: here 128, peer
//! 64`).
//!
//! What is compared: the protocol version, the session id and an ordered list of named
//! public fields chosen by the program (for BERT: model name, P0's model commitment,
//! quantization, table mode, fixed-point constants, layers, widths, labels, sequence
//! length, batch). A field is a string on the wire so that the check is the same for any
//! program. The model commitment is a BLAKE3 hash of P0's quantized model
//! ([`model_commitment`]): P1 and the dealer see the hash, never the weights.
//!
//! The messages are JSON (small, once per link) with tag [`HANDSHAKE_TAG`], counted in
//! the register phase. Both sides send before they receive, so the exchange costs one
//! one-way latency per link.

use serde::{Deserialize, Serialize};

use crate::account::{OpKind, Phase, NO_LAYER};
use crate::engine::Engine;
use crate::error::{ProtocolError, Result};
use crate::net::{PartyId, PROTOCOL_VERSION};
use crate::registry::{PrivateModel, QWeights};
use crate::session::Program;

/// Tag of handshake messages (distinct from every operation tag and the other control
/// tags, `u32::MAX - 1` and `u32::MAX - 2`).
pub const HANDSHAKE_TAG: u32 = u32::MAX - 3;

/// Largest handshake message parsed (a peer cannot make us parse megabytes of JSON).
/// Checked once the frame is in: what a frame may allocate is bounded before that by
/// the link's `max_frame`, as for every message, and a payload buffer grows only as its
/// bytes arrive.
const MAX_HANDSHAKE: usize = 64 << 10;

/// One named public parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// What a party announces to each peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    pub version: u16,
    pub session: u64,
    pub fields: Vec<Field>,
}

impl Handshake {
    /// This build's protocol version, `session`, no fields yet.
    pub fn new(session: u64) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            session,
            fields: vec![],
        }
    }

    /// Adds a named field (builder style).
    pub fn field(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.fields.push(Field {
            name: name.to_string(),
            value: value.to_string(),
        });
        self
    }

    /// Checks a peer's announcement against ours; the error names the first field that
    /// differs, with our value and the peer's. Does not communicate.
    pub fn check(&self, peer: PartyId, theirs: &Handshake) -> Result<()> {
        let differs = |field: &str, here: String, there: String| ProtocolError::Handshake {
            peer,
            detail: format!("{field} differs: here {here}, peer {there}"),
        };
        if self.version != theirs.version {
            return Err(differs(
                "protocol version",
                self.version.to_string(),
                theirs.version.to_string(),
            ));
        }
        if self.session != theirs.session {
            return Err(differs(
                "session id",
                format!("{:#018x}", self.session),
                format!("{:#018x}", theirs.session),
            ));
        }
        // a name announced twice could pass the comparison with one value and mean the
        // other to a reader of the message
        for (i, g) in theirs.fields.iter().enumerate() {
            if theirs.fields[..i].iter().any(|h| h.name == g.name) {
                return Err(ProtocolError::Handshake {
                    peer,
                    detail: format!("the peer announces {} twice", g.name),
                });
            }
        }
        for f in &self.fields {
            match theirs.fields.iter().find(|g| g.name == f.name) {
                None => {
                    return Err(ProtocolError::Handshake {
                        peer,
                        detail: format!("the peer does not announce {}", f.name),
                    })
                }
                Some(g) if g.value != f.value => {
                    return Err(differs(&f.name, f.value.clone(), g.value.clone()))
                }
                Some(_) => {}
            }
        }
        if let Some(g) = theirs
            .fields
            .iter()
            .find(|g| !self.fields.iter().any(|f| f.name == g.name))
        {
            return Err(ProtocolError::Handshake {
                peer,
                detail: format!("the peer announces {} = {}, unknown here", g.name, g.value),
            });
        }
        Ok(())
    }
}

/// Sends `mine` to every peer this engine is linked to, then receives and checks each
/// peer's. Communicates (one message each way per link).
pub fn exchange(e: &mut Engine, mine: &Handshake) -> Result<()> {
    e.ctx.label(Phase::Register, NO_LAYER, OpKind::Other);
    let peers: Vec<PartyId> = PartyId::ALL
        .into_iter()
        .filter(|&p| e.ctx.has_link(p))
        .collect();
    let bytes = serde_json::to_vec(mine)
        .map_err(|err| ProtocolError::Internal(format!("encoding the handshake: {err}")))?;
    for &p in &peers {
        e.ctx.send(p, HANDSHAKE_TAG, bytes.clone())?;
    }
    e.ctx.flush()?;
    for p in peers {
        let b = e.ctx.recv(p, HANDSHAKE_TAG).map_err(|err| match err {
            ProtocolError::OutOfSync { got, .. } => ProtocolError::Handshake {
                peer: p,
                detail: format!("expected a handshake message, got tag {got:#x}"),
            },
            other => other,
        })?;
        if b.len() > MAX_HANDSHAKE {
            return Err(ProtocolError::Handshake {
                peer: p,
                detail: format!("handshake message of {} bytes is too long", b.len()),
            });
        }
        let theirs: Handshake =
            serde_json::from_slice(&b).map_err(|err| ProtocolError::Handshake {
                peer: p,
                detail: format!("unreadable handshake message: {err}"),
            })?;
        mine.check(p, &theirs)?;
    }
    Ok(())
}

/// BLAKE3 of a quantized model (every linear and vector, in name order, with its shape):
/// P0's commitment to the model it serves, in hex. Does not communicate.
pub fn model_commitment(m: &PrivateModel) -> String {
    let mut h = blake3::Hasher::new();
    let u64s = |h: &mut blake3::Hasher, v: &[u64]| {
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(bytemuck::cast_slice(v));
    };
    let i64s = |h: &mut blake3::Hasher, v: &[i64]| {
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(bytemuck::cast_slice(v));
    };
    let mut names: Vec<&String> = m.linears.keys().collect();
    names.sort();
    for n in names {
        let l = &m.linears[n];
        h.update(b"linear");
        h.update(&(n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
        h.update(&(l.d_in as u64).to_le_bytes());
        h.update(&(l.d_out as u64).to_le_bytes());
        match &l.w {
            QWeights::Signs(p) => {
                h.update(b"signs");
                u64s(&mut h, &p.words);
            }
            QWeights::Int(w) => {
                h.update(b"int");
                i64s(&mut h, w);
            }
        }
        match &l.in_scale {
            Some(g) => {
                h.update(b"g");
                i64s(&mut h, g);
            }
            None => {
                h.update(b"-");
            }
        }
        i64s(&mut h, &l.out_scale);
        i64s(&mut h, &l.bias);
    }
    let mut names: Vec<&String> = m.vectors.keys().collect();
    names.sort();
    for n in names {
        h.update(b"vector");
        h.update(&(n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
        i64s(&mut h, &m.vectors[n]);
    }
    h.finalize().to_hex().to_string()
}

/// A program with a handshake in front: [`crate::session::drive`] exchanges `hello`
/// before the first protocol message, then runs `inner`.
pub struct WithHandshake<'a, P> {
    pub inner: &'a P,
    pub hello: Handshake,
}

impl<P: Program> Program for WithHandshake<'_, P> {
    type Output = P::Output;
    fn register(&self, e: &mut Engine) -> Result<()> {
        self.inner.register(e)
    }
    fn run(&self, e: &mut Engine) -> Result<Option<Self::Output>> {
        self.inner.run(e)
    }
    fn handshake(&self) -> Option<&Handshake> {
        Some(&self.hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Handshake {
        Handshake::new(7)
            .field("model hash", "ab12")
            .field("sequence length", 128)
            .field("batch", 1)
    }

    #[test]
    fn equal_announcements_pass_and_each_difference_is_named() {
        let a = base();
        a.check(PartyId::P1, &base()).unwrap();
        let mut b = base();
        b.fields[1].value = "64".into();
        let e = a.check(PartyId::P1, &b).unwrap_err().to_string();
        assert_eq!(
            e,
            "handshake with P1: sequence length differs: here 128, peer 64"
        );
        let mut b = base();
        b.session = 8;
        let e = a.check(PartyId::Dealer, &b).unwrap_err().to_string();
        assert!(e.starts_with("handshake with D: session id differs"), "{e}");
        let mut b = base();
        b.version += 1;
        let e = a.check(PartyId::P0, &b).unwrap_err().to_string();
        assert!(e.contains("protocol version differs"), "{e}");
        let mut b = base();
        b.fields.pop();
        let e = a.check(PartyId::P0, &b).unwrap_err().to_string();
        assert!(e.contains("does not announce batch"), "{e}");
        let b = base().field("extra", 1);
        let e = a.check(PartyId::P0, &b).unwrap_err().to_string();
        assert!(e.contains("announces extra = 1"), "{e}");
        // the same field twice, first with our value: refused, whatever the second says
        for second in ["128", "64"] {
            let b = base().field("sequence length", second);
            let e = a.check(PartyId::P1, &b).unwrap_err().to_string();
            assert!(e.contains("announces sequence length twice"), "{e}");
        }
    }

    #[test]
    fn the_commitment_changes_with_any_weight() {
        use crate::registry::QLinear;
        let lin = QLinear {
            d_in: 2,
            d_out: 1,
            w: QWeights::Int(vec![1, -1]),
            in_scale: None,
            out_scale: vec![3],
            bias: vec![0],
        };
        let mut m = PrivateModel::default();
        m.linears.insert("a".into(), lin.clone());
        m.vectors.insert("v".into(), vec![1, 2]);
        let h = model_commitment(&m);
        assert_eq!(h.len(), 64);
        assert_eq!(h, model_commitment(&m.clone()));
        let mut m2 = m.clone();
        m2.vectors.insert("v".into(), vec![1, 3]);
        assert_ne!(h, model_commitment(&m2));
        let mut m3 = m.clone();
        if let Some(l) = m3.linears.get_mut("a") {
            l.bias = vec![1];
        }
        assert_ne!(h, model_commitment(&m3));
    }
}
