//! Accounting: every message is counted, by phase, layer and operation kind: bytes to each
//! peer, messages, the online flights it travelled in, and the wall time spent.
//!
//! Rounds are counted as flights on the critical path: every online message carries its
//! sender's causal depth + 1, a receiver's depth becomes the max of its own and the
//! message's. Messages sent without an intervening receive share a flight, so two openings
//! issued together cost one round, as they would on a real link.

use crate::net::PartyId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Bytes of framing per message on the wire (the TCP frame header), counted with the payload.
pub const FRAME_OVERHEAD: u64 = 27;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    Register,
    Offline,
    Online,
}

/// What the program is doing; the per-operation report is keyed by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OpKind {
    Input,
    Linear,
    Requant,
    AttnMatmul,
    Softmax,
    LayerNorm,
    Gelu,
    Residual,
    Pooler,
    Output,
    Other,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Input => "input",
            OpKind::Linear => "linear",
            OpKind::Requant => "requant",
            OpKind::AttnMatmul => "attn-matmul",
            OpKind::Softmax => "softmax",
            OpKind::LayerNorm => "layernorm",
            OpKind::Gelu => "gelu",
            OpKind::Residual => "residual",
            OpKind::Pooler => "pooler",
            OpKind::Output => "output",
            OpKind::Other => "other",
        }
    }
    pub const ALL: [OpKind; 11] = [
        OpKind::Input,
        OpKind::Linear,
        OpKind::Requant,
        OpKind::AttnMatmul,
        OpKind::Softmax,
        OpKind::LayerNorm,
        OpKind::Gelu,
        OpKind::Residual,
        OpKind::Pooler,
        OpKind::Output,
        OpKind::Other,
    ];
}

/// Layer index used for work outside the encoder layers (pooler, head, registration).
pub const NO_LAYER: u16 = u16::MAX;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Row {
    /// Bytes sent to P0, P1, D (indexed by `party_index`).
    pub bytes_to: [u64; 3],
    pub msgs: u64,
    pub flights: BTreeSet<u32>,
    pub time: Duration,
}

pub fn party_index(p: PartyId) -> usize {
    match p {
        PartyId::P0 => 0,
        PartyId::P1 => 1,
        PartyId::Dealer => 2,
    }
}

/// One party's counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Accounting {
    pub rows: BTreeMap<(Phase, u16, OpKind), Row>,
}

impl Accounting {
    pub fn sent(&mut self, key: (Phase, u16, OpKind), to: PartyId, payload: usize, flight: u32) {
        let r = self.rows.entry(key).or_default();
        r.bytes_to[party_index(to)] += payload as u64 + FRAME_OVERHEAD;
        r.msgs += 1;
        if key.0 == Phase::Online {
            r.flights.insert(flight);
        }
    }
    pub fn time(&mut self, key: (Phase, u16, OpKind), d: Duration) {
        self.rows.entry(key).or_default().time += d;
    }
    /// Total bytes this party sent in `phase` to `to`.
    pub fn bytes(&self, phase: Phase, to: PartyId) -> u64 {
        self.rows
            .iter()
            .filter(|(k, _)| k.0 == phase)
            .map(|(_, r)| r.bytes_to[party_index(to)])
            .sum()
    }
    /// A self-describing encoding (JSON), to send a party's counters to the others at the
    /// end of a session so that every party can print the whole report.
    pub fn to_bytes(&self) -> Vec<u8> {
        let rows: Vec<_> = self.rows.iter().collect();
        serde_json::to_vec(&rows).unwrap_or_default()
    }
    /// Parses a peer's counters (untrusted): None for malformed ones or counts no run
    /// reaches (2^50 bytes, 2^40 messages, 10^6 s per row), which would overflow the sums
    /// of the report.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let rows: Vec<((Phase, u16, OpKind), Row)> = serde_json::from_slice(b).ok()?;
        let plausible = |r: &Row| {
            r.bytes_to.iter().all(|&x| x < 1 << 50)
                && r.msgs < 1 << 40
                && r.time < Duration::from_secs(1_000_000)
        };
        if !rows.iter().all(|(_, r)| plausible(r)) {
            return None;
        }
        Some(Accounting {
            rows: rows.into_iter().collect(),
        })
    }
    pub fn merge(&mut self, other: &Accounting) {
        for (k, r) in &other.rows {
            let e = self.rows.entry(*k).or_default();
            for i in 0..3 {
                e.bytes_to[i] += r.bytes_to[i];
            }
            e.msgs += r.msgs;
            e.flights.extend(r.flights.iter().copied());
            e.time = e.time.max(r.time);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_counters_round_trip_and_implausible_ones_are_refused() {
        let mut a = Accounting::default();
        let key = (Phase::Online, 0, OpKind::Linear);
        a.time(key, Duration::from_millis(5));
        let back = Accounting::from_bytes(&a.to_bytes()).expect("own counters parse");
        assert_eq!(back.rows.len(), 1);
        // a peer claiming u64::MAX bytes would overflow the report's sums
        let mut b = a.clone();
        b.rows.get_mut(&key).unwrap().bytes_to[0] = u64::MAX;
        assert!(Accounting::from_bytes(&b.to_bytes()).is_none());
        let mut c = a;
        c.rows.get_mut(&key).unwrap().time = Duration::MAX;
        assert!(Accounting::from_bytes(&c.to_bytes()).is_none());
        assert!(Accounting::from_bytes(b"{not json").is_none());
    }
}
