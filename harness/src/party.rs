//! `harness party`: one party of a secure inference in its own process, over TCP.
//!
//! P0 listens at --p0 (P1 and the dealer connect to it), P1 listens at --p1 (the dealer
//! connects to it), the dealer connects to both. Every party derives the public plan
//! (shapes, tables) from the same flags; only P0 builds the model, only P1 the input.

use crate::program::{BertProgram, Tables};
use crate::run::{dealer_seeds, prepare, RunSpec};
use anyhow::{bail, Context, Result};
use protocol::net::{tcp, LinkConfig, PartyId};
use protocol::session::drive;
use protocol::{Engine, Phase};
use std::time::Duration;

pub fn run_party(role: &str, p0: &str, p1: &str, timeout: Duration, spec: &RunSpec) -> Result<()> {
    let me: PartyId = role
        .parse()
        .map_err(|_| anyhow::anyhow!("--role {role}: expected p0, p1 or dealer"))?;
    // Every party prepares the public plan; in this test harness the model and input come
    // from seeds, and each party keeps only what its role may hold.
    let prep = prepare(spec)?;
    let mut link = LinkConfig::new(spec.session, spec.net.clone());
    link.recv_timeout = Some(Duration::from_secs(600));
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
    if let (Some(dir), PartyId::P0 | PartyId::P1) = (&spec.spill, me) {
        e.spill_to(dir)?;
    }
    match me {
        PartyId::P0 => {
            let l = tcp::Listener::bind(p0).with_context(|| format!("binding {p0}"))?;
            for t in l.accept_all(PartyId::P0, &[PartyId::P1, PartyId::Dealer], &link)? {
                e.ctx.connect(t);
            }
        }
        PartyId::P1 => {
            let l = tcp::Listener::bind(p1).with_context(|| format!("binding {p1}"))?;
            e.ctx
                .connect(tcp::connect(p0, PartyId::P1, PartyId::P0, &link, timeout)?);
            for t in l.accept_all(PartyId::P1, &[PartyId::Dealer], &link)? {
                e.ctx.connect(t);
            }
        }
        PartyId::Dealer => {
            e.ctx.connect(tcp::connect(
                p0,
                PartyId::Dealer,
                PartyId::P0,
                &link,
                timeout,
            )?);
            e.ctx.connect(tcp::connect(
                p1,
                PartyId::Dealer,
                PartyId::P1,
                &link,
                timeout,
            )?);
        }
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
    let t = std::time::Instant::now();
    let rep = drive(&mut e, &prog)?;
    let wall = t.elapsed();
    // Every party sends its counters to the others, so each prints the whole report.
    let accts = exchange_accounting(&mut e, me, &rep.acct)?;
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
    let mut report = crate::run::report_of(spec, &prep, &res, logits.clone());
    report.wall_s = wall.as_secs_f64();
    report.rounds = rep.rounds;
    report.transport = "tcp".into();
    if me != PartyId::P1 {
        // only P1 learns the output; the float reference depends on P1's input
        report.logits.clear();
        report.logits_float.clear();
        report.max_abs_err_vs_float = f64::NAN;
    }
    if me == PartyId::P1 {
        if let Some(seed) = spec.dealer_seed.filter(|_| spec.verify) {
            // test mode: the dealer's seed was shared, so P1 can rerun the plaintext model
            let seeds = protocol::seed::DealerSeeds::from_master(seed);
            let (same, _) =
                protocol::session::run_plain(prep.model.clone(), Some(seeds.mask), &prog)?;
            report.verified = Some(same.as_ref() == Some(&logits));
        }
    }
    println!("== {me}");
    print!("{}", report.render());
    if report.verified == Some(false) {
        bail!("verification failed: secure logits differ from the plaintext model with the same carries");
    }
    Ok(())
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
