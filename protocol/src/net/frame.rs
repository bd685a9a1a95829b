//! Frame header encoding and a resumable frame reader (see the module doc of `net`).

use std::io::{self, Read, Write};

use super::{NetError, PartyId, PROTOCOL_VERSION};

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"QBRT";
/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 27;
/// Tag of the hello frame each side sends first on a new connection.
pub const HELLO_TAG: u32 = u32::MAX;

/// Payload buffers start at most this large and grow as data arrives, so a peer cannot
/// make us allocate `max_frame` bytes by announcing a long frame it never sends.
const INITIAL_PAYLOAD_ALLOC: usize = 1 << 20;

/// A decoded, not yet validated, frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub magic: [u8; 4],
    pub version: u16,
    pub session: u64,
    pub sender: u8,
    pub flight: u32,
    pub tag: u32,
    pub len: u32,
}

impl FrameHeader {
    pub fn new(session: u64, sender: PartyId, flight: u32, tag: u32, len: u32) -> Self {
        Self {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            session,
            sender: sender.to_u8(),
            flight,
            tag,
            len,
        }
    }

    pub fn hello(session: u64, sender: PartyId) -> Self {
        Self::new(session, sender, 0, HELLO_TAG, 0)
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.magic);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..14].copy_from_slice(&self.session.to_le_bytes());
        b[14] = self.sender;
        b[15..19].copy_from_slice(&self.flight.to_le_bytes());
        b[19..23].copy_from_slice(&self.tag.to_le_bytes());
        b[23..27].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Self {
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&b[0..4]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| (u32_at(i) as u64) | ((u32_at(i + 4) as u64) << 32);
        Self {
            magic,
            version: u16_at(4),
            session: u64_at(6),
            sender: b[14],
            flight: u32_at(15),
            tag: u32_at(19),
            len: u32_at(23),
        }
    }

    /// Checks magic, version, session and sender, in that order; returns the sender.
    /// `expected` lists the parties the sender may be.
    pub fn check(&self, session: u64, expected: &[PartyId]) -> Result<PartyId, NetError> {
        if self.magic != MAGIC {
            return Err(NetError::BadMagic {
                expected: MAGIC,
                got: self.magic,
            });
        }
        if self.version != PROTOCOL_VERSION {
            return Err(NetError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: self.version,
            });
        }
        if self.session != session {
            return Err(NetError::SessionMismatch {
                ours: session,
                theirs: self.session,
            });
        }
        let got = PartyId::from_u8(self.sender).ok_or(NetError::UnknownParty(self.sender))?;
        if !expected.contains(&got) {
            return Err(match expected {
                [one] => NetError::PartyMismatch {
                    expected: *one,
                    got,
                },
                _ => NetError::UnexpectedParty {
                    got,
                    expected: expected.to_vec(),
                },
            });
        }
        Ok(got)
    }
}

/// Writes one frame: header, then the payload (large payloads bypass `w`'s buffer).
pub(crate) fn write_frame<W: Write>(
    w: &mut W,
    header: &FrameHeader,
    payload: &[u8],
) -> io::Result<()> {
    w.write_all(&header.encode())?;
    w.write_all(payload)
}

/// Reads frames from a byte stream. Reads are resumable: if the underlying reader times
/// out in the middle of a frame, the partial frame is kept and the next call continues
/// it. Any other error poisons the reader (the stream position is lost), and every later
/// call returns the same error.
pub(crate) struct FrameReader<R> {
    inner: R,
    hdr: [u8; HEADER_LEN],
    hdr_got: usize,
    /// Header of the frame whose payload is being read, the buffer (zero-filled up to
    /// its length) and how much of it is filled.
    pending: Option<(FrameHeader, Vec<u8>, usize)>,
    poisoned: Option<NetError>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hdr: [0; HEADER_LEN],
            hdr_got: 0,
            pending: None,
            poisoned: None,
        }
    }

    #[allow(dead_code)]
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reads the next frame. `validate` sees the header before the payload is read; an
    /// error from it, or a length above `max_frame`, is returned before allocating.
    pub fn read_frame(
        &mut self,
        max_frame: usize,
        validate: impl FnOnce(&FrameHeader) -> Result<(), NetError>,
    ) -> Result<(FrameHeader, Vec<u8>), NetError> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        let res = self.read_frame_inner(max_frame, validate);
        match &res {
            Err(NetError::Timeout) | Ok(_) => {}
            Err(e) => self.poisoned = Some(e.clone()),
        }
        res
    }

    fn read_frame_inner(
        &mut self,
        max_frame: usize,
        validate: impl FnOnce(&FrameHeader) -> Result<(), NetError>,
    ) -> Result<(FrameHeader, Vec<u8>), NetError> {
        let (h, mut buf, mut filled) = match self.pending.take() {
            Some(p) => p,
            None => {
                while self.hdr_got < HEADER_LEN {
                    match self.inner.read(&mut self.hdr[self.hdr_got..]) {
                        Ok(0) if self.hdr_got == 0 => return Err(NetError::PeerClosed),
                        Ok(0) => {
                            return Err(NetError::Truncated {
                                part: "header",
                                got: self.hdr_got,
                                expected: HEADER_LEN,
                            })
                        }
                        Ok(n) => self.hdr_got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let h = FrameHeader::decode(&self.hdr);
                validate(&h)?;
                let len = h.len as usize;
                if len > max_frame {
                    return Err(NetError::FrameTooLong {
                        len,
                        max: max_frame,
                    });
                }
                self.hdr_got = 0;
                (h, Vec::new(), 0)
            }
        };
        let len = h.len as usize;
        while filled < len {
            if filled == buf.len() {
                let grow = (buf.len() * 2).max(INITIAL_PAYLOAD_ALLOC).min(len);
                buf.resize(grow, 0);
            }
            let err = match self.inner.read(&mut buf[filled..]) {
                Ok(0) => NetError::Truncated {
                    part: "payload",
                    got: filled,
                    expected: len,
                },
                Ok(n) => {
                    filled += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e.into(),
            };
            self.pending = Some((h, buf, filled));
            return Err(err);
        }
        Ok((h, buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn frame(h: &FrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_frame(&mut v, h, payload).unwrap();
        v
    }

    #[test]
    fn header_round_trip() {
        let h = FrameHeader::new(0x0123_4567_89ab_cdef, PartyId::Dealer, 7, 0xdead_beef, 42);
        let b = h.encode();
        assert_eq!(&b[0..4], b"QBRT");
        assert_eq!(FrameHeader::decode(&b), h);
        assert_eq!(
            h.check(0x0123_4567_89ab_cdef, &[PartyId::Dealer]).unwrap(),
            PartyId::Dealer
        );
    }

    #[test]
    fn reads_frames_and_reports_truncation() {
        let h = FrameHeader::new(5, PartyId::P0, 1, 2, 3);
        let mut bytes = frame(&h, b"abc");
        bytes.extend_from_slice(&frame(&FrameHeader::new(5, PartyId::P0, 2, 3, 0), b""));
        let mut r = FrameReader::new(Cursor::new(bytes.clone()));
        let (h1, p1) = r.read_frame(100, |_| Ok(())).unwrap();
        assert_eq!((h1.flight, h1.tag, p1.as_slice()), (1, 2, &b"abc"[..]));
        let (h2, p2) = r.read_frame(100, |_| Ok(())).unwrap();
        assert_eq!((h2.flight, h2.tag, p2.len()), (2, 3, 0));
        assert!(matches!(
            r.read_frame(100, |_| Ok(())),
            Err(NetError::PeerClosed)
        ));

        let mut r = FrameReader::new(Cursor::new(bytes[..10].to_vec()));
        assert!(matches!(
            r.read_frame(100, |_| Ok(())),
            Err(NetError::Truncated {
                part: "header",
                got: 10,
                expected: HEADER_LEN
            })
        ));
        // Poisoned: the same error again.
        assert!(matches!(
            r.read_frame(100, |_| Ok(())),
            Err(NetError::Truncated { .. })
        ));

        let mut r = FrameReader::new(Cursor::new(bytes[..HEADER_LEN + 1].to_vec()));
        assert!(matches!(
            r.read_frame(100, |_| Ok(())),
            Err(NetError::Truncated {
                part: "payload",
                got: 1,
                expected: 3
            })
        ));
    }

    #[test]
    fn refuses_long_frames_before_reading_payload() {
        let h = FrameHeader::new(5, PartyId::P0, 1, 2, u32::MAX);
        let mut r = FrameReader::new(Cursor::new(h.encode().to_vec()));
        match r.read_frame(1 << 20, |_| Ok(())) {
            Err(NetError::FrameTooLong { len, max }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, 1 << 20);
            }
            other => panic!("expected FrameTooLong, got {other:?}"),
        }
    }

    #[test]
    fn checks_fields_in_order() {
        let good = FrameHeader::new(9, PartyId::P1, 0, 0, 0);
        let mut h = good;
        h.magic = *b"HTTP";
        assert!(
            matches!(h.check(9, &[PartyId::P1]), Err(NetError::BadMagic { got, .. }) if &got == b"HTTP")
        );
        let mut h = good;
        h.version = 9;
        h.session = 1;
        assert!(matches!(
            h.check(9, &[PartyId::P1]),
            Err(NetError::VersionMismatch { ours: 1, theirs: 9 })
        ));
        let mut h = good;
        h.session = 1;
        assert!(matches!(
            h.check(9, &[PartyId::P1]),
            Err(NetError::SessionMismatch { ours: 9, theirs: 1 })
        ));
        assert!(matches!(
            good.check(9, &[PartyId::P0]),
            Err(NetError::PartyMismatch {
                expected: PartyId::P0,
                got: PartyId::P1
            })
        ));
        assert!(matches!(
            good.check(9, &[PartyId::P0, PartyId::Dealer]),
            Err(NetError::UnexpectedParty {
                got: PartyId::P1,
                ..
            })
        ));
        let mut h = good;
        h.sender = 7;
        assert!(matches!(
            h.check(9, &[PartyId::P1]),
            Err(NetError::UnknownParty(7))
        ));
    }
}
