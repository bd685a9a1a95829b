//! `harness party`: one party of a secure inference in its own process, over TCP.
//!
//! P0 listens at --p0 (P1 and the dealer connect to it), P1 listens at --p1 (the dealer
//! connects to it), the dealer connects to both. Every party derives the public plan
//! (shapes, tables) from the same flags; only P0 builds the model, only P1 the input.

use crate::program::{BertProgram, Tables};
use crate::report::RunReport;
use crate::run::{dealer_seeds, hello_of, prepare, Prepared, RunSpec};
use anyhow::{bail, Context, Result};
use protocol::handshake::WithHandshake;
use protocol::net::tcp::{self, Listener, Security};
use protocol::net::tls::TlsSetup;
use protocol::net::{LinkConfig, PartyId, Transport};
use protocol::session::drive;
use protocol::{Engine, Phase};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The command line of `harness party` besides the run itself.
#[derive(Clone, Debug)]
pub struct PartyOptions {
    /// p0 | p1 | dealer
    pub role: String,
    /// Where P0 and P1 listen.
    pub p0: String,
    pub p1: String,
    /// How long to keep trying to reach a peer.
    pub connect_timeout: Duration,
    /// This party's key and certificate and the peers' certificates (`harness keygen`).
    pub tls_dir: Option<PathBuf>,
    /// Plain TCP instead of TLS.
    pub insecure: bool,
    /// Write the report here (atomically, only after a successful run).
    pub json: Option<PathBuf>,
}

/// The security of this party's links from its options: TLS from `--tls-dir`, plain TCP
/// with `--insecure`, and a refusal to start with neither. Does not communicate.
pub fn security_of(me: PartyId, o: &PartyOptions) -> Result<Security> {
    match (&o.tls_dir, o.insecure) {
        (Some(_), true) => bail!("--tls-dir and --insecure exclude each other"),
        (Some(dir), false) => Ok(Security::Tls(Arc::new(
            TlsSetup::load(dir, me).with_context(|| format!("loading TLS material for {me}"))?,
        ))),
        (None, true) => Ok(Security::Insecure),
        (None, false) => bail!(
            "no TLS material: run `harness keygen --role p0|p1|dealer --out DIR` for each party, give every party the others' .crt files and pass --tls-dir DIR, or pass --insecure for plain TCP (benchmarks only)"
        ),
    }
}

/// Connects this party to the two others: P0 accepts P1 and the dealer, P1 connects to P0
/// and accepts the dealer, the dealer connects to both. `listener` is this party's bound
/// socket (P0 and P1; bound from `p0`/`p1` when `None`). Every wait is bounded by
/// `connect_timeout`. Communicates (TCP, TLS and hello handshakes).
pub fn connect_links(
    me: PartyId,
    p0: &str,
    p1: &str,
    listener: Option<Listener>,
    link: &LinkConfig,
    sec: &Security,
    connect_timeout: Duration,
) -> Result<Vec<Box<dyn Transport>>> {
    let bind = |addr: &str| -> Result<Listener> {
        match listener {
            Some(l) => Ok(l),
            None => Listener::bind(addr).with_context(|| format!("binding {addr}")),
        }
    };
    let wait = Some(connect_timeout);
    let mut links = vec![];
    match me {
        PartyId::P0 => {
            let l = bind(p0)?;
            links = l
                .accept_all_with(me, &[PartyId::P1, PartyId::Dealer], link, sec, wait)
                .context("P0 waiting for P1 and the dealer")?;
        }
        PartyId::P1 => {
            let l = bind(p1)?;
            links.push(
                tcp::connect_with(p0, me, PartyId::P0, link, connect_timeout, sec)
                    .with_context(|| format!("P1 connecting to P0 at {p0}"))?,
            );
            links.extend(
                l.accept_all_with(me, &[PartyId::Dealer], link, sec, wait)
                    .context("P1 waiting for the dealer")?,
            );
        }
        PartyId::Dealer => {
            for (peer, addr) in [(PartyId::P0, p0), (PartyId::P1, p1)] {
                links.push(
                    tcp::connect_with(addr, me, peer, link, connect_timeout, sec)
                        .with_context(|| format!("the dealer connecting to {peer} at {addr}"))?,
                );
            }
        }
    }
    Ok(links)
}

/// `harness party`: one party in its own process. Prints the report; with `--json`
/// writes it atomically after a successful run (a failed run leaves no file).
pub fn run_party(o: &PartyOptions, spec: &RunSpec) -> Result<()> {
    let me: PartyId = o
        .role
        .parse()
        .map_err(|_| anyhow::anyhow!("--role {}: expected p0, p1 or dealer", o.role))?;
    let sec = security_of(me, o)?;
    eprintln!("{me}: transport {}", sec.describe());
    // Every party prepares the public plan; in this test harness the model and input come
    // from seeds, and each party keeps only what its role may hold.
    let prep = prepare(spec)?;
    let mut link = LinkConfig::new(spec.session, spec.net.clone());
    link.recv_timeout = Some(spec.timeout);
    let links = connect_links(me, &o.p0, &o.p1, None, &link, &sec, o.connect_timeout)?;
    let report = run_on_links(me, links, spec, &prep, sec.label(), o.json.as_deref())?;
    println!("== {me}");
    print!("{}", report.render());
    if report.verified == Some(false) {
        bail!("verification failed: secure logits differ from the plaintext model with the same carries");
    }
    Ok(())
}

/// Runs this party's side of the inference over connected `links` (handshake, register,
/// offline, online, then an exchange of the parties' counters so that each can report
/// the whole run). `transport` names the links in the report. With `json`, the report
/// is written there atomically once the run has succeeded (and verified, where P1 can):
/// a failed run leaves no file. A peer that closes, stalls past `spec.timeout` or sends
/// garbage ends the run with an error naming the peer; the links are closed and the
/// writer threads joined when this returns. Communicates.
pub fn run_on_links(
    me: PartyId,
    links: Vec<Box<dyn Transport>>,
    spec: &RunSpec,
    prep: &Prepared,
    transport: &str,
    json: Option<&std::path::Path>,
) -> Result<RunReport> {
    let mut e = match me {
        PartyId::P0 => Engine::p0(prep.model.clone()),
        PartyId::P1 => Engine::p1(),
        PartyId::Dealer => {
            if spec.dealer_seed.is_none() && spec.verify {
                eprintln!("note: no --seed given: P1 cannot verify against the plaintext model");
            }
            Engine::dealer(dealer_seeds(spec))
        }
    };
    e.set_lut_mode(spec.lut_mode);
    e.set_truncation(spec.truncation);
    if let (Some(dir), PartyId::P0 | PartyId::P1) = (&spec.spill, me) {
        e.spill_to(dir, spec.session)?;
    }
    for t in links {
        e.ctx.connect(t);
    }
    let prog = BertProgram {
        shapes: prep.shapes.clone(),
        consts: prep.consts.clone(),
        tables: Tables::new(&prep.consts),
        input: if me == PartyId::P1 {
            Some(prep.input.clone())
        } else {
            None
        },
        progress: None,
    };
    let agreed = WithHandshake {
        inner: &prog,
        hello: hello_of(spec, prep),
    };
    let t = std::time::Instant::now();
    let rep = drive(&mut e, &agreed).with_context(|| format!("{me}"))?;
    let wall = t.elapsed();
    // Every party sends its counters to the others, so each prints the whole report.
    let accts = exchange_accounting(&mut e, me, &rep.acct).with_context(|| format!("{me}"))?;
    let logits = rep.output.clone().unwrap_or_default();
    let res = protocol::session::LocalRun {
        p0: party_report(&accts[0], if me == PartyId::P0 { Some(&rep) } else { None }),
        p1: party_report(&accts[1], if me == PartyId::P1 { Some(&rep) } else { None }),
        dealer: party_report(
            &accts[2],
            if me == PartyId::Dealer {
                Some(&rep)
            } else {
                None
            },
        ),
    };
    let mut report = crate::run::report_of(spec, prep, &res, logits.clone());
    report.wall_s = wall.as_secs_f64();
    report.rounds = rep.rounds;
    report.transport = transport.into();
    if me != PartyId::P1 {
        // only P1 learns the output; the float reference depends on P1's input
        report.logits.clear();
        report.logits_float.clear();
        report.max_abs_err_vs_float = f64::NAN;
    }
    if me == PartyId::P1 && spec.dealer_seed.is_some() && spec.verify {
        // test mode: the dealer's seed was shared, so P1 can rerun the plaintext model
        // with the dealer's masks (the same derivation as the dealer's, session mixed in)
        let seeds = dealer_seeds(spec);
        let (same, _) = protocol::session::run_plain(
            prep.model.clone(),
            Some(seeds.mask),
            spec.truncation,
            &prog,
        )?;
        report.verified = Some(same.as_ref() == Some(&logits));
    }
    if let (Some(path), false) = (json, report.verified == Some(false)) {
        report
            .write_json(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// Send this party's accounting to the two others and receive theirs: [P0, P1, D].
fn exchange_accounting(
    e: &mut Engine,
    me: PartyId,
    mine: &protocol::Accounting,
) -> Result<[protocol::Accounting; 3]> {
    const TAG: u32 = u32::MAX - 2;
    e.ctx.label(
        Phase::Register,
        protocol::account::NO_LAYER,
        protocol::OpKind::Other,
    );
    let others: Vec<PartyId> = [PartyId::P0, PartyId::P1, PartyId::Dealer]
        .into_iter()
        .filter(|p| *p != me)
        .collect();
    for p in &others {
        e.ctx.send(*p, TAG, mine.to_bytes())?;
    }
    let mut out: [protocol::Accounting; 3] = Default::default();
    out[protocol::account::party_index(me)] = mine.clone();
    for p in others {
        let b = e.ctx.recv(p, TAG)?;
        out[protocol::account::party_index(p)] = protocol::Accounting::from_bytes(&b)
            .with_context(|| format!("{p} sent unreadable accounting"))?;
    }
    e.ctx.flush()?;
    Ok(out)
}

/// A report for a party from its counters (times only for this party).
fn party_report(
    acct: &protocol::Accounting,
    own: Option<&protocol::session::PartyReport<crate::program::Logits>>,
) -> protocol::session::PartyReport<crate::program::Logits> {
    protocol::session::PartyReport {
        role: protocol::Role::Plain,
        output: None,
        register_time: own.map_or(Duration::ZERO, |r| r.register_time),
        offline_time: own.map_or(Duration::ZERO, |r| r.offline_time),
        online_time: own.map_or(Duration::ZERO, |r| r.online_time),
        rounds: own.map_or(0, |r| r.rounds),
        acct: acct.clone(),
    }
}
