//! `harness`: secure quantized BERT inference and its report.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use harness::quant::QuantConfig;
use harness::run::{ModelSource, RunSpec};
use indicatif::{ProgressBar, ProgressStyle};
use protocol::net::NetProfile;
use protocol::session::LocalTransport;
use protocol::{LutMode, Role, Truncation};
use std::path::PathBuf;

mod kernels_cmd;

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "Secure two-party inference of quantized BERT"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one secure inference (P0, P1 and the dealer in this process) and report it.
    #[command(args_override_self = true)]
    Bert(BertArgs),
    /// Run one party of a secure inference over TCP (three processes, one or three machines).
    #[command(args_override_self = true)]
    Party(PartyArgs),
    /// Make a key pair and self-signed certificate for one party's TLS links
    /// (writes DIR/<role>.key, private, and DIR/<role>.crt; give every party the others' .crt)
    Keygen(KeygenArgs),
    /// Measure every kernel on every backend against this machine's limits
    /// (writes results/kernels.csv).
    Kernels(kernels_cmd::KernelsArgs),
    /// Accuracy of the real model (all-MiniLM-L6-v2 + a sentiment head) on held-out movie
    /// reviews: float, plaintext quantized per config and (with --secure) secure runs
    Eval(EvalArgs),
    /// Classify sentences as positive or negative by secure inference on the real model
    /// (the client holds the text, the server the quantized MiniLM and its head)
    Classify(ClassifyArgs),
    /// Draw the comparison charts (PNG and SVG) and the summary table from result files
    Plot(harness::plot::PlotArgs),
}

#[derive(Args, Clone, Debug)]
struct KeygenArgs {
    /// p0 | p1 | dealer
    #[arg(long)]
    role: String,
    /// Directory to write <role>.key and <role>.crt into (created if missing)
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing key pair of this role (its peers must then pin the new
    /// certificate)
    #[arg(long)]
    force: bool,
}

#[derive(Args, Clone, Debug)]
struct EvalArgs {
    /// Quantization configs, comma-separated (wNaM or wNaM-attK: K-bit attention projections)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "w8a8,w4a8,w1a8,w1a8-att8,w1a4,w1a4-att8"
    )]
    quant: Vec<String>,
    /// Also run the secure protocol on the first --limit test snippets per config
    #[arg(long)]
    secure: bool,
    /// Test snippets that get a secure run (with --secure)
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Truncation of the secure runs: exact (default here: the secure answer is the
    /// plaintext quantized model's, bit for bit) | stochastic (faster, the `harness bert`
    /// default; answers vary with the dealer's masks)
    #[arg(long, value_enum, default_value = "exact")]
    truncation: TruncArg,
    /// Use only the first N snippets of each split (quick checks; default: all)
    #[arg(long)]
    max_snippets: Option<usize>,
    /// Network emulated in the secure runs: lan | wan | none | BW,RTT
    #[arg(long, default_value = "lan")]
    net: String,
    /// Assets folder (default: $QBERT_ASSETS, ./assets)
    #[arg(long)]
    assets: Option<PathBuf>,
    /// Accuracy table as CSV
    #[arg(long, default_value = "results/accuracy.csv")]
    csv: PathBuf,
    /// Also write the rows as a JSON array
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Clone, Debug)]
struct ClassifyArgs {
    /// Sentences to classify
    #[arg(required = true)]
    text: Vec<String>,
    /// Quantization config of the server's model (see `harness eval`)
    #[arg(long, default_value = "w8a8")]
    quant: String,
    /// Truncation of the secure runs: exact (default here: the secure answer is the
    /// plaintext quantized model's, bit for bit) | stochastic (faster, the `harness bert`
    /// default; answers vary with the dealer's masks)
    #[arg(long, value_enum, default_value = "exact")]
    truncation: TruncArg,
    /// Network emulated: lan | wan | none | BW,RTT
    #[arg(long, default_value = "lan")]
    net: String,
    /// Assets folder (default: $QBERT_ASSETS, ./assets)
    #[arg(long)]
    assets: Option<PathBuf>,
    /// Write one JSON object per sentence to this file (as an array)
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum, Debug)]
enum TransportArg {
    Mem,
    Tcp,
}

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
enum ProtocolArg {
    /// Ours (PROTOCOL.md)
    Qbert,
    /// The CrypTen-style baseline (docs/crypten-baseline.md); --quant and --tables are ignored
    Crypten,
}

/// How a table drops the bits below its window (PROTOCOL.md block 3).
#[derive(Clone, Copy, ValueEnum, Debug)]
pub(crate) enum TruncArg {
    /// Free: unbiased stochastic rounding from the masks' carries, no message
    Stochastic,
    /// Exact floor: a comparison (DCF) per lookup and one more flight per table layer; the
    /// secure output then equals the plaintext quantized model with deterministic rounding
    Exact,
}

impl TruncArg {
    pub(crate) fn mode(self) -> Truncation {
        match self {
            TruncArg::Stochastic => Truncation::Stochastic,
            TruncArg::Exact => Truncation::Exact,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, Debug)]
enum LutArg {
    Auto,
    Dpf,
    Rotated,
}

#[derive(Args, Clone, Debug)]
struct BertArgs {
    /// qbert (ours) or crypten (the CrypTen-style baseline, in-process runs only)
    #[arg(long, value_enum, default_value = "qbert")]
    protocol: ProtocolArg,
    /// bert-base | bert-tiny | minilm-l6 (random weights from --model-seed), or a .safetensors file
    #[arg(long, default_value = "bert-base")]
    model: String,
    /// Shapes of a .safetensors model (a preset name)
    #[arg(long, default_value = "bert-base")]
    shapes: String,
    /// Run only the first N encoder layers
    #[arg(long)]
    layers: Option<usize>,
    /// Sequence length in tokens (1..=512 for the presets)
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Sequences per query (share every flight)
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// w1a4 | w1a8 | w8a8 (any wNaM with N in 1..8, M in {4, 8})
    #[arg(long, default_value = "w1a4")]
    quant: String,
    /// lan | wan | sigma-lan | none | BW,RTT (e.g. 1gbps,0.5ms)
    #[arg(long, default_value = "lan")]
    net: String,
    /// In-process channels, or TCP over loopback (three party threads either way)
    #[arg(long, value_enum, default_value = "mem")]
    transport: TransportArg,
    /// Plain TCP without TLS (benchmarks only; the report says INSECURE). Without it
    /// `--transport tcp` uses TLS 1.3 with certificates made in memory, and `harness
    /// party` needs --tls-dir
    #[arg(long)]
    insecure: bool,
    /// Seconds a party waits for a peer (connection, handshake, any message) before it
    /// gives up with an error naming the peer
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// How tables are dealt: auto picks the smaller material per table
    #[arg(long, value_enum, default_value = "auto")]
    tables: LutArg,
    /// stochastic (free, the default) | exact (one more flight per table layer; equals the
    /// plaintext quantized model with deterministic rounding)
    #[arg(long, value_enum, default_value = "stochastic")]
    truncation: TruncArg,
    /// Compare with the plaintext quantized and float models (on by default)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    verify: bool,
    /// Seed of the random weights (named presets)
    #[arg(long, default_value_t = 1)]
    model_seed: u64,
    /// Seed of the client's random tokens and of the calibration sequences
    #[arg(long, default_value_t = 2)]
    input_seed: u64,
    /// Dealer master seed (random if not given)
    #[arg(long)]
    seed: Option<u64>,
    /// Write the report as JSON
    #[arg(long)]
    json: Option<PathBuf>,
    /// Append a CSV row (default results/runs.csv)
    #[arg(long, default_value = "results/runs.csv")]
    csv: PathBuf,
    /// Don't show a progress bar
    #[arg(long)]
    quiet: bool,
    /// Keep the parties' offline material in files in this directory instead of memory
    /// (for runs whose dealer material does not fit in memory)
    #[arg(long)]
    spill: Option<PathBuf>,
    /// Kernel backend: auto (GPU for large calls when a hardware adapter exists, else
    /// CPU SIMD) | cpu | gpu | scalar (the reference loops)
    #[arg(long, env = "HARNESS_BACKEND", default_value = "auto")]
    backend: String,
    /// Skip the check that the estimated memory (and disk, with --spill) fits this machine
    #[arg(long)]
    no_resource_check: bool,
}

/// Estimates the run's dealer material and peak memory, prints the estimate and refuses a
/// run that does not fit (unless --no-resource-check).
fn preflight(a: &BertArgs, spec: &RunSpec, process: harness::resources::Process) -> Result<()> {
    if a.no_resource_check {
        return Ok(());
    }
    let est = harness::resources::preflight(spec, process)?;
    eprintln!("estimate: {est}");
    Ok(())
}

#[derive(Args, Clone, Debug)]
struct PartyArgs {
    /// p0 | p1 | dealer
    #[arg(long)]
    role: String,
    /// Address P0 listens at
    #[arg(long)]
    p0: String,
    /// Address P1 listens at
    #[arg(long)]
    p1: String,
    /// Session id: the same for the three parties and fresh for every run (e.g.
    /// `od -An -N8 -tu8 /dev/urandom`). Frames, the handshake and spill files carry it, so
    /// a peer or file of another run is refused, and the dealer's seeds are mixed with it.
    #[arg(long)]
    session: u64,
    /// Seconds to wait for peers
    #[arg(long, default_value_t = 60)]
    connect_timeout: u64,
    /// Directory with this party's key and certificate and the peers' certificates
    /// (from `harness keygen`: p0.crt, p1.crt, dealer.crt and <role>.key)
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    #[command(flatten)]
    bert: BertArgs,
}

fn spec_of(a: &BertArgs) -> Result<RunSpec> {
    kernels::backend::set_backend(a.backend.parse().map_err(anyhow::Error::msg)?);
    let model = if a.model.ends_with(".safetensors") {
        ModelSource::File(PathBuf::from(&a.model), a.shapes.clone())
    } else {
        ModelSource::Random(a.model.clone())
    };
    Ok(RunSpec {
        protocol: match a.protocol {
            ProtocolArg::Qbert => harness::run::Protocol::Qbert,
            ProtocolArg::Crypten => harness::run::Protocol::Crypten,
        },
        model,
        layers: a.layers,
        seq: a.seq,
        batch: a.batch,
        quant: QuantConfig::parse(&a.quant).map_err(anyhow::Error::msg)?,
        net: NetProfile::parse(&a.net).with_context(|| format!("--net {}", a.net))?,
        transport: match a.transport {
            TransportArg::Mem => LocalTransport::Mem,
            TransportArg::Tcp if a.insecure => LocalTransport::Tcp,
            TransportArg::Tcp => LocalTransport::TcpTls,
        },
        verify: a.verify,
        lut_mode: match a.tables {
            LutArg::Auto => LutMode::Auto,
            LutArg::Dpf => LutMode::Dpf,
            LutArg::Rotated => LutMode::Rotated,
        },
        truncation: a.truncation.mode(),
        model_seed: a.model_seed,
        input_seed: a.input_seed,
        dealer_seed: a.seed,
        spill: a.spill.clone(),
        timeout: std::time::Duration::from_secs(a.timeout.max(1)),
        ..RunSpec::default()
    })
}

fn progress_bar(layers: usize, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new((2 * layers) as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:30}] {pos}/{len} layer passes, ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message("offline");
    pb
}

fn bert(a: &BertArgs) -> Result<()> {
    let spec = spec_of(a)?;
    preflight(a, &spec, harness::resources::Process::InProcess)?;
    let preset = match &spec.model {
        ModelSource::Random(n) | ModelSource::File(_, n) => n.clone(),
    };
    let layers_hint = spec
        .layers
        .unwrap_or_else(|| harness::model::BertConfig::by_name(&preset).map_or(12, |c| c.layers));
    let pb = progress_bar(layers_hint, a.quiet);
    let tick = |role: Role, online: bool, layer: usize| {
        if role == Role::P1 {
            if online {
                pb.set_message("online");
                pb.set_position((layers_hint + layer) as u64);
            } else {
                pb.set_position(layer as u64);
            }
        }
    };
    let report = harness::run::run(&spec, Some(&tick))?;
    pb.finish_and_clear();
    print!("{}", report.render());
    if report.verified == Some(false) {
        if report.protocol == "crypten" {
            // the baseline's accuracy is CrypTen's (docs/crypten-baseline.md): reported,
            // not a failure of the run
            eprintln!("note: the CrypTen baseline's output is outside the stated tolerance");
        } else {
            // a failed run must not land in the result files beside the good ones
            anyhow::bail!(
                "verification failed: the secure output differs from the plaintext model with the same masks; nothing written to {}{}",
                a.csv.display(),
                a.json
                    .as_ref()
                    .map_or(String::new(), |j| format!(" or {}", j.display()))
            );
        }
    }
    report
        .append_csv(&a.csv)
        .with_context(|| format!("writing {}", a.csv.display()))?;
    if let Some(j) = &a.json {
        report.write_json(j)?;
    }
    Ok(())
}

fn keygen(k: &KeygenArgs) -> Result<()> {
    let role: protocol::PartyId = k.role.parse().map_err(anyhow::Error::msg)?;
    let stem = protocol::net::tls::role_file_stem(role);
    for f in [format!("{stem}.key"), format!("{stem}.crt")] {
        let p = k.out.join(f);
        if !k.force && p.symlink_metadata().is_ok() {
            anyhow::bail!(
                "{} exists: refusing to replace {role}'s key pair (the peers pin its certificate); pass --force to make a new one",
                p.display()
            );
        }
    }
    let (key, crt) = protocol::net::tls::keygen(role, &k.out)
        .with_context(|| format!("writing keys into {}", k.out.display()))?;
    let fp = protocol::net::tls::pem_fingerprint(&std::fs::read_to_string(&crt)?)?;
    println!("{role}: private key {} (keep it here)", key.display());
    println!(
        "{role}: certificate {} (copy it to the other parties), SHA-256 {fp}",
        crt.display()
    );
    Ok(())
}

fn eval(a: &EvalArgs) -> Result<()> {
    use harness::eval;
    let quants = a
        .quant
        .iter()
        .map(|q| QuantConfig::parse(q).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    let net = NetProfile::parse(&a.net).with_context(|| format!("--net {}", a.net))?;
    let assets = harness::assets::Assets::find(a.assets.as_deref())?;
    let weights = assets.minilm()?;
    let data = eval::load_data(&assets, a.max_snippets)?;
    eprintln!(
        "{} training and {} test snippets{}",
        data.train.len(),
        data.test.len(),
        a.max_snippets
            .map_or(String::new(), |m| format!(" (first {m} of each split)"))
    );
    let opts = eval::EvalOptions {
        quants,
        secure: a.secure.then_some(a.limit),
        max_snippets: a.max_snippets,
        net,
        truncation: a.truncation.mode(),
    };
    let t = std::time::Instant::now();
    let say = |m: &str| eprintln!("[{:>6.1}s] {m}", t.elapsed().as_secs_f64());
    let rows = eval::evaluate(&assets, &weights, &data, &opts, &say)?;
    print!("{}", eval::render(&rows));
    eval::write_csv(&rows, &a.csv).with_context(|| format!("writing {}", a.csv.display()))?;
    if let Some(j) = &a.json {
        harness::report::write_atomically(j, &serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", j.display()))?;
    }
    Ok(())
}

fn classify(a: &ClassifyArgs) -> Result<()> {
    let quant = QuantConfig::parse(&a.quant).map_err(anyhow::Error::msg)?;
    let net = NetProfile::parse(&a.net).with_context(|| format!("--net {}", a.net))?;
    let assets = harness::assets::Assets::find(a.assets.as_deref())?;
    let results =
        harness::eval::classify(&assets, &quant, &net, a.truncation.mode(), &a.text, &|m| {
            eprintln!("{m}")
        })?;
    for r in &results {
        println!(
            "{:<8} p={:.3}  online {:.3} s, {:.1} MB  {}  {}",
            r.label,
            r.probability,
            r.online_s,
            r.online_bytes as f64 / 1e6,
            if r.agrees_with_plain {
                "agrees with plaintext"
            } else {
                "DIFFERS from plaintext"
            },
            r.text
        );
    }
    if let Some(j) = &a.json {
        harness::report::write_atomically(j, &serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("writing {}", j.display()))?;
    }
    Ok(())
}

fn plot(a: &harness::plot::PlotArgs) -> Result<()> {
    let o = harness::plot::plot(a)?;
    for n in &o.notes {
        eprintln!("note: {n}");
    }
    print!("{}", o.summary);
    for f in &o.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Bert(a) => bert(a),
        Cmd::Kernels(k) => kernels_cmd::run(k),
        Cmd::Eval(a) => eval(a),
        Cmd::Classify(a) => classify(a),
        Cmd::Party(p) if p.bert.protocol == ProtocolArg::Crypten => Err(anyhow::anyhow!(
            "--protocol crypten runs in-process only (harness bert)"
        )),
        Cmd::Plot(a) => plot(a),
        Cmd::Party(p) => harness::party::run_party(
            &harness::party::PartyOptions {
                role: p.role.clone(),
                p0: p.p0.clone(),
                p1: p.p1.clone(),
                connect_timeout: std::time::Duration::from_secs(p.connect_timeout),
                tls_dir: p.tls_dir.clone(),
                insecure: p.bert.insecure,
                json: p.bert.json.clone(),
            },
            &match spec_of(&p.bert).and_then(|mut s| {
                s.session = p.session;
                let role: protocol::PartyId = p.role.parse().map_err(anyhow::Error::msg)?;
                let process = harness::resources::Process::Party(role.to_u8() as usize);
                preflight(&p.bert, &s, process).map(|()| s)
            }) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::exit(2);
                }
            },
        ),
        Cmd::Keygen(k) => keygen(k),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
