//! TLS 1.3 with mutual authentication by pinned certificates, under the frame layer of
//! [`super::tcp`].
//!
//! # Trust model
//! Each party has a key pair and a self-signed certificate ([`generate`], `harness
//! keygen`). A party is given its own key and certificate and the certificates of its
//! peers ([`TlsSetup::load`]); there is no CA. On every connection both ends present
//! their certificate (TLS client authentication is mandatory) and each end accepts the
//! peer only if the end-entity certificate is byte for byte the one pinned for the role
//! the peer is expected to have; the handshake signature is still verified against that
//! certificate's key, so only the holder of the pinned key gets through. A listener that
//! accepts several roles (P0 accepts P1 and the dealer) learns the peer's role from
//! which pinned certificate it presented, and the frame layer's hello must then claim
//! the same role. Refusals name the role and both SHA-256 fingerprints.
//!
//! Only TLS 1.3 is enabled, with the `ring` provider (no C/cmake toolchain beyond what
//! `ring` needs). Session resumption and tickets are off: every link is one full
//! handshake.
//!
//! # Threads
//! The endpoint reads on the caller's thread and writes on its writer thread
//! ([`super::link`]); a rustls connection is one state machine for both directions, so
//! both halves share it behind a mutex that is only held while records are encrypted or
//! decrypted, never while a socket call blocks: the reader waits for ciphertext on the
//! socket without the lock and the writer encrypts under the lock, then writes the
//! records after releasing it. Only the writer writes to the socket after the handshake,
//! the closer included: an alert the reader's failure queues goes out with the writer's
//! next records or at close, never interleaved with them.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{NetError, PartyId};

/// The file-name stem of a role's key and certificate: `p0`, `p1`, `dealer`.
pub fn role_file_stem(p: PartyId) -> &'static str {
    match p {
        PartyId::P0 => "p0",
        PartyId::P1 => "p1",
        PartyId::Dealer => "dealer",
    }
}

/// SHA-256 of a certificate's DER, in hex (what `openssl x509 -fingerprint -sha256`
/// shows, without the colons).
pub fn fingerprint(cert_der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, cert_der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 fingerprint of a PEM certificate.
pub fn pem_fingerprint(pem: &str) -> Result<String, NetError> {
    let c = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| NetError::Tls(format!("not a PEM certificate: {e}")))?;
    Ok(fingerprint(&c))
}

/// A fresh key pair and self-signed certificate for `role`, as PEM: (key, certificate).
/// The certificate names the role (`qbert-p0`, ...) for people reading it; what the
/// peers check is the pinned certificate itself, not the name.
pub fn generate(role: PartyId) -> Result<(String, String), NetError> {
    let tls = |e: rcgen::Error| NetError::Tls(format!("generating a certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(tls)?;
    let name = format!("qbert-{}", role_file_stem(role));
    let mut params = rcgen::CertificateParams::new(vec![name.clone()]).map_err(tls)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).map_err(tls)?;
    Ok((key.serialize_pem(), cert.pem()))
}

/// Writes `dir/<role>.key` (private, mode 0600 on Unix, never overwritten with looser
/// permissions) and `dir/<role>.crt` for `role`; returns the two paths.
pub fn keygen(role: PartyId, dir: &Path) -> Result<(PathBuf, PathBuf), NetError> {
    std::fs::create_dir_all(dir)?;
    let (key, cert) = generate(role)?;
    let stem = role_file_stem(role);
    let key_path = dir.join(format!("{stem}.key"));
    let crt_path = dir.join(format!("{stem}.crt"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&key_path)?;
    #[cfg(unix)]
    {
        // an existing file keeps its mode on open: tighten it before writing the key
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(key.as_bytes())?;
    f.sync_all()?;
    std::fs::write(&crt_path, cert)?;
    Ok((key_path, crt_path))
}

/// One party's TLS material: its own key and certificate, and the pinned certificates of
/// the other roles.
pub struct TlsSetup {
    me: PartyId,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pinned: [Option<CertificateDer<'static>>; 3],
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pins: Vec<String> = PartyId::ALL
            .iter()
            .filter_map(|&p| self.pinned(p).map(|c| format!("{p}={}", fingerprint(c))))
            .collect();
        write!(
            f,
            "TlsSetup {{ me: {}, cert: {}, pinned: [{}] }}",
            self.me,
            fingerprint(&self.cert),
            pins.join(", ")
        )
    }
}

fn slot(p: PartyId) -> usize {
    p.to_u8() as usize
}

impl TlsSetup {
    /// From PEM text: this party's key and certificate, and the peers' certificates.
    pub fn from_pem(
        me: PartyId,
        key_pem: &str,
        cert_pem: &str,
        peers: &[(PartyId, String)],
    ) -> Result<Self, NetError> {
        let bad = |what: String, e: rustls::pki_types::pem::Error| {
            NetError::Tls(format!("{what}: not a PEM {e}"))
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad(format!("{me}'s private key"), e))?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad(format!("{me}'s certificate"), e))?;
        let mut pinned: [Option<CertificateDer<'static>>; 3] = Default::default();
        for (p, pem) in peers {
            let c = CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| bad(format!("{p}'s certificate"), e))?;
            pinned[slot(*p)] = Some(c);
        }
        // the role of a peer is read from which pin its certificate matches: one
        // certificate for two roles (or ours for a peer's) would make that ambiguous
        for (i, p) in PartyId::ALL.into_iter().enumerate() {
            let Some(c) = &pinned[slot(p)] else { continue };
            if p != me && c.as_ref() == cert.as_ref() {
                return Err(NetError::Tls(format!(
                    "the certificate pinned for {p} is {me}'s own ({})",
                    fingerprint(c)
                )));
            }
            for q in PartyId::ALL.into_iter().skip(i + 1) {
                if pinned[slot(q)]
                    .as_ref()
                    .is_some_and(|d| d.as_ref() == c.as_ref())
                {
                    return Err(NetError::Tls(format!(
                        "the same certificate is pinned for {p} and {q} ({})",
                        fingerprint(c)
                    )));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let setup = Self {
            me,
            cert,
            key,
            pinned,
            provider,
        };
        // a key that does not match the certificate fails here rather than at a peer
        setup.server_config(&[])?;
        Ok(setup)
    }

    /// Loads `dir/<me>.key`, `dir/<me>.crt` and the certificates of the two other roles
    /// (`dir/p0.crt`, `dir/p1.crt`, `dir/dealer.crt`). A missing file is an error that
    /// says how to make it.
    pub fn load(dir: &Path, me: PartyId) -> Result<Self, NetError> {
        let read = |name: String| {
            let path = dir.join(&name);
            std::fs::read_to_string(&path).map_err(|e| {
                NetError::Tls(format!(
                    "reading {}: {e} (make the key pairs with `harness keygen --role p0|p1|dealer --out {}` and copy each party's .crt to the others, or pass --insecure for plain TCP)",
                    path.display(),
                    dir.display()
                ))
            })
        };
        let stem = role_file_stem(me);
        let key = read(format!("{stem}.key"))?;
        let cert = read(format!("{stem}.crt"))?;
        let mut peers = vec![];
        for p in PartyId::ALL.into_iter().filter(|&p| p != me) {
            peers.push((p, read(format!("{}.crt", role_file_stem(p)))?));
        }
        Self::from_pem(me, &key, &cert, &peers)
    }

    /// Fresh in-memory material for the three roles, each pinning the others (for three
    /// parties in one process), in the order P0, P1, D.
    pub fn ephemeral() -> Result<[TlsSetup; 3], NetError> {
        let mut pems = vec![];
        for p in PartyId::ALL {
            pems.push(generate(p)?);
        }
        let make = |me: PartyId| {
            let peers: Vec<(PartyId, String)> = PartyId::ALL
                .into_iter()
                .filter(|&p| p != me)
                .map(|p| (p, pems[slot(p)].1.clone()))
                .collect();
            Self::from_pem(me, &pems[slot(me)].0, &pems[slot(me)].1, &peers)
        };
        Ok([
            make(PartyId::P0)?,
            make(PartyId::P1)?,
            make(PartyId::Dealer)?,
        ])
    }

    /// This party.
    pub fn me(&self) -> PartyId {
        self.me
    }

    /// The SHA-256 fingerprint of this party's certificate.
    pub fn my_fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    /// Fails unless a certificate is pinned for each of `roles`.
    pub(crate) fn require_pins(&self, roles: &[PartyId]) -> Result<(), NetError> {
        self.pins(roles).map(|_| ())
    }

    fn pinned(&self, p: PartyId) -> Option<&CertificateDer<'static>> {
        self.pinned[slot(p)].as_ref()
    }

    fn pins(&self, roles: &[PartyId]) -> Result<Vec<(PartyId, CertificateDer<'static>)>, NetError> {
        roles
            .iter()
            .map(|&p| {
                self.pinned(p)
                    .cloned()
                    .map(|c| (p, c))
                    .ok_or_else(|| NetError::Tls(format!("no pinned certificate for {p}")))
            })
            .collect()
    }

    fn client_config(&self, peer: PartyId) -> Result<rustls::ClientConfig, NetError> {
        let verifier = Arc::new(Pinned {
            pins: self.pins(&[peer])?,
            algs: self.provider.signature_verification_algorithms,
        });
        let mut c = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(tls_err)?;
        c.resumption = rustls::client::Resumption::disabled();
        Ok(c)
    }

    fn server_config(&self, expected: &[PartyId]) -> Result<rustls::ServerConfig, NetError> {
        let verifier = Arc::new(Pinned {
            pins: self.pins(expected)?,
            algs: self.provider.signature_verification_algorithms,
        });
        let mut s = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(tls_err)?;
        s.send_tls13_tickets = 0;
        Ok(s)
    }
}

fn tls_err(e: rustls::Error) -> NetError {
    NetError::Tls(describe(&e))
}

/// A rustls error for people: our own refusals (certificate not pinned) are shown as
/// written, not as the debug form rustls gives `CertificateError::Other`.
pub fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(o)) => {
            format!("invalid peer certificate: {}", o.0)
        }
        other => other.to_string(),
    }
}

/// A verifier that accepts exactly the pinned end-entity certificates (and checks the
/// handshake signature with the accepted certificate's key).
#[derive(Debug)]
struct Pinned {
    pins: Vec<(PartyId, CertificateDer<'static>)>,
    algs: WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
struct Refused(String);
impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Refused {}

impl Pinned {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self
            .pins
            .iter()
            .any(|(_, c)| c.as_ref() == end_entity.as_ref())
        {
            return Ok(());
        }
        let expected: Vec<String> = self
            .pins
            .iter()
            .map(|(p, c)| format!("{p} {}", fingerprint(c)))
            .collect();
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(Refused(format!(
                "certificate not pinned: expected {}, got {}",
                expected.join(" or "),
                fingerprint(end_entity)
            )))),
        )))
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not enabled".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not enabled".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

type Shared = Arc<Mutex<rustls::Connection>>;

fn lock(c: &Shared) -> MutexGuard<'_, rustls::Connection> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// The result of a TLS handshake on a TCP stream.
pub(crate) struct Established {
    /// Plaintext reads (on the caller's thread).
    pub reader: TlsReader,
    /// Plaintext writes (on the writer thread).
    pub writer: TlsWriter,
    /// The role whose pinned certificate the peer presented.
    pub peer_role: PartyId,
}

/// Runs the TLS handshake on `sock` (blocking, each socket call within `timeout`; the
/// caller bounds the whole handshake): as the client when we connect to `peer`, as the
/// server when we accept one of `expected`. Communicates.
pub(crate) fn establish(
    setup: &TlsSetup,
    sock: &TcpStream,
    role: Side<'_>,
    timeout: Duration,
) -> Result<Established, NetError> {
    let (conn, candidates): (rustls::Connection, Vec<PartyId>) = match role {
        Side::Client(peer) => {
            let cfg = Arc::new(setup.client_config(peer)?);
            let name = ServerName::try_from(format!("qbert-{}", role_file_stem(peer)))
                .map_err(|e| NetError::Tls(e.to_string()))?;
            let c = rustls::ClientConnection::new(cfg, name).map_err(tls_err)?;
            (c.into(), vec![peer])
        }
        Side::Server(expected) => {
            let cfg = Arc::new(setup.server_config(expected)?);
            let c = rustls::ServerConnection::new(cfg).map_err(tls_err)?;
            (c.into(), expected.to_vec())
        }
    };
    let mut conn = conn;
    sock.set_read_timeout(Some(timeout.max(Duration::from_micros(1))))?;
    sock.set_write_timeout(Some(timeout.max(Duration::from_micros(1))))?;
    let mut s = sock;
    let who = candidates
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(" or ");
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut s) {
            return Err(match NetError::from(e) {
                NetError::Tls(m) => NetError::Tls(format!("handshake with {who}: {m}")),
                NetError::Timeout => NetError::Tls(format!(
                    "handshake with {who}: no answer within {timeout:?}"
                )),
                NetError::PeerClosed => NetError::Tls(format!(
                    "handshake with {who}: the peer closed the connection (it may have refused our certificate)"
                )),
                other => other,
            });
        }
    }
    let presented = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| NetError::Tls(format!("handshake with {who}: no peer certificate")))?
        .clone();
    let peer_role = candidates
        .into_iter()
        .find(|&p| {
            setup
                .pinned(p)
                .is_some_and(|c| c.as_ref() == presented.as_ref())
        })
        .ok_or_else(|| NetError::Tls("peer certificate not pinned".into()))?;
    conn.set_buffer_limit(None);
    let shared: Shared = Arc::new(Mutex::new(conn));
    Ok(Established {
        reader: TlsReader {
            conn: shared.clone(),
            sock: sock.try_clone()?,
            buf: vec![0; 64 << 10],
            pos: 0,
            len: 0,
        },
        writer: TlsWriter {
            conn: shared,
            sock: sock.try_clone()?,
            scratch: Vec::new(),
        },
        peer_role,
    })
}

/// Which end of the TLS handshake we are.
#[derive(Clone, Copy)]
pub(crate) enum Side<'a> {
    /// We connected to this peer.
    Client(PartyId),
    /// We accepted a connection from one of these.
    Server(&'a [PartyId]),
}

/// Decrypting reader. A socket timeout leaves it usable (nothing is consumed).
pub(crate) struct TlsReader {
    conn: Shared,
    sock: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

impl Read for TlsReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut c = lock(&self.conn);
                while self.pos < self.len {
                    // an error here means the plaintext buffer is full: hand it out first
                    let n = c
                        .read_tls(&mut &self.buf[self.pos..self.len])
                        .unwrap_or_default();
                    self.pos += n;
                    if let Err(e) = c.process_new_packets() {
                        // fail for good; rustls has queued our alert in the connection,
                        // and the writer's next drain or the closer sends it, in order
                        // with the records before it (only the writer writes)
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    if n == 0 {
                        break;
                    }
                }
                match c.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // closed without close_notify: the frame layer tells a cut frame apart
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
            let n = (&self.sock).read(&mut self.buf)?;
            if n == 0 {
                let mut c = lock(&self.conn);
                let _ = c.read_tls(&mut &[][..]);
                match c.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                    Err(_) => return Ok(0),
                }
            }
            self.pos = 0;
            self.len = n;
        }
    }
}

/// Encrypting writer: each `write` encrypts at most [`WRITE_CHUNK`] bytes under the lock
/// and writes the records to the socket after releasing it.
pub(crate) struct TlsWriter {
    conn: Shared,
    sock: TcpStream,
    scratch: Vec<u8>,
}

const WRITE_CHUNK: usize = 256 << 10;

impl TlsWriter {
    fn drain(&mut self, c: &mut rustls::Connection) -> io::Result<()> {
        self.scratch.clear();
        while c.wants_write() {
            c.write_tls(&mut self.scratch)?;
        }
        Ok(())
    }

    /// What ends this direction once the buffered writer on top has been flushed.
    pub fn closer(&self) -> TlsCloser {
        TlsCloser {
            conn: self.conn.clone(),
            sock: self.sock.try_clone().ok(),
        }
    }
}

/// Sends what the connection still has queued (the alert after a failure) and TLS
/// close_notify (unless an alert was sent), then shuts the socket's write side.
pub(crate) struct TlsCloser {
    conn: Shared,
    sock: Option<TcpStream>,
}

impl TlsCloser {
    pub fn close(self) {
        let Some(sock) = self.sock else { return };
        let mut out = vec![];
        {
            let mut c = lock(&self.conn);
            c.send_close_notify();
            while c.wants_write() {
                if c.write_tls(&mut out).is_err() {
                    break;
                }
            }
        }
        let _ = (&sock).write_all(&out);
        let _ = sock.shutdown(Shutdown::Write);
    }
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(WRITE_CHUNK);
        {
            let conn = self.conn.clone();
            let mut c = lock(&conn);
            c.writer().write_all(&buf[..n])?;
            self.drain(&mut c)?;
        }
        (&self.sock).write_all(&self.scratch)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let conn = self.conn.clone();
        {
            let mut c = lock(&conn);
            self.drain(&mut c)?;
        }
        (&self.sock).write_all(&self.scratch)?;
        (&self.sock).flush()
    }
}
