//! What a party keeps from its offline pass for the online pass, in memory or spilled to
//! disk. Items are consumed in the order they were produced, so a spill file is written
//! and read strictly sequentially (the page cache keeps what fits, the disk holds the
//! rest): material for models that would not fit in memory streams back per operation.

use crate::error::{ProtocolError, Result};
use crate::net::PartyId;
use crate::ring::{self, Ring};
use kernels::dpf::DpfKeys;
use std::any::Any;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// An offline result that can be written to and read back from a spill file.
pub trait Prep: Sized + Send + 'static {
    fn put(&self, out: &mut Vec<u8>);
    fn get(buf: &mut &[u8]) -> Result<Self>;
}

fn bad(detail: impl Into<String>) -> ProtocolError {
    ring::malformed(PartyId::P0, "spill file", detail.into())
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if buf.len() < n {
        return Err(bad(format!("need {n} bytes, {} left", buf.len())));
    }
    let (h, t) = buf.split_at(n);
    *buf = t;
    Ok(h)
}

fn get_u64(buf: &mut &[u8]) -> Result<u64> {
    let b = take(buf, 8)?;
    Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

impl<R: Ring> Prep for Vec<R> {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        ring::encode(self, out);
    }
    fn get(buf: &mut &[u8]) -> Result<Self> {
        let n = get_u64(buf)? as usize;
        let (v, rest) = ring::decode::<R>(buf, n, PartyId::P0, "spill file")?;
        *buf = rest;
        Ok(v)
    }
}

impl<A: Prep, B: Prep> Prep for (A, B) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
    }
    fn get(buf: &mut &[u8]) -> Result<Self> {
        Ok((A::get(buf)?, B::get(buf)?))
    }
}

impl<A: Prep, B: Prep, C: Prep> Prep for (A, B, C) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
        self.2.put(out);
    }
    fn get(buf: &mut &[u8]) -> Result<Self> {
        Ok((A::get(buf)?, B::get(buf)?, C::get(buf)?))
    }
}

impl<A: Prep> Prep for Option<A> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(a) => {
                out.push(1);
                a.put(out);
            }
        }
    }
    fn get(buf: &mut &[u8]) -> Result<Self> {
        match take(buf, 1)?[0] {
            0 => Ok(None),
            1 => Ok(Some(A::get(buf)?)),
            t => Err(bad(format!("option tag {t}"))),
        }
    }
}

/// A batch of one party's DPF keys (a newtype: `Vec<R>` of ring words has its own
/// encoding): the key count, k, then the keys as the dealer serialised them.
pub struct Keys<W: Ring>(pub DpfKeys<W>);

impl<W: Ring> Prep for Keys<W> {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u64).to_le_bytes());
        out.push(self.0.k() as u8);
        self.0.write_to(out);
    }
    fn get(buf: &mut &[u8]) -> Result<Self> {
        let n = get_u64(buf)? as usize;
        let k = take(buf, 1)?[0] as u32;
        if n == 0 {
            return Ok(Keys(DpfKeys::new(k, 0)));
        }
        // `n` is read from the file: `read_from` checks the bytes are there before it
        // reserves anything.
        let (keys, used) = DpfKeys::<W>::read_from(k, n, buf).map_err(|e| bad(e.to_string()))?;
        *buf = &buf[used..];
        Ok(Keys(keys))
    }
}

enum Stored {
    Mem(Box<dyn Any + Send>),
    Disk { len: usize },
}

/// First bytes of a spill file: magic, format version, then the session id (u64 LE). The
/// file is bound to its session: reading it back in another session is refused.
const SPILL_MAGIC: &[u8; 8] = b"QBPREP\x00\x01";
const SPILL_HEADER: usize = 16;

struct Spill {
    path: PathBuf,
    session: u64,
    writer: Option<BufWriter<File>>,
    reader: Option<BufReader<File>>,
    scratch: Vec<u8>,
    bytes: u64,
}

/// The FIFO of offline results.
#[derive(Default)]
pub struct PrepQueue {
    items: VecDeque<Stored>,
    spill: Option<Spill>,
}

impl PrepQueue {
    /// Spill every item to a file in `dir`, bound to `session` (checked when the file is
    /// read back). On Unix the file is unlinked as soon as it is open, so it has no name
    /// while it holds dealer material and disappears with the process even when that is
    /// killed (SIGKILL, out of memory); elsewhere it is removed when the queue is dropped.
    pub fn spill_to(&mut self, dir: &Path, tag: &str, session: u64) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ProtocolError::Config(format!("spill dir {}: {e}", dir.display())))?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("qbert-prep-{tag}-{}-{n}.bin", std::process::id()));
        // a new file only (never through a link planted at that name), readable by this
        // user only: it holds dealer material
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let f = opts
            .open(&path)
            .map_err(|e| ProtocolError::Config(format!("spill file {}: {e}", path.display())))?;
        #[cfg(unix)]
        std::fs::remove_file(&path)
            .map_err(|e| ProtocolError::Config(format!("spill file {}: {e}", path.display())))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(SPILL_MAGIC)
            .and_then(|_| w.write_all(&session.to_le_bytes()))
            .map_err(|e| bad(format!("write: {e}")))?;
        self.spill = Some(Spill {
            path,
            session,
            writer: Some(w),
            reader: None,
            scratch: vec![],
            bytes: 0,
        });
        Ok(())
    }

    /// Bytes written to the spill file so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spill.as_ref().map_or(0, |s| s.bytes)
    }

    pub fn push<T: Prep>(&mut self, t: T) -> Result<()> {
        match self.spill.as_mut() {
            Some(s) => {
                s.scratch.clear();
                t.put(&mut s.scratch);
                let w = s
                    .writer
                    .as_mut()
                    .ok_or_else(|| ProtocolError::Internal("spill file already read".into()))?;
                w.write_all(&s.scratch)
                    .map_err(|e| bad(format!("write: {e}")))?;
                s.bytes += s.scratch.len() as u64;
                self.items.push_back(Stored::Disk {
                    len: s.scratch.len(),
                });
            }
            None => self.items.push_back(Stored::Mem(Box::new(t))),
        }
        Ok(())
    }

    pub fn pop<T: Prep>(&mut self, what: &'static str) -> Result<T> {
        let item = self
            .items
            .pop_front()
            .ok_or_else(|| ProtocolError::Internal(format!("{what}: offline pass missing")))?;
        match item {
            Stored::Mem(b) => b
                .downcast::<T>()
                .map(|b| *b)
                .map_err(|_| ProtocolError::Internal(format!("{what}: offline pass out of step"))),
            Stored::Disk { len } => {
                let s = self
                    .spill
                    .as_mut()
                    .ok_or_else(|| ProtocolError::Internal("no spill file".into()))?;
                if let Some(mut w) = s.writer.take() {
                    w.flush().map_err(|e| bad(format!("flush: {e}")))?;
                    let mut f = w.into_inner().map_err(|e| bad(format!("flush: {e}")))?;
                    f.seek(SeekFrom::Start(0))
                        .map_err(|e| bad(format!("seek: {e}")))?;
                    let mut r = BufReader::with_capacity(1 << 20, f);
                    let mut hdr = [0u8; SPILL_HEADER];
                    r.read_exact(&mut hdr)
                        .map_err(|e| bad(format!("read: {e}")))?;
                    if &hdr[..8] != SPILL_MAGIC {
                        return Err(ProtocolError::Config(format!(
                            "{} is not a spill file of this version",
                            s.path.display()
                        )));
                    }
                    let theirs = u64::from_le_bytes(hdr[8..].try_into().expect("8 bytes"));
                    if theirs != s.session {
                        return Err(ProtocolError::Config(format!(
                            "dealer material in {} belongs to session {theirs:#018x}, not to this session {:#018x}: refused",
                            s.path.display(),
                            s.session
                        )));
                    }
                    s.reader = Some(r);
                }
                let r = s
                    .reader
                    .as_mut()
                    .ok_or_else(|| ProtocolError::Internal("no spill reader".into()))?;
                s.scratch.resize(len, 0);
                r.read_exact(&mut s.scratch)
                    .map_err(|e| bad(format!("read: {e}")))?;
                let mut buf = s.scratch.as_slice();
                let t = T::get(&mut buf)?;
                if !buf.is_empty() {
                    return Err(ProtocolError::Internal(format!(
                        "{what}: spilled item out of step"
                    )));
                }
                Ok(t)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl Drop for PrepQueue {
    fn drop(&mut self) {
        if let Some(s) = self.spill.take() {
            drop(s.writer);
            drop(s.reader);
            // on Unix the file was unlinked when it was opened
            #[cfg(not(unix))]
            let _ = std::fs::remove_file(&s.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Extra<T> = Option<(Vec<T>, Vec<T>, Vec<T>)>;

    fn round_trip(spill: bool) {
        let dir = std::env::temp_dir().join("qbert-prep-test");
        let mut q = PrepQueue::default();
        if spill {
            q.spill_to(&dir, &format!("t{spill}"), 5).unwrap();
        }
        let (k0, _) = kernels::dpf::gen::<u32, _>(6, 5, 1, &mut rand::rngs::OsRng);
        q.push(vec![1u32, 2, 3]).unwrap();
        q.push((vec![7u64], Some((vec![1u16], vec![2u16], vec![3u16]))))
            .unwrap();
        q.push(Keys(DpfKeys::from_keys(std::slice::from_ref(&k0))))
            .unwrap();
        q.push((vec![9u32], None::<(Vec<u32>, Vec<u32>, Vec<u32>)>))
            .unwrap();
        assert_eq!(q.len(), 4);
        assert_eq!(q.pop::<Vec<u32>>("a").unwrap(), vec![1, 2, 3]);
        let b: (Vec<u64>, Extra<u16>) = q.pop("b").unwrap();
        assert_eq!(b.0, vec![7]);
        assert_eq!(b.1.unwrap().2, vec![3]);
        let keys: Keys<u32> = q.pop("c").unwrap();
        assert_eq!(
            kernels::dpf::eval_full(&keys.0.key(0)),
            kernels::dpf::eval_full(&k0)
        );
        let d: (Vec<u32>, Extra<u32>) = q.pop("d").unwrap();
        assert!(d.1.is_none());
        assert!(q.pop::<Vec<u32>>("e").is_err());
        assert_eq!(q.spilled_bytes() > 0, spill);
    }

    #[test]
    fn items_come_back_in_order_from_memory_and_from_disk() {
        round_trip(false);
        round_trip(true);
    }

    #[test]
    fn spilled_material_of_another_session_is_refused() {
        let dir = std::env::temp_dir().join(format!("qbert-prep-session-{}", std::process::id()));
        let mut q = PrepQueue::default();
        q.spill_to(&dir, "s", 0x11).unwrap();
        q.push(vec![1u32, 2]).unwrap();
        let path = q.spill.as_ref().unwrap().path.clone();
        #[cfg(unix)]
        assert!(!path.exists(), "the spill file has no name once open");
        let w = q.spill.as_mut().unwrap().writer.as_mut().unwrap();
        w.flush().unwrap();
        // another session's header in its place, written through the open file
        let f = w.get_mut();
        f.seek(SeekFrom::Start(8)).unwrap();
        f.write_all(&0x22u64.to_le_bytes()).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = f.metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "spill files are private");
        }
        let e = q.pop::<Vec<u32>>("x").unwrap_err().to_string();
        assert!(e.contains("session 0x0000000000000022"), "{e}");
        assert!(e.contains("0x0000000000000011"), "{e}");
        drop(q);
        assert!(!path.exists());
    }

    #[test]
    fn a_wrong_type_is_an_error_not_a_panic() {
        let mut q = PrepQueue::default();
        q.push(vec![1u32]).unwrap();
        assert!(q.pop::<Vec<u64>>("x").is_err());
        let mut buf: &[u8] = &[5, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(<Vec<u32> as Prep>::get(&mut buf).is_err());
    }
}
