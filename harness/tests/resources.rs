//! Resource estimates against measured runs, and the refusal when a run would not fit.

use harness::quant::QuantConfig;
use harness::run::{run, ModelSource, RunSpec};
use protocol::net::NetProfile;
use protocol::LutMode;

fn spec(
    model: &str,
    layers: usize,
    seq: usize,
    batch: usize,
    quant: &str,
    lut: LutMode,
) -> RunSpec {
    RunSpec {
        model: ModelSource::Random(model.into()),
        layers: Some(layers),
        seq,
        batch,
        quant: QuantConfig::parse(quant).unwrap(),
        net: NetProfile::none(),
        dealer_seed: Some(5),
        lut_mode: lut,
        verify: false,
        calib: 1,
        ..RunSpec::default()
    }
}

/// Prints measured dealer material for a grid of small runs (the data the estimate's
/// coefficients were fitted to). Not a check: run by hand with `--ignored --nocapture`.
#[test]
#[ignore]
fn measure_material_grid() {
    for lut in [LutMode::Auto, LutMode::Dpf, LutMode::Rotated] {
        for quant in ["w1a4", "w1a8"] {
            for (model, seqs) in [
                ("bert-tiny", &[8usize, 32, 96][..]),
                ("minilm-l6", &[8, 32][..]),
            ] {
                for &seq in seqs {
                    for (layers, batch) in [(1, 1), (2, 1), (1, 2)] {
                        let r = run(&spec(model, layers, seq, batch, quant, lut), None).unwrap();
                        println!(
                            "MEASURE {model} {quant} {lut:?} layers={layers} seq={seq} batch={batch} p0={} p1={}",
                            r.dealer_bytes_p0, r.dealer_bytes_p1
                        );
                    }
                }
            }
        }
    }
}

/// Prints measured dealer material of the CrypTen-style baseline for a grid of small runs
/// (the data its estimate was fitted to). Not a check: run by hand with `--ignored
/// --nocapture`.
#[test]
#[ignore]
fn measure_crypten_material_grid() {
    for (model, seqs) in [
        ("bert-tiny", &[8usize, 32, 96][..]),
        ("minilm-l6", &[8, 32][..]),
    ] {
        for &seq in seqs {
            for (layers, batch) in [(1, 1), (2, 1), (1, 2)] {
                let mut s = spec(model, layers, seq, batch, "w1a4", LutMode::Auto);
                s.protocol = harness::run::Protocol::Crypten;
                let r = run(&s, None).unwrap();
                println!(
                    "MEASURE crypten {model} layers={layers} seq={seq} batch={batch} p0={} p1={}",
                    r.dealer_bytes_p0, r.dealer_bytes_p1
                );
            }
        }
    }
}

/// Peak resident memory of one in-process run given by `QBERT_MEASURE=model,layers,seq,
/// batch,quant,lut[,spill|mem[,crypten]]` (one run per process: the high-water mark is per process).
/// Not a check: run by hand with `--ignored --nocapture`.
#[test]
#[ignore]
fn measure_peak() {
    let Ok(m) = std::env::var("QBERT_MEASURE") else {
        return;
    };
    let f: Vec<&str> = m.split(',').collect();
    let lut = match f[5] {
        "dpf" => LutMode::Dpf,
        "rotated" => LutMode::Rotated,
        _ => LutMode::Auto,
    };
    let mut s = spec(
        f[0],
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[4],
        lut,
    );
    if f.get(6).is_some_and(|x| *x == "spill") {
        s.spill = Some(std::env::temp_dir().join("qbert-measure-spill"));
    }
    if f.get(7).is_some_and(|x| *x == "crypten") {
        s.protocol = harness::run::Protocol::Crypten;
    }
    let r = run(&s, None).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap()
        .to_string();
    println!(
        "PEAK {m} p0={} p1={} {hwm}",
        r.dealer_bytes_p0, r.dealer_bytes_p1
    );
}

/// The estimate against a fresh measured run of a shape it was not fitted to.
#[test]
fn estimate_is_close_to_a_measured_small_run() {
    for (model, layers, seq, batch, quant) in [
        ("bert-tiny", 1, 20, 2, "w4a8"),
        ("minilm-l6", 1, 12, 1, "w1a4"),
    ] {
        let s = spec(model, layers, seq, batch, quant, LutMode::Auto);
        let est = harness::resources::estimate_spec(&s).unwrap();
        let r = run(&s, None).unwrap();
        for (e, m) in [
            (est.dealer_p0, r.dealer_bytes_p0),
            (est.dealer_p1, r.dealer_bytes_p1),
        ] {
            let rel = (e as f64 - m as f64).abs() / m as f64;
            assert!(rel < 0.02, "{model} seq {seq}: estimate {e}, measured {m}");
        }
    }
}

/// Exact truncation's extra material is counted, not fitted: the estimate's difference
/// between exact and stochastic runs equals the measured one to the byte (rounding of the
/// float totals aside), with a pooler (bert-tiny) and mean pooling (MiniLM), batch 1 and 2.
#[test]
fn exact_truncation_material_is_counted_exactly() {
    for (model, layers, seq, batch, quant) in [
        ("bert-tiny", 2, 20, 2, "w4a8"),
        ("minilm-l6", 1, 12, 1, "w1a4"),
    ] {
        let stoch = spec(model, layers, seq, batch, quant, LutMode::Auto);
        let exact = RunSpec {
            truncation: protocol::Truncation::Exact,
            ..stoch.clone()
        };
        let (es, ee) = (
            harness::resources::estimate_spec(&stoch).unwrap(),
            harness::resources::estimate_spec(&exact).unwrap(),
        );
        let (rs, re) = (run(&stoch, None).unwrap(), run(&exact, None).unwrap());
        for (what, e, m) in [
            (
                "P0",
                ee.dealer_p0 as i64 - es.dealer_p0 as i64,
                re.dealer_bytes_p0 as i64 - rs.dealer_bytes_p0 as i64,
            ),
            (
                "P1",
                ee.dealer_p1 as i64 - es.dealer_p1 as i64,
                re.dealer_bytes_p1 as i64 - rs.dealer_bytes_p1 as i64,
            ),
        ] {
            assert!(
                m > 0,
                "{model}: exact truncation dealt nothing more to {what}"
            );
            assert!(
                (e - m).abs() <= 2,
                "{model} seq {seq}: {what} extra estimated {e}, measured {m}"
            );
        }
    }
}

/// The baseline's estimate against a fresh measured run of a shape it was not fitted to.
#[test]
fn crypten_estimate_is_close_to_a_measured_small_run() {
    for (model, layers, seq, batch) in [("bert-tiny", 1, 20, 2), ("minilm-l6", 1, 12, 1)] {
        let mut s = spec(model, layers, seq, batch, "w1a4", LutMode::Auto);
        s.protocol = harness::run::Protocol::Crypten;
        let est = harness::resources::estimate_spec(&s).unwrap();
        let r = run(&s, None).unwrap();
        assert_eq!(r.dealer_bytes_p0, 0);
        let (e, m) = (est.dealer_p1, r.dealer_bytes_p1);
        let rel = (e as f64 - m as f64).abs() / m as f64;
        assert!(rel < 0.02, "{model} seq {seq}: estimate {e}, measured {m}");
    }
}

/// `harness bert` refuses a run above an (injected) memory limit before starting it,
/// naming the estimate and the limit; `--no-resource-check` lets it through.
#[test]
fn cli_refuses_a_run_above_the_memory_limit() {
    let csv = std::env::temp_dir().join(format!("qbert-memlimit-{}.csv", std::process::id()));
    let csv = csv.to_str().unwrap().to_string();
    let run_cli = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
            .args([
                "bert",
                "--model",
                "bert-tiny",
                "--layers",
                "1",
                "--seq",
                "8",
                "--quiet",
            ])
            .args(["--net", "none", "--verify", "false", "--csv", &csv])
            .args(extra)
            .env("QBERT_MEM_LIMIT", "1M")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run_cli(&[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("0.00 GB is available") && err.contains("needs about 0.1"),
        "{err}"
    );
    let (ok, err) = run_cli(&["--no-resource-check"]);
    assert!(ok, "{err}");
    let _ = std::fs::remove_file(&csv);
}

/// `harness kernels --only` with a name no kernel has fails at once with the list of
/// names, before measuring anything and without touching results/kernels.csv.
#[test]
fn kernels_only_with_an_unknown_name_fails_with_the_names() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["kernels", "--only", "no-such-kernel"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no kernel matches") && err.contains("dpf-eval-dot"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}
