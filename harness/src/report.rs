//! The report of a run: the figures PROTOCOL.md asks every run to report, printed as a
//! table, appended to CSV, written as JSON.

use protocol::account::{Accounting, Phase};
use protocol::net::PartyId;
use serde::Serialize;
use std::path::Path;

/// One operation kind's costs, summed over layers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OpRow {
    pub op: String,
    pub online_ms: f64,
    pub offline_ms: f64,
    pub mb_p0_to_p1: f64,
    pub mb_p1_to_p0: f64,
    pub rounds: u32,
    /// Dealer material for this kind, both parties.
    pub dealer_mb: f64,
    /// Offline P0 <-> P1 traffic for this kind.
    pub offline_mb: f64,
}

/// One encoder layer's online costs (all operation kinds together).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LayerRow {
    pub layer: u16,
    pub online_ms: f64,
    pub mb_p0_to_p1: f64,
    pub mb_p1_to_p0: f64,
    pub rounds: u32,
    pub dealer_mb: f64,
}

/// One row of `results/runs.csv` (megabytes to 3 decimals).
#[derive(Clone, Debug, Serialize)]
pub struct CsvRow {
    /// qbert (ours) or crypten (the baseline).
    pub protocol: String,
    pub model: String,
    pub quant: String,
    pub seq: usize,
    pub batch: usize,
    pub layers: usize,
    pub net: String,
    pub transport: String,
    pub lut_mode: String,
    pub backend: String,
    pub online_s: f64,
    pub offline_s: f64,
    pub online_mb: f64,
    pub online_mb_p0_to_p1: f64,
    pub online_mb_p1_to_p0: f64,
    pub dealer_mb_p0: f64,
    pub dealer_mb_p1: f64,
    pub offline_mb: f64,
    pub rounds: u32,
    pub verified: Option<bool>,
    pub max_abs_err_vs_plain: Option<f64>,
    pub max_abs_err_vs_float: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    /// qbert (ours) or crypten (the baseline).
    pub protocol: String,
    pub model: String,
    pub quant: String,
    pub seq: usize,
    pub batch: usize,
    pub layers: usize,
    pub net: String,
    pub transport: String,
    pub lut_mode: String,
    /// stochastic | exact (how tables drop the bits below their window).
    pub truncation: String,
    pub backend: String,
    pub online_s: f64,
    pub offline_s: f64,
    pub register_s: f64,
    pub wall_s: f64,
    /// Online bytes sent by all parties together.
    pub online_bytes: u64,
    pub online_bytes_p0_to_p1: u64,
    pub online_bytes_p1_to_p0: u64,
    /// Dealer material for both parties plus offline P0/P1 traffic.
    pub offline_bytes: u64,
    pub dealer_bytes_p0: u64,
    pub dealer_bytes_p1: u64,
    pub offline_p0_p1_bytes: u64,
    /// Model registration traffic (once per model).
    pub register_bytes: u64,
    pub rounds: u32,
    /// True only when the secure output equals, bit for bit, the plaintext quantized
    /// model run with the same carries (derived from the dealer's seed); None: not checked.
    pub verified: Option<bool>,
    pub max_abs_err_vs_plain: Option<f64>,
    pub max_abs_err_vs_float: f64,
    /// Table lookups in the plaintext reference whose index left its window.
    pub out_of_window: Option<u64>,
    pub lookups: Option<u64>,
    pub logits: Vec<f64>,
    pub logits_plain: Vec<f64>,
    pub logits_float: Vec<f64>,
    #[serde(skip)]
    pub logits_int: Vec<i64>,
    pub ops: Vec<OpRow>,
    /// Per encoder layer (work outside the layers is in `ops` only).
    pub per_layer: Vec<LayerRow>,
}

impl RunReport {
    /// Byte and round totals from P0's, P1's and the dealer's accounting (in that order).
    pub fn from_accounting(accts: &[&Accounting; 3], rounds: u32) -> Self {
        let [p0, p1, d] = *accts;
        let on01 = p0.bytes(Phase::Online, PartyId::P1);
        let on10 = p1.bytes(Phase::Online, PartyId::P0);
        let d0 = d.bytes(Phase::Offline, PartyId::P0);
        let d1 = d.bytes(Phase::Offline, PartyId::P1);
        let off = p0.bytes(Phase::Offline, PartyId::P1) + p1.bytes(Phase::Offline, PartyId::P0);
        let reg = p0.bytes(Phase::Register, PartyId::P1)
            + d.bytes(Phase::Register, PartyId::P0)
            + d.bytes(Phase::Register, PartyId::P1);
        RunReport {
            protocol: "qbert".into(),
            online_bytes: on01 + on10,
            online_bytes_p0_to_p1: on01,
            online_bytes_p1_to_p0: on10,
            offline_bytes: d0 + d1 + off,
            dealer_bytes_p0: d0,
            dealer_bytes_p1: d1,
            offline_p0_p1_bytes: off,
            register_bytes: reg,
            rounds,
            backend: kernels::cpu_backend(),
            ops: crate::run::op_rows(&accts[..]),
            per_layer: crate::run::layer_rows(&accts[..]),
            ..Default::default()
        }
    }

    /// The per-operation table and the summary, for the terminal.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "{:<12} {:>10} {:>11} {:>10} {:>10} {:>7} {:>11}\n",
            "op", "online ms", "offline ms", "MB P0->P1", "MB P1->P0", "rounds", "dealer MB"
        );
        for r in &self.ops {
            s += &format!(
                "{:<12} {:>10.1} {:>11.1} {:>10.3} {:>10.3} {:>7} {:>11.1}\n",
                r.op,
                r.online_ms,
                r.offline_ms,
                r.mb_p0_to_p1,
                r.mb_p1_to_p0,
                r.rounds,
                r.dealer_mb
            );
        }
        let mb = |b: u64| b as f64 / 1e6;
        s += &format!(
            "\n{} | {} {} seq {} batch {} layers {} | net {} | transport {} | tables {} | backend {}\n",
            self.protocol,
            self.model,
            self.quant,
            self.seq,
            self.batch,
            self.layers,
            self.net,
            self.transport_shown(),
            self.tables_shown(),
            self.backend
        );
        s += &format!(
            "online  {:.3} s, {:.2} MB (P0->P1 {:.2}, P1->P0 {:.2}), {} rounds\n",
            self.online_s,
            mb(self.online_bytes),
            mb(self.online_bytes_p0_to_p1),
            mb(self.online_bytes_p1_to_p0),
            self.rounds
        );
        s += &format!(
            "offline {:.3} s, dealer material {:.1} MB to P0 + {:.1} MB to P1, P0<->P1 {:.1} MB\n",
            self.offline_s,
            mb(self.dealer_bytes_p0),
            mb(self.dealer_bytes_p1),
            mb(self.offline_p0_p1_bytes)
        );
        s += &format!(
            "registration (once per model) {:.3} s, {:.1} MB\n",
            self.register_s,
            mb(self.register_bytes)
        );
        let crypten = self.protocol == "crypten";
        match self.verified {
            Some(true) if crypten => {
                s += &format!(
                    "verified: |logit - float logit| <= {} (CrypTen's approximations), |logit - plaintext fixed point| <= {}\n",
                    crate::crypten::FLOAT_TOLERANCE,
                    crate::crypten::PLAIN_TOLERANCE
                )
            }
            Some(false) if crypten => {
                s += &format!(
                    "VERIFICATION FAILED: |logit - float logit| > {} or |logit - plaintext fixed point| > {}\n",
                    crate::crypten::FLOAT_TOLERANCE,
                    crate::crypten::PLAIN_TOLERANCE
                )
            }
            Some(true) => s += "verified: secure output == plaintext quantized model with the same carries (bit-exact)\n",
            Some(false) => s += "VERIFICATION FAILED: secure output differs from the plaintext quantized model with the same carries\n",
            None => s += "verified: not checked\n",
        }
        if let (Some(e), true) = (self.max_abs_err_vs_plain, crypten) {
            s += &format!("max |logit error| vs plaintext fixed point (same algorithm): {e:.4}\n");
        } else if let Some(e) = self.max_abs_err_vs_plain {
            s += &format!(
                "max |logit error| vs plaintext quantized (deterministic rounding): {e:.4}\n"
            );
        }
        if self.max_abs_err_vs_float.is_finite() {
            s += &format!(
                "max |logit error| vs float model: {:.4}\n",
                self.max_abs_err_vs_float
            );
        }
        if let (Some(o), Some(l)) = (self.out_of_window, self.lookups) {
            s += &format!("table indices outside their window (plaintext run): {o} of {l}\n");
        }
        let r4 = |v: &[f64]| {
            v.iter()
                .map(|x| (x * 1e4).round() / 1e4)
                .collect::<Vec<_>>()
        };
        if self.logits.is_empty() {
            s += "logits: held by P1 only\n";
        } else {
            s += &format!("logits (secure): {:?}\n", r4(&self.logits));
            s += &format!("logits (float):  {:?}\n", r4(&self.logits_float));
        }
        s
    }
    /// This run as one row of `results/runs.csv`.
    /// The table mode, with "+exact" for exact truncation (the CSV keeps its columns: a
    /// run with exact truncation is told apart in `lut_mode`).
    pub fn tables_shown(&self) -> String {
        match self.truncation.as_str() {
            "exact" => format!("{}+exact", self.lut_mode),
            _ => self.lut_mode.clone(),
        }
    }

    pub fn csv_row(&self) -> CsvRow {
        let mb = |b: u64| (b as f64 / 1e6 * 1e3).round() / 1e3;
        CsvRow {
            protocol: self.protocol.clone(),
            model: self.model.clone(),
            quant: self.quant.clone(),
            seq: self.seq,
            batch: self.batch,
            layers: self.layers,
            net: self.net.clone(),
            transport: self.transport.clone(),
            lut_mode: self.tables_shown(),
            backend: self.backend.clone(),
            online_s: self.online_s,
            offline_s: self.offline_s,
            online_mb: mb(self.online_bytes),
            online_mb_p0_to_p1: mb(self.online_bytes_p0_to_p1),
            online_mb_p1_to_p0: mb(self.online_bytes_p1_to_p0),
            dealer_mb_p0: mb(self.dealer_bytes_p0),
            dealer_mb_p1: mb(self.dealer_bytes_p1),
            offline_mb: mb(self.offline_bytes),
            rounds: self.rounds,
            verified: self.verified,
            max_abs_err_vs_plain: self.max_abs_err_vs_plain,
            max_abs_err_vs_float: self.max_abs_err_vs_float,
        }
    }

    /// Append this run to a CSV file (header first when the file is new); fields are
    /// quoted as needed by the `csv` crate.
    pub fn append_csv(&self, path: &Path) -> anyhow::Result<()> {
        // Atomic: the existing rows and the new one are written to a temporary file in
        // the same directory, which then replaces the file in one rename; a failed or
        // killed run leaves the old file whole, never a half row.
        if let Some(d) = path.parent() {
            if !d.as_os_str().is_empty() {
                std::fs::create_dir_all(d)?;
            }
        }
        // Only a regular file has rows to keep: a device or FIFO (`/dev/stdout`, a pipe)
        // is not read (that would block on a terminal or eat the pipe), it gets the
        // header and the row.
        let old = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => std::fs::read(path)?,
            Ok(_) => vec![],
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(e.into()),
        };
        let mut w = csv::WriterBuilder::new()
            .has_headers(old.is_empty())
            .from_writer(old);
        w.serialize(self.csv_row())?;
        let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
        write_atomically(path, &bytes)
    }

    /// Write the JSON report atomically (temporary file, then rename).
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        write_atomically(path, &serde_json::to_vec_pretty(self)?)
    }

    /// How the report names its transport for people: plain TCP is flagged INSECURE.
    pub fn transport_shown(&self) -> &str {
        match self.transport.as_str() {
            "tcp-insecure" => "tcp (INSECURE: no TLS)",
            "tcp-tls" => "tcp + TLS 1.3",
            t => t,
        }
    }
}

/// Finishes a CSV written into memory and writes it to `path` atomically
/// ([`write_atomically`]).
pub fn write_csv_atomically(w: csv::Writer<Vec<u8>>, path: &Path) -> anyhow::Result<()> {
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a fresh temporary file beside `path`, syncs it, renames it over
/// `path` and syncs the directory: readers see the old file or the whole new one, also
/// after a crash. The temporary name is unique per process and call (threads writing the
/// same path do not share one) and is created new (never through a planted link); it is
/// removed on error.
///
/// A symbolic link is followed (the file it names is replaced, the link stays), and a
/// path that is neither a regular file nor a directory (`/dev/null`, a FIFO, a terminal)
/// is written in place: a rename would replace the device with a regular file (`--csv
/// /dev/null` run as root once turned the machine's /dev/null into one).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let resolved;
    let path = match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(target) => {
                resolved = target;
                resolved.as_path()
            }
            // a dangling link: replaced by the file, as before
            Err(_) => path,
        },
        _ => path,
    };
    if let Ok(md) = std::fs::metadata(path) {
        if !md.is_file() && !md.is_dir() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|mut f| f.write_all(bytes))
                .map_err(|e| {
                    anyhow::Error::new(e).context(format!("writing {}", path.display()))
                })?;
            return Ok(());
        }
    }
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} is not a file path", path.display()))?;
    let (tmp, mut f) = loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = path.with_file_name(tmp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            // left by a crashed process with our pid: take the next name
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("creating {}", tmp.display())))
            }
        }
    };
    let res = (|| -> std::io::Result<()> {
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        {
            // the rename is durable once the directory is
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(res?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("qbert-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A fresh FIFO in a scratch directory and a reader on it, opened non-blocking (so it
    /// does not wait for a writer, and a test that goes wrong fails instead of hanging);
    /// `None` (the test skips) where `mkfifo` is missing. Returns (dir, fifo, reader).
    #[cfg(target_os = "linux")]
    fn fifo_with_reader(
        tag: &str,
    ) -> Option<(std::path::PathBuf, std::path::PathBuf, std::fs::File)> {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000;
        let dir = scratch_dir(tag);
        let fifo = dir.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !matches!(made, Ok(s) if s.success()) {
            eprintln!("skipped: mkfifo is not available");
            return None;
        }
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        Some((dir, fifo, reader))
    }

    /// A FIFO (as /dev/null or a pipe: not a regular file) is written in place and stays
    /// a FIFO; its reader gets the bytes. (The reader is opened non-blocking first, so a
    /// regression fails the assertions instead of hanging.)
    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_is_written_in_place_not_replaced() {
        use std::io::Read;
        use std::os::unix::fs::FileTypeExt;
        let Some((dir, fifo, mut reader)) = fifo_with_reader("atomic-fifo") else {
            return;
        };
        write_atomically(&fifo, b"row 1\n").unwrap();
        let ft = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(ft.is_fifo(), "the FIFO was replaced: {ft:?}");
        let mut got = [0u8; 16];
        let n = reader.read(&mut got).unwrap_or(0);
        assert_eq!(&got[..n], b"row 1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Appending a row to a FIFO (as `--csv /dev/stdout` into a pipe) does not read it:
    /// the reader gets the header and the row, and the call returns.
    #[cfg(target_os = "linux")]
    #[test]
    fn appending_to_a_fifo_writes_header_and_row_without_reading() {
        use std::io::Read;
        let Some((dir, fifo, mut reader)) = fifo_with_reader("append-fifo") else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let fifo = fifo.clone();
            // a regression blocks in open(2) for reading; the test then fails on the
            // timeout below and the thread ends with the process
            std::thread::spawn(move || {
                let _ = tx.send(RunReport::default().append_csv(&fifo).is_ok());
            });
        }
        let done = rx.recv_timeout(std::time::Duration::from_secs(20));
        assert_eq!(done, Ok(true), "append_csv blocked or failed on a FIFO");
        let mut got = vec![0u8; 4096];
        let n = reader.read(&mut got).unwrap_or(0);
        let text = String::from_utf8_lossy(&got[..n]).to_string();
        assert!(text.starts_with("protocol,"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A symbolic link is followed: its target gets the bytes, the link stays a link.
    #[cfg(unix)]
    #[test]
    fn a_link_is_followed_not_replaced() {
        let dir = scratch_dir("atomic-link");
        let target = dir.join("target.json");
        let link = dir.join("link.json");
        std::fs::write(&target, b"old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomically(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn threads_writing_one_path_each_leave_a_whole_file() {
        let dir = std::env::temp_dir().join(format!("qbert-atomic-threads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.json");
        let bodies: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 300_000]).collect();
        std::thread::scope(|s| {
            for b in &bodies {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..5 {
                        write_atomically(path, b).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&path).unwrap();
        assert!(bodies.contains(&got), "a torn file of {} bytes", got.len());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("out.json")],
            "temporary files left"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn csv_rows_quote_fields_with_commas() {
        let dir = std::env::temp_dir().join(format!("qbert-csv-{}", std::process::id()));
        let path = dir.join("runs.csv");
        let r = RunReport {
            model: "bert-tiny".into(),
            backend: "cpu (avx512, 2 threads)".into(),
            verified: Some(true),
            ..RunReport::default()
        };
        r.append_csv(&path).unwrap();
        r.append_csv(&path).unwrap();
        let mut rd = csv::Reader::from_path(&path).unwrap();
        assert_eq!(rd.headers().unwrap().len(), 22);
        assert_eq!(&rd.headers().unwrap()[0], "protocol");
        let rows: Vec<csv::StringRecord> = rd.records().map(|x| x.unwrap()).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[1][9], "cpu (avx512, 2 threads)");
        assert_eq!(&rows[1][19], "true");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
