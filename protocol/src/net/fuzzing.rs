//! Entry points for the fuzz targets in `fuzz/` (not part of the API; hidden from docs).
//! The frame types stay crate-private; these functions drive them over arbitrary bytes
//! exactly as a TCP link does, so the fuzzers exercise the real decoder.

use std::io::{self, Read};

use super::frame::{FrameHeader, FrameReader, HEADER_LEN};
use super::{NetError, PartyId};

/// A reader over fuzz bytes that returns at most `chunk` bytes per call and, when `stall`
/// is set, a `WouldBlock` (a receive timeout) before every other read: frames then
/// arrive in pieces and the reader's resume path runs.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
    stall: bool,
    flip: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stall {
            self.flip = !self.flip;
            if self.flip {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Decodes and checks every frame header found in `data` (every 27-byte window), then
/// reads frames from `data` with a [`FrameReader`] limited to `max_frame` bytes per
/// payload, delivering at most `chunk` bytes per read (and stalling when `stall`), with
/// the header check of a link in `session` expecting P0 or the dealer. Returns the
/// number of frames read before the first error, and that error. Does not communicate.
#[doc(hidden)]
pub fn read_frames(
    data: &[u8],
    session: u64,
    max_frame: usize,
    chunk: usize,
    stall: bool,
) -> (usize, Option<NetError>) {
    for w in data.windows(HEADER_LEN).take(64) {
        let h = FrameHeader::decode(w.try_into().expect("window of HEADER_LEN"));
        assert_eq!(FrameHeader::decode(&h.encode()), h, "header round trip");
        let _ = h.check(session, &[PartyId::P0, PartyId::Dealer]);
    }
    let mut r = FrameReader::new(Chunked {
        data,
        chunk: chunk.max(1),
        stall,
        flip: false,
    });
    let mut frames = 0;
    // Each call consumes at least one byte or returns a non-timeout error, so this ends;
    // the bound is only a guard.
    for _ in 0..4 * data.len() + 8 {
        match r.read_frame(max_frame, |h| {
            h.check(session, &[PartyId::P0, PartyId::Dealer])
                .map(|_| ())
        }) {
            Ok((h, payload)) => {
                assert_eq!(payload.len(), h.len as usize, "payload length");
                assert!(payload.len() <= max_frame, "payload above max_frame");
                frames += 1;
            }
            Err(NetError::Timeout) => continue,
            Err(e) => {
                // Poisoned: the same error again.
                let again = r.read_frame(max_frame, |_| Ok(()));
                assert!(again.is_err(), "poisoned reader returned a frame");
                return (frames, Some(e));
            }
        }
    }
    (frames, None)
}
