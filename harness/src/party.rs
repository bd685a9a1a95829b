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
    let rep = drive(&mut e, &prog)?;
    let mb = |p: Phase, to: PartyId| rep.acct.bytes(p, to) as f64 / 1e6;
    println!(
        "{me}: offline {:.3} s, online {:.3} s, rounds {}, sent online {:.2} MB, offline {:.2} MB",
        rep.offline_time.as_secs_f64(),
        rep.online_time.as_secs_f64(),
        rep.rounds,
        mb(Phase::Online, PartyId::P0) + mb(Phase::Online, PartyId::P1),
        mb(Phase::Offline, PartyId::P0) + mb(Phase::Offline, PartyId::P1),
    );
    if me == PartyId::P1 {
        let logits = rep.output.context("P1 received no output")?;
        let scale = 2f64.powi(prep.consts.fl as i32);
        let v: Vec<f64> = logits.iter().map(|&x| x as f64 / scale).collect();
        println!("P1: logits {v:?}");
        if let Some(s) = spec.dealer_seed.filter(|_| spec.verify) {
            let seeds = protocol::seed::DealerSeeds::from_master(s);
            let (same, _) =
                protocol::session::run_plain(prep.model.clone(), Some(seeds.mask), &prog)?;
            if same.as_ref() != Some(&logits) {
                bail!("verification failed: secure logits differ from the plaintext model with the same carries");
            }
            println!("P1: verified bit-exact against the plaintext quantized model (test mode: seeds shared)");
        }
    }
    Ok(())
}
