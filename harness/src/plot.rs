//! `harness plot`: charts and the comparison table from the committed result files.
//!
//! Reads `runs.csv`, `reproduce.csv` and `peers.csv` (rows of `harness bert` and of the
//! real-peer scripts, with or without the leading `protocol` column: rows without it are
//! `qbert`), the JSON reports (per-operation rows), `published.csv` (figures copied from
//! papers) and `kernels.csv`, and draws PNG and SVG charts with `plotters`. Text is drawn
//! with a bundled DejaVu Sans so that no system font is needed. Published figures are
//! drawn light with an outline and say "published"; measured ones are solid. A missing or
//! unreadable input skips its chart with a note; it never panics. Nothing here
//! communicates.

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// DejaVu Sans (license in `harness/fonts/LICENSE-DejaVu.txt`), registered as `sans-serif`.
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Options of `harness plot`.
#[derive(clap::Args, Clone, Debug)]
pub struct PlotArgs {
    /// Folder with runs.csv, reproduce.csv, the JSON reports, published.csv, kernels.csv
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Where the charts (PNG and SVG) go
    #[arg(long, default_value = "results/charts")]
    pub out: PathBuf,
    /// Model of the main chart, the breakdowns and the sequence sweep
    #[arg(long, default_value = "bert-base")]
    pub model: String,
    /// Sequence length of the main chart and the breakdowns
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Write the comparison table here as Markdown (default: RESULTS/summary.md)
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

/// One measured run (a row of `runs.csv` or `reproduce.csv`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Run {
    /// `qbert` (ours) or `crypten` (the CrypTen-style baseline); absent in older files.
    #[serde(default = "qbert")]
    pub protocol: String,
    pub model: String,
    #[serde(default)]
    pub quant: String,
    pub seq: usize,
    #[serde(default = "one")]
    pub batch: usize,
    pub layers: usize,
    pub net: String,
    pub online_s: f64,
    #[serde(default)]
    pub online_mb: Option<f64>,
    #[serde(default)]
    pub rounds: Option<u32>,
}

fn qbert() -> String {
    "qbert".into()
}
fn one() -> usize {
    1
}

/// One row of `published.csv`: a figure (`kind = figure`) or a speedup claim (`claim`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Published {
    pub kind: String,
    pub system: String,
    pub model: String,
    pub seq: Option<usize>,
    /// The harness's name for the same network (`lan`, `wan`, `sigma-lan`), if any.
    pub net: Option<String>,
    pub network: Option<String>,
    pub hardware: Option<String>,
    pub online_s: Option<f64>,
    pub comm_gb: Option<f64>,
    pub keys_gb: Option<f64>,
    pub rounds: Option<u32>,
    pub claim_vs: Option<String>,
    pub claim_x: Option<f64>,
    pub source: String,
    pub confirmed: Option<String>,
}

/// The per-operation rows of one JSON report.
#[derive(Clone, Debug, PartialEq)]
pub struct OpsReport {
    pub protocol: String,
    pub model: String,
    pub seq: usize,
    pub net: String,
    pub layers: usize,
    /// (category, online ms, MB both directions), in the order of [`OP_CATEGORIES`].
    pub ops: Vec<(String, f64, f64)>,
}

/// One row of `kernels.csv`.
#[derive(Clone, Debug, Deserialize)]
pub struct KernelRow {
    pub kernel: String,
    pub backend: String,
    pub throughput: f64,
    pub unit: String,
    pub limit: f64,
    pub pct_of_limit: f64,
}

/// The operation categories of the breakdown charts, in drawing order.
pub const OP_CATEGORIES: [&str; 7] = [
    "linear",
    "attention matmul",
    "softmax",
    "GELU",
    "LayerNorm",
    "conversions",
    "other",
];

/// The breakdown category of an operation kind of the report (both protocols' names).
pub fn op_category(op: &str) -> &'static str {
    let o = op.to_ascii_lowercase();
    match o.as_str() {
        "linear" | "fc" | "matmul" => "linear",
        "attn-matmul" | "attention-matmul" | "attn_matmul" => "attention matmul",
        "softmax" => "softmax",
        "gelu" => "GELU",
        "layernorm" | "layer-norm" => "LayerNorm",
        _ if o.contains("requant")
            || o.contains("trunc")
            || o.contains("conver")
            || o.contains("b2a")
            || o.contains("a2b")
            || o.contains("extend") =>
        {
            "conversions"
        }
        _ => "other",
    }
}

/// A protocol's label on the charts.
pub fn protocol_label(p: &str) -> String {
    match p {
        "qbert" => "ours (qbert)".into(),
        "crypten" => "CrypTen-style baseline".into(),
        other => other.into(),
    }
}

/// Every run in `runs.csv`, `reproduce.csv` then `peers.csv` (the real CrypTen / SPU
/// scripts in scripts/peers; later rows win in selections), with notes for files that
/// have unreadable rows (missing files are fine).
pub fn load_runs(dir: &Path, notes: &mut Vec<String>) -> Vec<Run> {
    let mut out = Vec::new();
    for name in ["runs.csv", "reproduce.csv", "peers.csv"] {
        let p = dir.join(name);
        if !p.exists() {
            continue;
        }
        match read_csv::<Run>(&p) {
            Ok((rows, bad)) => {
                if bad > 0 {
                    notes.push(format!("{}: skipped {bad} unreadable rows", p.display()));
                }
                out.extend(rows);
            }
            Err(e) => notes.push(format!("{}: {e:#}", p.display())),
        }
    }
    out
}

/// Reads a CSV by header names; rows that do not parse are counted, not fatal.
fn read_csv<T: serde::de::DeserializeOwned>(p: &Path) -> Result<(Vec<T>, usize)> {
    let mut rd = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(p)
        .with_context(|| format!("opening {}", p.display()))?;
    let headers = rd.headers()?.clone();
    let mut rows = Vec::new();
    let mut bad = 0;
    for rec in rd.records() {
        match rec.and_then(|r| r.deserialize::<T>(Some(&headers))) {
            Ok(r) => rows.push(r),
            Err(_) => bad += 1,
        }
    }
    Ok((rows, bad))
}

/// `published.csv`, or an error saying why it could not be read.
pub fn load_published(p: &Path) -> Result<Vec<Published>> {
    let (rows, bad) = read_csv::<Published>(p)?;
    if bad > 0 {
        anyhow::bail!("{}: {bad} rows do not parse", p.display());
    }
    Ok(rows)
}

/// The JSON reports with per-operation rows in `dir` and `dir/reproduce` (other JSON
/// files are ignored), in file-name order.
pub fn load_reports(dir: &Path, notes: &mut Vec<String>) -> Vec<OpsReport> {
    let mut files = Vec::new();
    for d in [dir.to_path_buf(), dir.join("reproduce")] {
        if let Ok(rd) = std::fs::read_dir(&d) {
            files.extend(
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json")),
            );
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let v: serde_json::Value = match std::fs::read(&f)
            .map_err(anyhow::Error::from)
            .and_then(|b| serde_json::from_slice(&b).map_err(anyhow::Error::from))
        {
            Ok(v) => v,
            Err(e) => {
                notes.push(format!("{}: {e}", f.display()));
                continue;
            }
        };
        if let Some(r) = ops_report(&v) {
            out.push(r);
        }
    }
    out
}

/// The per-operation rows of one report, summed into [`OP_CATEGORIES`]; None when the
/// value is not a run report.
pub fn ops_report(v: &serde_json::Value) -> Option<OpsReport> {
    let ops = v.get("ops")?.as_array()?;
    let mut cat: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for o in ops {
        let name = o.get("op")?.as_str()?;
        let f = |k: &str| o.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
        let e = cat.entry(op_category(name)).or_default();
        e.0 += f("online_ms");
        e.1 += f("mb_p0_to_p1") + f("mb_p1_to_p0");
    }
    Some(OpsReport {
        protocol: v
            .get("protocol")
            .and_then(|x| x.as_str())
            .unwrap_or("qbert")
            .into(),
        model: v.get("model")?.as_str()?.into(),
        seq: v.get("seq")?.as_u64()? as usize,
        net: v.get("net")?.as_str()?.into(),
        layers: v.get("layers").and_then(|x| x.as_u64()).unwrap_or(0) as usize,
        ops: OP_CATEGORIES
            .iter()
            .map(|c| {
                let (t, mb) = cat.get(c).copied().unwrap_or_default();
                (c.to_string(), t, mb)
            })
            .collect(),
    })
}

/// True for a run of the whole model (every layer of a named preset), batch 1.
fn whole_model(model: &str, layers: usize, batch: usize) -> bool {
    batch == 1
        && crate::model::BertConfig::by_name(model)
            .is_none_or(|c| c.layers == layers || layers == 0)
}

/// The latest run per (protocol, net) of `model` at `seq` (whole model, batch 1).
pub fn latest_runs(runs: &[Run], model: &str, seq: usize) -> BTreeMap<(String, String), Run> {
    let mut m = BTreeMap::new();
    for r in runs {
        if r.model == model && r.seq == seq && whole_model(&r.model, r.layers, r.batch) {
            m.insert((r.protocol.clone(), r.net.clone()), r.clone());
        }
    }
    m
}

/// One row of the comparison table beside the main chart.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    pub system: String,
    pub net: String,
    pub online_s: f64,
    pub mb: Option<f64>,
    pub rounds: Option<u32>,
    /// CrypTen-style baseline's online time (same net, measured) over this row's.
    pub vs_crypten: Option<f64>,
    /// This row's online time over ours (same net; for `sigma-lan` without a run of
    /// ours there, ours at `lan`, a slower network, so the ratio is conservative).
    pub ours_faster: Option<f64>,
    /// `measured` or `published`.
    pub source: String,
    pub published: bool,
}

/// The networks of the comparison, in order.
pub const NETS: [&str; 3] = ["lan", "wan", "sigma-lan"];

/// Ours at `net`, or for `sigma-lan` (faster than `lan`) ours at `lan` when there is no
/// run there; the bool says whether the fallback was taken.
fn ours_at<'a>(latest: &'a BTreeMap<(String, String), Run>, net: &str) -> Option<(&'a Run, bool)> {
    let get = |n: &str| latest.get(&("qbert".to_string(), n.to_string()));
    match get(net) {
        Some(r) => Some((r, false)),
        None if net == "sigma-lan" => get("lan").map(|r| (r, true)),
        None => None,
    }
}

/// The comparison table: measured runs (every protocol) and published figures for the
/// same model and sequence length, per network, with speedups.
pub fn summary_rows(
    runs: &[Run],
    published: &[Published],
    model: &str,
    seq: usize,
) -> Vec<SummaryRow> {
    let latest = latest_runs(runs, model, seq);
    let mut out = Vec::new();
    for net in NETS {
        let ours = ours_at(&latest, net);
        let crypten = latest.get(&("crypten".to_string(), net.to_string()));
        let ratio = |num: Option<f64>, den: Option<f64>| match (num, den) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let mut measured: Vec<&Run> = latest
            .iter()
            .filter(|((_, n), _)| n == net)
            .map(|(_, r)| r)
            .collect();
        // ours first, then the baseline, then anything else
        measured.sort_by_key(|r| match r.protocol.as_str() {
            "qbert" => 0,
            "crypten" => 1,
            _ => 2,
        });
        for r in measured {
            out.push(SummaryRow {
                system: protocol_label(&r.protocol),
                net: net.into(),
                online_s: r.online_s,
                mb: r.online_mb,
                rounds: r.rounds,
                vs_crypten: ratio(crypten.map(|c| c.online_s), Some(r.online_s)),
                ours_faster: ratio(Some(r.online_s), ours.map(|o| o.0.online_s)),
                source: "measured".into(),
                published: false,
            });
        }
        for p in published.iter().filter(|p| {
            p.kind == "figure"
                && p.model == model
                && p.seq == Some(seq)
                && p.net.as_deref() == Some(net)
        }) {
            let Some(t) = p.online_s else { continue };
            let fallback = ours.is_some_and(|o| o.1);
            out.push(SummaryRow {
                system: format!(
                    "{}{}",
                    p.system,
                    p.hardware
                        .as_deref()
                        .filter(|h| !h.is_empty())
                        .map_or(String::new(), |h| format!(", {}", h.replace("NVIDIA ", "")))
                ),
                net: net.into(),
                online_s: t,
                mb: p.comm_gb.map(|g| g * 1e3),
                rounds: p.rounds,
                vs_crypten: ratio(crypten.map(|c| c.online_s), Some(t)),
                ours_faster: ratio(Some(t), ours.map(|o| o.0.online_s)),
                source: if fallback {
                    "published (speedup vs ours at lan)".into()
                } else {
                    "published".into()
                },
                published: true,
            });
        }
    }
    out
}

/// A speedup of ours, saying so when ours is slower.
fn speedup(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.1}x")
    } else {
        format!("{x:.2}x (ours slower)")
    }
}

fn fmt_opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or("-".into(), f)
}

/// The comparison table as Markdown, with the paper's claims and the machine.
pub fn render_summary(
    rows: &[SummaryRow],
    published: &[Published],
    model: &str,
    seq: usize,
    machine: Option<&str>,
) -> String {
    let mut s = format!("Comparison, {model} at seq {seq} (online phase)");
    if let Some(m) = machine {
        s += &format!("; measured rows on: {m}");
    }
    s += "\n\n| system | net | online s | online MB | rounds | speedup vs CrypTen-style (measured) | ours faster by | source |\n|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        s += &format!(
            "| {} | {} | {:.2} | {} | {} | {} | {} | {} |\n",
            r.system,
            r.net,
            r.online_s,
            fmt_opt(r.mb, |m| format!("{m:.0}")),
            fmt_opt(r.rounds, |x| x.to_string()),
            fmt_opt(r.vs_crypten, |x| format!("{x:.1}x")),
            fmt_opt(r.ours_faster, speedup),
            r.source
        );
    }
    let claims: Vec<&Published> = published.iter().filter(|p| p.kind == "claim").collect();
    if !claims.is_empty() {
        s += "\nThe paper's own claims (abstract) next to ours against the same published figures:\n\n";
        for c in claims {
            let vs = c.claim_vs.as_deref().unwrap_or("?");
            let ours: Vec<String> = rows
                .iter()
                .filter(|r| r.published && r.system.starts_with(vs))
                .filter_map(|r| {
                    r.ours_faster
                        .map(|x| format!("{} vs {} ({})", speedup(x), r.system, r.net))
                })
                .collect();
            s += &format!(
                "- {}x over {vs}: ours {}\n",
                fmt_opt(c.claim_x, |x| format!("{x}")),
                if ours.is_empty() {
                    "no comparable figure".to_string()
                } else {
                    ours.join(", ")
                }
            );
        }
    }
    s += "\nPublished rows are copied from papers (other hardware; see results/published.csv for sources), not measured here.\n";
    s
}

/// A chart that can be drawn on any plotters backend (PNG and SVG).
trait Chart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

fn ensure_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is compiled in; a failure here would be a corrupt file in the repo.
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            eprintln!("warning: the bundled font did not load; text may be missing");
        }
    });
}

/// Draws `chart` into `out/name.png` and `out/name.svg`; returns the two paths.
fn save(chart: &impl Chart, out: &Path, name: &str, size: (u32, u32)) -> Result<Vec<PathBuf>> {
    ensure_font();
    let png = out.join(format!("{name}.png"));
    let svg = out.join(format!("{name}.svg"));
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        chart.draw(&root)?;
        root.present().map_err(pe)?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        chart.draw(&root)?;
        root.present().map_err(pe)?;
    }
    Ok(vec![png, svg])
}

fn pe<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().into()
}

/// The color of a system on every chart.
fn color_of(system: &str) -> RGBColor {
    let s = system.to_ascii_lowercase();
    if s.starts_with("ours") || s == "qbert" {
        RGBColor(31, 119, 180)
    } else if s.starts_with("crypten") {
        RGBColor(255, 127, 14)
    } else if s.starts_with("sigma") {
        RGBColor(44, 160, 44)
    } else if s.starts_with("bumblebee") {
        RGBColor(148, 103, 189)
    } else if s.starts_with("shaft") {
        RGBColor(140, 86, 75)
    } else {
        RGBColor(127, 127, 127)
    }
}

/// One bar of a horizontal bar panel.
struct Bar {
    label: String,
    value: f64,
    note: String,
    color: RGBColor,
    published: bool,
}

fn bar_style(color: RGBColor, published: bool) -> ShapeStyle {
    if published {
        color.mix(0.3).filled()
    } else {
        color.filled()
    }
}

/// The main chart: one panel per network, log-scale online seconds.
struct MainChart {
    panels: Vec<(String, Vec<Bar>)>,
    caption: String,
    subtitle: String,
}

impl Chart for MainChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (title, body) = root.split_vertically(70);
        title
            .draw(&Text::new(
                self.caption.clone(),
                (10, 10),
                font(20).pos(Pos::new(HPos::Left, VPos::Top)),
            ))
            .map_err(pe)?;
        title
            .draw(&Text::new(
                self.subtitle.clone(),
                (10, 40),
                font(13).pos(Pos::new(HPos::Left, VPos::Top)),
            ))
            .map_err(pe)?;
        let w = title.dim_in_pixel().0 as i32;
        for (k, (label, published)) in [
            ("measured here", false),
            ("published (paper figure, other hardware)", true),
        ]
        .into_iter()
        .enumerate()
        {
            let y = 12 + 22 * k as i32;
            let x = w - 330;
            title
                .draw(&Rectangle::new(
                    [(x, y), (x + 22, y + 14)],
                    bar_style(GREY_M, published),
                ))
                .map_err(pe)?;
            if published {
                title
                    .draw(&Rectangle::new(
                        [(x, y), (x + 22, y + 14)],
                        GREY_M.stroke_width(2),
                    ))
                    .map_err(pe)?;
            }
            title
                .draw(&Text::new(
                    label,
                    (x + 30, y + 7),
                    font(13).pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(pe)?;
        }
        let areas = body.split_evenly((self.panels.len(), 1));
        for (area, (net, bars)) in areas.iter().zip(&self.panels) {
            hbar_panel(area, net, bars, "online time, s (log scale)")?;
        }
        Ok(())
    }
}

fn hbar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    bars: &[Bar],
    x_desc: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (range, nseg) = categories(bars.len());
    let lo = bars.iter().map(|b| b.value).fold(f64::INFINITY, f64::min);
    let hi = bars.iter().map(|b| b.value).fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (lo / 3.0, hi * 12.0)
    } else {
        (0.1, 100.0)
    };
    // the first bar on top: segment 0 is at the bottom
    let top = bars.len() as i32 - 1;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, font(17))
        .margin(8)
        .x_label_area_size(35)
        .y_label_area_size(330)
        .build_cartesian_2d((lo..hi).log_scale(), range.into_segmented())
        .map_err(pe)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(nseg as usize)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => {
                labels.get((top - *i) as usize).cloned().unwrap_or_default()
            }
            _ => String::new(),
        })
        .x_label_formatter(&axis_seconds)
        .x_desc(x_desc)
        .label_style(font(13))
        .axis_desc_style(font(14))
        .draw()
        .map_err(pe)?;
    for (i, b) in bars.iter().enumerate() {
        let i = top - i as i32;
        let mut r = Rectangle::new(
            [
                (lo, SegmentValue::Exact(i)),
                (b.value, SegmentValue::Exact(i + 1)),
            ],
            bar_style(b.color, b.published),
        );
        r.set_margin(4, 4, 0, 0);
        chart.draw_series(std::iter::once(r)).map_err(pe)?;
        if b.published {
            let mut o = Rectangle::new(
                [
                    (lo, SegmentValue::Exact(i)),
                    (b.value, SegmentValue::Exact(i + 1)),
                ],
                b.color.stroke_width(2),
            );
            o.set_margin(4, 4, 0, 0);
            chart.draw_series(std::iter::once(o)).map_err(pe)?;
        }
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((b.value, SegmentValue::CenterOf(i)))
                    + Text::new(
                        b.note.clone(),
                        (6, 0),
                        font(13).pos(Pos::new(HPos::Left, VPos::Center)),
                    ),
            ))
            .map_err(pe)?;
    }
    Ok(())
}

/// Category axis for `n` categories: plotters' integer ranges are inclusive, so `0..n-1`
/// gives exactly `n` segments (one spare for `n = 1`); returns the range and the
/// number of segments drawn.
fn categories(n: usize) -> (std::ops::Range<i32>, f64) {
    let last = n.max(2) as i32 - 1;
    (0..last, (last + 1) as f64)
}

fn axis_seconds(v: &f64) -> String {
    if *v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn axis_num(v: &f64) -> String {
    let t = format!("{v:.2}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

const GREY_M: RGBColor = RGBColor(90, 90, 90);

/// A labelled series of one value per category.
type Series = (String, RGBColor, Vec<f64>);

/// Grouped vertical bars: one group per category, one bar per series.
struct GroupedBars {
    caption: String,
    y_desc: String,
    categories: Vec<String>,
    /// (series label, color, values per category)
    series: Vec<Series>,
    value_fmt: fn(f64) -> String,
}

impl Chart for GroupedBars {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (range, nseg) = categories(self.categories.len());
        let hi = self
            .series
            .iter()
            .flat_map(|s| s.2.iter().copied())
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.15;
        let cats = self.categories.clone();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.caption, font(20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(range.into_segmented(), 0.0..hi)
            .map_err(pe)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(nseg as usize)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => cats.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&axis_num)
            .y_desc(self.y_desc.as_str())
            .label_style(font(13))
            .axis_desc_style(font(14))
            .draw()
            .map_err(pe)?;
        let band = chart.plotting_area().dim_in_pixel().0 as f64 / nseg;
        let m = self.series.len().max(1) as f64;
        let bw = band * 0.8 / m;
        for (j, (label, color, values)) in self.series.iter().enumerate() {
            let left = (band * 0.1 + j as f64 * bw).round() as u32;
            let right = (band - band * 0.1 - (j as f64 + 1.0) * bw).max(0.0).round() as u32;
            let color = *color;
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let i = i as i32;
                    let mut r = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), 0.0),
                            (SegmentValue::Exact(i + 1), v),
                        ],
                        color.filled(),
                    );
                    r.set_margin(0, 0, left, right);
                    r
                }))
                .map_err(pe)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 18, y + 6)], color.filled())
                });
            let dx = (band * 0.1 + (j as f64 + 0.5) * bw - band / 2.0).round() as i32;
            let f = self.value_fmt;
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    EmptyElement::at((SegmentValue::CenterOf(i as i32), v))
                        + Text::new(
                            f(v),
                            (dx, -4),
                            font(11).pos(Pos::new(HPos::Center, VPos::Bottom)),
                        )
                }))
                .map_err(pe)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(font(13))
            .draw()
            .map_err(pe)?;
        Ok(())
    }
}

/// A labelled line of (x, y) points.
type Line = (String, RGBColor, Vec<(f64, f64)>);

/// Online time against sequence length, one line per (protocol, net).
struct SeqChart {
    caption: String,
    lines: Vec<Line>,
}

impl Chart for SeqChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let pts = self.lines.iter().flat_map(|l| l.2.iter());
        let (mut xmax, mut ylo, mut yhi) = (1.0f64, f64::INFINITY, 0.0f64);
        for &(x, y) in pts {
            xmax = xmax.max(x);
            ylo = ylo.min(y);
            yhi = yhi.max(y);
        }
        if !ylo.is_finite() {
            ylo = 0.1;
            yhi = 10.0;
        }
        let mut chart = ChartBuilder::on(root)
            .caption(&self.caption, font(20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax * 1.08, (ylo / 2.0..yhi * 2.0).log_scale())
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&axis_seconds)
            .x_desc("sequence length (tokens)")
            .y_desc("online time, s (log scale)")
            .label_style(font(13))
            .axis_desc_style(font(14))
            .draw()
            .map_err(pe)?;
        for (label, color, pts) in &self.lines {
            let c = *color;
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(pe)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(pe)?;
            chart
                .draw_series(pts.iter().map(|&(x, y)| {
                    EmptyElement::at((x, y))
                        + Text::new(
                            format!("{y:.2}"),
                            (5, -5),
                            font(11).pos(Pos::new(HPos::Left, VPos::Bottom)),
                        )
                }))
                .map_err(pe)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(font(13))
            .draw()
            .map_err(pe)?;
        Ok(())
    }
}

/// Kernel throughput as % of the machine's limit, grouped per kernel.
struct KernelChart {
    caption: String,
    kernels: Vec<String>,
    backends: Vec<String>,
    /// pct[kernel][backend]
    pct: Vec<Vec<Option<f64>>>,
    /// Label at the best bar of each kernel.
    notes: Vec<String>,
}

const BACKEND_COLORS: [RGBColor; 6] = [
    RGBColor(160, 160, 160),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

impl Chart for KernelChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (range, nseg) = categories(self.kernels.len());
        let names = self.kernels.clone();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.caption, font(20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(130)
            .build_cartesian_2d(0.0..130.0, range.into_segmented())
            .map_err(pe)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(nseg as usize)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_label_formatter(&|v| format!("{v:.0}%"))
            .x_desc("% of this machine's limit for the kernel (peak mul-add/add rate, gather or memory bandwidth)")
            .label_style(font(12))
            .axis_desc_style(font(13))
            .draw()
            .map_err(pe)?;
        let band = chart.plotting_area().dim_in_pixel().1 as f64 / nseg;
        let m = self.backends.len().max(1) as f64;
        let bh = band * 0.84 / m;
        for (j, be) in self.backends.iter().enumerate() {
            let top = (band * 0.08 + j as f64 * bh).round() as u32;
            let bottom = (band - band * 0.08 - (j as f64 + 1.0) * bh)
                .max(0.0)
                .round() as u32;
            let c = BACKEND_COLORS[j % BACKEND_COLORS.len()];
            chart
                .draw_series(self.pct.iter().enumerate().filter_map(|(i, row)| {
                    let v = row[j]?;
                    let i = i as i32;
                    let mut r = Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(i)),
                            (v, SegmentValue::Exact(i + 1)),
                        ],
                        c.filled(),
                    );
                    // segmented y runs bottom-up: the first backend is drawn at the bottom
                    r.set_margin(bottom, top, 0, 0);
                    Some(r)
                }))
                .map_err(pe)?
                .label(be.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], c.filled()));
        }
        chart
            .draw_series(self.notes.iter().enumerate().map(|(i, note)| {
                let best = self.pct[i].iter().flatten().copied().fold(0.0, f64::max);
                EmptyElement::at((best, SegmentValue::CenterOf(i as i32)))
                    + Text::new(
                        note.clone(),
                        (6, 0),
                        font(11).pos(Pos::new(HPos::Left, VPos::Center)),
                    )
            }))
            .map_err(pe)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(font(12))
            .draw()
            .map_err(pe)?;
        Ok(())
    }
}

/// What `plot` produced.
#[derive(Debug, Default)]
pub struct PlotOutcome {
    pub files: Vec<PathBuf>,
    /// Charts skipped and input problems, one line each.
    pub notes: Vec<String>,
    pub summary: String,
}

fn machine_line(dir: &Path) -> Option<String> {
    let t = std::fs::read_to_string(dir.join("machine.txt")).ok()?;
    let line = t
        .lines()
        .map(|l| l.trim().trim_start_matches("machine:").trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    (!line.is_empty()).then_some(line)
}

/// A number with an SI prefix (k, M, G, T) and three significant digits.
fn si(v: f64) -> String {
    let (d, s) = if v >= 1e12 {
        (1e12, "T")
    } else if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    // three significant digits
    let x = v / d;
    let t = if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    format!("{t}{s}")
}

/// Draws every chart it has inputs for into `a.out` and writes the summary table.
pub fn plot(a: &PlotArgs) -> Result<PlotOutcome> {
    let mut o = PlotOutcome::default();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let runs = load_runs(&a.results, &mut o.notes);
    let published = match load_published(&a.results.join("published.csv")) {
        Ok(p) => p,
        Err(e) => {
            o.notes.push(format!("no published figures: {e:#}"));
            Vec::new()
        }
    };
    let machine = machine_line(&a.results);
    let rows = summary_rows(&runs, &published, &a.model, a.seq);

    // (a) the main chart
    let mut panels = Vec::new();
    let latest = latest_runs(&runs, &a.model, a.seq);
    for net in NETS {
        let group: Vec<&SummaryRow> = rows.iter().filter(|r| r.net == net).collect();
        if !group.iter().any(|r| !r.published) && ours_at(&latest, net).is_none() {
            if !group.is_empty() {
                o.notes.push(format!(
                    "main chart: no measured {} seq {} run at {net}; published figures at {net} left out",
                    a.model, a.seq
                ));
            }
            continue;
        }
        if group.is_empty() {
            continue;
        }
        let bars: Vec<Bar> = group
            .iter()
            .map(|r| Bar {
                label: if r.published {
                    format!("{} [published]", r.system)
                } else {
                    format!("{} [measured]", r.system)
                },
                value: r.online_s,
                note: match (
                    r.published || r.system != protocol_label("qbert"),
                    r.ours_faster,
                ) {
                    (true, Some(x)) if x >= 1.0 => {
                        format!("{:.2} s: ours {x:.1}x faster", r.online_s)
                    }
                    (true, Some(x)) if x > 0.0 => {
                        format!("{:.2} s: ours {:.1}x slower", r.online_s, 1.0 / x)
                    }
                    _ => format!("{:.2} s", r.online_s),
                },
                color: color_of(&r.system),
                published: r.published,
            })
            .collect();
        let title = match net {
            "lan" => "LAN: 1 Gbps, 0.5 ms RTT".to_string(),
            "wan" => "WAN: 400 Mbps, 4 ms RTT".to_string(),
            "sigma-lan" if ours_at(&latest, net).is_some_and(|x| x.1) => {
                "SIGMA's LAN: 9.4 Gbps, 0.05 ms (speedups vs ours measured at 1 Gbps)".to_string()
            }
            _ => "SIGMA's LAN: 9.4 Gbps, 0.05 ms RTT".to_string(),
        };
        panels.push((title, bars));
    }
    if panels.is_empty() {
        o.notes.push(format!(
            "main chart skipped: no measured {} seq {} run in {}",
            a.model,
            a.seq,
            a.results.display()
        ));
    } else {
        let h = 60
            + panels
                .iter()
                .map(|p| 70 + 45 * p.1.len() as u32)
                .sum::<u32>();
        let chart = MainChart {
            caption: format!("Secure {} inference, seq {}: online time", a.model, a.seq),
            subtitle: machine
                .as_deref()
                .map_or("measured here".into(), |m| format!("measured on {m}")),
            panels,
        };
        o.files.extend(save(&chart, &a.out, "main", (1200, h))?);
    }

    // (b), (c) per-operation breakdowns
    let reports = load_reports(&a.results, &mut o.notes);
    let mut latest: BTreeMap<String, &OpsReport> = BTreeMap::new();
    for r in reports.iter().filter(|r| {
        r.model == a.model && r.seq == a.seq && r.net == "lan" && whole_model(&r.model, r.layers, 1)
    }) {
        latest.insert(r.protocol.clone(), r);
    }
    if latest.is_empty() {
        o.notes.push(format!(
            "per-operation charts skipped: no JSON report of {} seq {} at lan in {}",
            a.model,
            a.seq,
            a.results.display()
        ));
    } else {
        let mut protos: Vec<&&OpsReport> = latest.values().collect();
        protos.sort_by_key(|r| (r.protocol != "qbert", r.protocol.clone()));
        let cats: Vec<String> = OP_CATEGORIES.iter().map(|s| s.to_string()).collect();
        let series = |k: usize| -> Vec<Series> {
            protos
                .iter()
                .map(|r| {
                    (
                        format!("{} [measured]", protocol_label(&r.protocol)),
                        color_of(&protocol_label(&r.protocol)),
                        r.ops
                            .iter()
                            .map(|op| if k == 0 { op.1 / 1e3 } else { op.2 })
                            .collect(),
                    )
                })
                .collect()
        };
        let time = GroupedBars {
            caption: format!(
                "Online time per operation, {} seq {}, LAN (all layers)",
                a.model, a.seq
            ),
            y_desc: "online time, s".into(),
            categories: cats.clone(),
            series: series(0),
            value_fmt: |v| format!("{v:.2}"),
        };
        o.files
            .extend(save(&time, &a.out, "ops-time", (1100, 550))?);
        let comm = GroupedBars {
            caption: format!(
                "Online communication per operation, {} seq {}, both directions",
                a.model, a.seq
            ),
            y_desc: "MB".into(),
            categories: cats,
            series: series(1),
            value_fmt: |v| format!("{v:.0}"),
        };
        o.files
            .extend(save(&comm, &a.out, "ops-comm", (1100, 550))?);
    }

    // (d) time against sequence length
    let mut lines: BTreeMap<(String, String), BTreeMap<usize, f64>> = BTreeMap::new();
    for r in runs
        .iter()
        .filter(|r| r.model == a.model && whole_model(&r.model, r.layers, r.batch))
    {
        lines
            .entry((r.protocol.clone(), r.net.clone()))
            .or_default()
            .insert(r.seq, r.online_s);
    }
    lines.retain(|_, v| v.len() >= 2);
    if lines.is_empty() {
        o.notes.push(format!(
            "sequence-length chart skipped: no protocol/network with runs of {} at two or more lengths",
            a.model
        ));
    } else {
        let lines = lines
            .into_iter()
            .map(|((p, net), pts)| {
                let base = color_of(&protocol_label(&p));
                let c = if net == "lan" {
                    base
                } else {
                    RGBColor(base.0 / 2, base.1 / 2, base.2 / 2)
                };
                (
                    format!("{} [measured], {net}", protocol_label(&p)),
                    c,
                    pts.into_iter().map(|(s, t)| (s as f64, t)).collect(),
                )
            })
            .collect();
        let chart = SeqChart {
            caption: format!("Online time against sequence length, {}", a.model),
            lines,
        };
        o.files.extend(save(&chart, &a.out, "seq", (1000, 600))?);
    }

    // (e) kernels against the machine's limits, as a chart and a table
    let mut kernel_table = String::new();
    let kp = a.results.join("kernels.csv");
    match read_csv::<KernelRow>(&kp) {
        Ok((krows, _)) if !krows.is_empty() => {
            let mut kernels: Vec<String> = Vec::new();
            let mut backends: Vec<String> = Vec::new();
            for k in &krows {
                if !kernels.contains(&k.kernel) {
                    kernels.push(k.kernel.clone());
                }
                if !backends.contains(&k.backend) {
                    backends.push(k.backend.clone());
                }
            }
            let mut pct = vec![vec![None; backends.len()]; kernels.len()];
            // the backend closest to its limit, per kernel
            let mut best: Vec<Option<&KernelRow>> = vec![None; kernels.len()];
            for k in &krows {
                let i = kernels.iter().position(|x| *x == k.kernel).unwrap_or(0);
                let j = backends.iter().position(|x| *x == k.backend).unwrap_or(0);
                pct[i][j] = Some(k.pct_of_limit);
                if best[i].is_none_or(|b| k.pct_of_limit > b.pct_of_limit) {
                    best[i] = Some(k);
                }
            }
            let mut notes: Vec<String> = best
                .iter()
                .map(|b| {
                    b.map_or(String::new(), |k| {
                        format!(
                            "{}: {} of {} {}",
                            k.backend,
                            si(k.throughput),
                            si(k.limit),
                            k.unit
                        )
                    })
                })
                .collect();
            kernel_table =
                "\nKernels against this machine's limits (results/kernels.csv; the backend \
                            closest to its limit per kernel):\n\n\
                            | kernel | backend | throughput | limit | unit | % of limit |\n\
                            |---|---|---|---|---|---|\n"
                    .to_string();
            for k in best.iter().flatten() {
                kernel_table += &format!(
                    "| {} | {} | {} | {} | {} | {:.1} |\n",
                    k.kernel,
                    k.backend,
                    si(k.throughput),
                    si(k.limit),
                    k.unit,
                    k.pct_of_limit
                );
            }
            // drawn bottom-up: reverse so the file's first kernel is at the top
            kernels.reverse();
            pct.reverse();
            notes.reverse();
            let h = 120 + 28 * kernels.len() as u32 * (backends.len() as u32).clamp(1, 3);
            let chart = KernelChart {
                caption: format!(
                    "Kernel throughput against this machine's limits{}",
                    machine
                        .as_deref()
                        .map_or(String::new(), |m| format!(" ({m})"))
                ),
                kernels,
                backends,
                pct,
                notes,
            };
            o.files
                .extend(save(&chart, &a.out, "kernels", (1200, h.min(2400)))?);
        }
        Ok(_) => o.notes.push(format!(
            "kernel chart skipped: {} has no rows",
            kp.display()
        )),
        Err(e) => o.notes.push(format!("kernel chart skipped: {e:#}")),
    }

    o.summary = render_summary(&rows, &published, &a.model, a.seq, machine.as_deref());
    o.summary += &kernel_table;
    let sp = a
        .summary
        .clone()
        .unwrap_or_else(|| a.results.join("summary.md"));
    crate::report::write_atomically(&sp, o.summary.as_bytes())
        .with_context(|| format!("writing {}", sp.display()))?;
    o.files.push(sp);
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qbert-plot-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn committed(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../results")
            .join(name)
    }

    const RUNS: &str = "protocol,model,quant,seq,batch,layers,net,transport,lut_mode,backend,online_s,offline_s,online_mb,online_mb_p0_to_p1,online_mb_p1_to_p0,dealer_mb_p0,dealer_mb_p1,offline_mb,rounds,verified,max_abs_err_vs_plain,max_abs_err_vs_float
qbert,bert-base,w1a4,128,1,12,lan,mem,auto,\"cpu (x, 2 threads)\",9.0,1,1,0,0,0,0,0,1,true,0,0
qbert,bert-base,w1a4,128,1,12,lan,mem,auto,cpu,4.0,20,200,80,120,1,1,1,244,true,0.1,0.6
crypten,bert-base,w1a4,128,1,12,lan,mem,auto,cpu,40.0,20,9000,4500,4500,1,1,1,2400,,,0.6
qbert,bert-base,w1a4,128,1,12,wan,mem,auto,cpu,6.0,50,200,80,120,1,1,1,244,true,0.1,0.6
crypten,bert-base,w1a4,128,1,12,wan,mem,auto,cpu,90.0,50,9000,4500,4500,1,1,1,2400,,,0.6
qbert,bert-base,w1a4,128,1,2,lan,mem,auto,cpu,0.5,2,20,8,12,1,1,1,40,true,0.1,0.6
qbert,bert-base,w1a4,32,1,12,lan,mem,auto,cpu,1.0,5,50,20,30,1,1,1,244,true,0.1,0.6
qbert,bert-base,w1a4,64,1,12,lan,mem,auto,cpu,2.0,10,100,40,60,1,1,1,244,true,0.1,0.6
crypten,bert-base,w1a4,64,1,12,lan,mem,auto,cpu,20.0,10,4000,2000,2000,1,1,1,2400,,,0.6
not-a-number-row,bert-base,w1a4,x,1,12,lan,mem,auto,cpu,abc,1,1,1,1,1,1,1,1,true,0,0
";

    fn report_json(protocol: Option<&str>, scale: f64) -> String {
        let mut v = serde_json::json!({
            "model": "bert-base", "seq": 128, "net": "lan", "layers": 12, "online_s": 4.0,
            "ops": [
                {"op": "linear", "online_ms": 600.0 * scale, "mb_p0_to_p1": 14.0 * scale, "mb_p1_to_p0": 0.0},
                {"op": "requant", "online_ms": 500.0 * scale, "mb_p0_to_p1": 14.0, "mb_p1_to_p0": 14.0},
                {"op": "attn-matmul", "online_ms": 60.0 * scale, "mb_p0_to_p1": 0.0, "mb_p1_to_p0": 4.7},
                {"op": "softmax", "online_ms": 2900.0 * scale, "mb_p0_to_p1": 19.0, "mb_p1_to_p0": 19.0},
                {"op": "layernorm", "online_ms": 1200.0, "mb_p0_to_p1": 57.0, "mb_p1_to_p0": 85.0 * scale},
                {"op": "gelu", "online_ms": 700.0 * scale, "mb_p0_to_p1": 0.0, "mb_p1_to_p0": 18.0},
                {"op": "residual", "online_ms": 16.0, "mb_p0_to_p1": 0.0, "mb_p1_to_p0": 0.0},
                {"op": "trunc", "online_ms": 10.0, "mb_p0_to_p1": 1.0, "mb_p1_to_p0": 1.0}
            ]
        });
        if let Some(p) = protocol {
            v["protocol"] = p.into();
        }
        v.to_string()
    }

    fn fixture(dir: &Path) {
        std::fs::write(dir.join("runs.csv"), RUNS).unwrap();
        std::fs::copy(committed("published.csv"), dir.join("published.csv")).unwrap();
        std::fs::copy(committed("kernels.csv"), dir.join("kernels.csv")).unwrap();
        std::fs::write(dir.join("machine.txt"), "machine: test box\n").unwrap();
        std::fs::write(dir.join("ours.json"), report_json(None, 1.0)).unwrap();
        std::fs::create_dir_all(dir.join("reproduce")).unwrap();
        std::fs::write(
            dir.join("reproduce/crypten.json"),
            report_json(Some("crypten"), 8.0),
        )
        .unwrap();
        // not a run report: ignored
        std::fs::write(dir.join("accuracy.json"), "[{\"config\": \"w8a8\"}]").unwrap();
        std::fs::write(dir.join("broken.json"), "{not json").unwrap();
    }

    fn args(dir: &Path) -> PlotArgs {
        PlotArgs {
            results: dir.to_path_buf(),
            out: dir.join("charts"),
            model: "bert-base".into(),
            seq: 128,
            summary: None,
        }
    }

    #[test]
    fn plot_on_fixture_writes_every_chart_as_png_and_svg() {
        let dir = tmpdir("full");
        fixture(&dir);
        let o = plot(&args(&dir)).unwrap();
        for name in ["main", "ops-time", "ops-comm", "seq", "kernels"] {
            let png = std::fs::read(dir.join("charts").join(format!("{name}.png"))).unwrap();
            assert!(png.len() > 1000, "{name}.png is {} bytes", png.len());
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
            let svg =
                std::fs::read_to_string(dir.join("charts").join(format!("{name}.svg"))).unwrap();
            assert!(svg.contains("<svg") && svg.contains("</svg>"), "{name}.svg");
            assert!(
                svg.contains("<rect") || svg.contains("<polyline"),
                "{name}.svg draws nothing"
            );
        }
        let main_svg = std::fs::read_to_string(dir.join("charts/main.svg")).unwrap();
        assert!(main_svg.contains("[published]") && main_svg.contains("[measured]"));
        // only the broken JSON is worth a note
        assert_eq!(o.notes.len(), 2, "{:?}", o.notes);
        assert!(o.notes.iter().any(|n| n.contains("broken.json")));
        assert!(o.notes.iter().any(|n| n.contains("unreadable rows")));
        let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
        assert_eq!(summary, o.summary);
        assert!(
            summary.contains("| ours (qbert) | lan | 4.00 | 200 | 244 | 10.0x | 1.0x | measured |")
        );
        assert!(summary.contains("test box"));
        // the kernel table: one row per kernel of kernels.csv, its best backend
        let krows = read_csv::<KernelRow>(&committed("kernels.csv")).unwrap().0;
        let best = krows
            .iter()
            .filter(|k| k.kernel == "matmul-qkv")
            .max_by(|a, b| a.pct_of_limit.total_cmp(&b.pct_of_limit))
            .unwrap();
        assert!(summary.contains(&format!(
            "| matmul-qkv | {} | {} | {} | {} | {:.1} |",
            best.backend,
            si(best.throughput),
            si(best.limit),
            best.unit,
            best.pct_of_limit
        )));
        assert_eq!(si(76.39e9), "76.4G");
        assert_eq!(si(2.712014e11), "271G");
        assert_eq!(si(6.62), "6.62");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plot_skips_missing_inputs_with_notes() {
        let dir = tmpdir("empty");
        let o = plot(&args(&dir)).unwrap();
        assert_eq!(o.files, vec![dir.join("summary.md")]);
        for what in [
            "published",
            "main chart",
            "per-operation",
            "sequence-length",
            "kernel",
        ] {
            assert!(
                o.notes.iter().any(|n| n.contains(what)),
                "no note on {what}: {:?}",
                o.notes
            );
        }
        // published figures but no measured run: still no main chart for lan/wan
        std::fs::copy(committed("published.csv"), dir.join("published.csv")).unwrap();
        std::fs::write(dir.join("kernels.csv"), "kernel,backend\n").unwrap();
        std::fs::write(dir.join("runs.csv"), "garbage\n\"unterminated").unwrap();
        let o = plot(&args(&dir)).unwrap();
        assert!(
            !o.files.iter().any(|f| f.ends_with("main.png")),
            "{:?}",
            o.files
        );
        assert!(o.notes.iter().any(|n| n.contains("main chart skipped")));
        assert!(o.notes.iter().any(|n| n.contains("runs.csv")));
        // one measured run of ours at lan: the main chart, SIGMA's panel compared with it
        std::fs::write(
            dir.join("runs.csv"),
            RUNS.lines().take(3).collect::<Vec<_>>().join("\n"),
        )
        .unwrap();
        let o = plot(&args(&dir)).unwrap();
        assert!(
            o.files.iter().any(|f| f.ends_with("main.svg")),
            "{:?}",
            o.notes
        );
        let svg = std::fs::read_to_string(dir.join("charts/main.svg")).unwrap();
        assert!(svg.contains("SIGMA") && svg.contains("BumbleBee") && !svg.contains("WAN"));
        assert!(o.notes.iter().any(|n| n.contains("kernel chart skipped")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn published_csv_parses_and_holds_every_anchor() {
        let rows = load_published(&committed("published.csv")).unwrap();
        let fig = |system: &str, net: &str| {
            rows.iter()
                .find(|r| r.kind == "figure" && r.system == system && r.net.as_deref() == Some(net))
                .unwrap_or_else(|| panic!("no {system} at {net}"))
        };
        let s = fig("SIGMA", "sigma-lan");
        assert_eq!(
            (s.online_s, s.comm_gb, s.keys_gb, s.rounds),
            (Some(1.72), Some(0.99), Some(16.84), Some(1128))
        );
        assert!(s.hardware.as_deref().unwrap().contains("A6000"));
        assert!(s.network.as_deref().unwrap().contains("9.4 Gbps"));
        let c = fig("CrypTen (run by SIGMA)", "sigma-lan");
        assert_eq!((c.online_s, c.comm_gb), (Some(21.55), Some(8.34)));
        let b = fig("BumbleBee", "lan");
        assert_eq!((b.online_s, b.comm_gb), (Some(153.0), Some(6.40)));
        assert!(b.network.as_deref().unwrap().contains("1 Gbps / 0.5 ms"));
        let b = fig("BumbleBee", "wan");
        assert_eq!((b.online_s, b.comm_gb), (Some(291.6), Some(6.40)));
        assert!(b.network.as_deref().unwrap().contains("400 Mbps / 4 ms"));
        let sh = fig("SHAFT", "lan");
        assert_eq!((sh.online_s, sh.comm_gb), (Some(28.6), Some(10.46)));
        let claims: Vec<(String, f64)> = rows
            .iter()
            .filter(|r| r.kind == "claim")
            .map(|r| (r.claim_vs.clone().unwrap(), r.claim_x.unwrap()))
            .collect();
        assert_eq!(
            claims,
            vec![
                ("BumbleBee".into(), 8.0),
                ("SIGMA".into(), 9.0),
                ("CrypTen".into(), 22.0)
            ]
        );
        for r in &rows {
            assert_eq!(r.model, "bert-base");
            assert!(!r.source.is_empty() && r.confirmed.is_some(), "{r:?}");
            if r.kind == "figure" {
                assert_eq!(r.seq, Some(128));
            }
        }
    }

    #[test]
    fn old_runs_csv_without_protocol_reads_as_ours() {
        let mut notes = Vec::new();
        let dir = tmpdir("old");
        // the committed runs.csv in the format before the `protocol` column: its rows of
        // ours with that column dropped
        let cur = std::fs::read_to_string(committed("runs.csv")).unwrap();
        let old: String = cur
            .lines()
            .filter_map(|l| {
                l.strip_prefix("protocol,")
                    .or_else(|| l.strip_prefix("qbert,"))
                    .map(|r| format!("{r}\n"))
            })
            .collect();
        assert!(old.lines().count() > 1);
        std::fs::write(dir.join("runs.csv"), old).unwrap();
        let runs = load_runs(&dir, &mut notes);
        assert!(notes.is_empty(), "{notes:?}");
        assert!(!runs.is_empty());
        assert!(runs
            .iter()
            .all(|r| r.protocol == "qbert" && r.rounds.is_some()));
        // rows of the real-peer scripts (scripts/peers) follow, with empty fields
        let n = runs.len();
        std::fs::write(
            dir.join("peers.csv"),
            "protocol,model,quant,seq,batch,layers,net,transport,lut_mode,backend,online_s,offline_s,online_mb,online_mb_p0_to_p1,online_mb_p1_to_p0,dealer_mb_p0,dealer_mb_p1,offline_mb,rounds,verified,max_abs_err_vs_plain,max_abs_err_vs_float\n\
             crypten-0.4.1,bert-base,fixed16,16,1,1,loopback,tcp,,\"test, x; x86_64, 2 cpus\",1.2346,,3.0,1.0,2.0,,,,10,,,0.01\n\
             spu-0.9.5-semi2k,bert-base,fxp,16,1,12,loopback,tcp,,t,2.0,,,,,,,,,,,0.02\n",
        )
        .unwrap();
        let runs = load_runs(&dir, &mut notes);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(runs.len(), n + 2);
        assert_eq!(runs[n].protocol, "crypten-0.4.1");
        assert_eq!((runs[n].online_mb, runs[n].rounds), (Some(3.0), Some(10)));
        assert_eq!((runs[n + 1].online_mb, runs[n + 1].rounds), (None, None));
        assert_eq!(runs[n + 1].online_s, 2.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn op_categories_sum_the_report_rows() {
        let v: serde_json::Value = serde_json::from_str(&report_json(None, 2.0)).unwrap();
        let r = ops_report(&v).unwrap();
        assert_eq!(r.protocol, "qbert");
        let get = |c: &str| r.ops.iter().find(|o| o.0 == c).unwrap();
        assert_eq!(get("linear").1, 1200.0);
        assert_eq!(get("conversions").1, 1010.0); // requant + trunc
        assert_eq!(get("conversions").2, 30.0);
        assert_eq!(get("LayerNorm").2, 57.0 + 170.0);
        assert_eq!(get("other").1, 16.0);
        let total: f64 = r.ops.iter().map(|o| o.1).sum();
        assert_eq!(
            total,
            1200.0 + 1000.0 + 120.0 + 5800.0 + 1200.0 + 1400.0 + 16.0 + 10.0
        );
        assert!(ops_report(&serde_json::json!([1, 2])).is_none());
    }

    fn run(protocol: &str, net: &str, t: f64) -> Run {
        Run {
            protocol: protocol.into(),
            model: "bert-base".into(),
            quant: "w1a4".into(),
            seq: 128,
            batch: 1,
            layers: 12,
            net: net.into(),
            online_s: t,
            online_mb: Some(t * 10.0),
            rounds: Some(7),
        }
    }

    fn published(system: &str, net: &str, t: f64) -> Published {
        Published {
            kind: "figure".into(),
            system: system.into(),
            model: "bert-base".into(),
            seq: Some(128),
            net: Some(net.into()),
            network: None,
            hardware: None,
            online_s: Some(t),
            comm_gb: Some(1.5),
            keys_gb: None,
            rounds: None,
            claim_vs: None,
            claim_x: None,
            source: "test".into(),
            confirmed: None,
        }
    }

    #[test]
    fn summary_speedups_match_the_fixture_rows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        for _ in 0..50 {
            let (o_lan, c_lan, o_wan, c_wan, p_lan, p_sigma) = (
                rng.gen_range(0.1..100.0),
                rng.gen_range(0.1..100.0),
                rng.gen_range(0.1..100.0),
                rng.gen_range(0.1..100.0),
                rng.gen_range(0.1..500.0),
                rng.gen_range(0.1..500.0),
            );
            let runs = vec![
                run("qbert", "lan", 1e3), // superseded by the later row
                run("crypten", "lan", c_lan),
                run("qbert", "lan", o_lan),
                run("qbert", "wan", o_wan),
                run("crypten", "wan", c_wan),
                Run {
                    seq: 64,
                    ..run("qbert", "lan", 0.01)
                },
                Run {
                    layers: 1,
                    ..run("qbert", "wan", 0.01)
                },
            ];
            let pubs = vec![
                published("X", "lan", p_lan),
                published("Y", "sigma-lan", p_sigma),
            ];
            let rows = summary_rows(&runs, &pubs, "bert-base", 128);
            assert_eq!(rows.len(), 6, "{rows:?}");
            let row = |sys: &str, net: &str| {
                rows.iter()
                    .find(|r| r.system == sys && r.net == net)
                    .unwrap()
                    .clone()
            };
            let close = |a: Option<f64>, b: f64| (a.unwrap() / b - 1.0).abs() < 1e-12;
            let ours = row("ours (qbert)", "lan");
            assert_eq!(ours.online_s, o_lan);
            assert!(close(ours.vs_crypten, c_lan / o_lan));
            assert!(close(ours.ours_faster, 1.0));
            let cr = row("CrypTen-style baseline", "wan");
            assert!(close(cr.vs_crypten, 1.0));
            assert!(close(cr.ours_faster, c_wan / o_wan));
            let x = row("X", "lan");
            assert!(x.published && x.source == "published");
            assert!(close(x.ours_faster, p_lan / o_lan));
            assert!(close(x.vs_crypten, c_lan / p_lan));
            assert_eq!(x.mb, Some(1500.0));
            // no run of ours at sigma-lan: compared with ours at lan, and said so
            let y = row("Y", "sigma-lan");
            assert!(close(y.ours_faster, p_sigma / o_lan));
            assert!(y.vs_crypten.is_none());
            assert!(y.source.contains("ours at lan"));
        }
        // without a baseline run there is no CrypTen speedup, and no division by zero
        let rows = summary_rows(
            &[run("qbert", "lan", 0.0)],
            &[published("X", "lan", 3.0)],
            "bert-base",
            128,
        );
        assert!(rows.iter().all(|r| r.vs_crypten.is_none()));
        assert!(rows[1].ours_faster.is_none());
    }
}
