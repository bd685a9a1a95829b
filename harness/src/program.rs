//! The secure BERT program: a post-LayerNorm encoder, pooler and classifier written once
//! against the engine, run by the dealer, P0, P1 and the plaintext reference alike.

use crate::quant::{name, Consts, LN_WINDOWS};
use protocol::account::NO_LAYER;
use protocol::session::Program;
use protocol::tensor::Move;
use protocol::{Additive, Engine, Masked, OpKind, Result, Reveal, Role, Table, Window};

/// The public shapes of a run.
#[derive(Clone, Debug)]
pub struct Shapes {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub ffn: usize,
    pub seq: usize,
    pub batch: usize,
    pub labels: usize,
    pub pooler: bool,
}

impl Shapes {
    /// The shapes of a run of `w`'s first `layers` layers (labels and pooler from its
    /// classifier and pooler).
    pub fn of(w: &crate::model::BertWeights, layers: usize, seq: usize, batch: usize) -> Self {
        let cfg = &w.config;
        Shapes {
            layers,
            hidden: cfg.hidden,
            heads: cfg.heads,
            ffn: cfg.ffn,
            seq,
            batch,
            labels: w.classifier.as_ref().map_or(0, |c| c.d_out),
            pooler: w.pooler.is_some(),
        }
    }
}

/// P1's input: the embedded, normalised tokens (computed in the clear on the public
/// embedding table) in the residual encoding (step 2^-(fres - fg)). The embedding
/// LayerNorm's gamma and beta, and the a-bit quantization of its output, are the server's
/// and happen under MPC.
#[derive(Clone, Debug)]
pub struct ClientInput {
    pub y_res: Vec<u64>,
}

/// The tables whose output lives in the score ring S.
pub struct ScoreTables<S: protocol::ring::Ring> {
    req: Table<S>,
    /// ln E on each window of E (`Consts::w_ln`).
    ln: Vec<Table<S>>,
    ln_unsel: Table<S>,
}

impl<S: protocol::ring::Ring> ScoreTables<S> {
    fn new(c: &Consts) -> Self {
        ScoreTables {
            req: c.t_requant(c.k_req()),
            ln: (0..LN_WINDOWS).map(|i| c.t_ln(i)).collect(),
            ln_unsel: c.t_ln_unsel(),
        }
    }
}

/// The public tables of a plan, built once.
pub struct Tables {
    req32: Table<u32>,
    s32: ScoreTables<u32>,
    s64: ScoreTables<u64>,
    gelu: Table<u32>,
    tanh: Table<u32>,
    exp: Table<u64>,
    p: Table<u32>,
    rsqrt: Table<u64>,
}

impl Tables {
    pub fn new(c: &Consts) -> Self {
        Tables {
            req32: c.t_requant(c.k_req()),
            s32: ScoreTables::new(c),
            s64: ScoreTables::new(c),
            gelu: c.t_gelu(),
            tanh: c.t_tanh(),
            exp: c.t_exp(),
            p: c.t_p(),
            rsqrt: c.t_rsqrt(),
        }
    }
}

/// Called after each layer of each pass: (role, online, layers done).
pub type Progress<'a> = dyn Fn(Role, bool, usize) + Sync + 'a;

pub struct BertProgram<'a> {
    pub shapes: Shapes,
    pub consts: Consts,
    pub tables: Tables,
    /// P1's input (None at P0 and the dealer).
    pub input: Option<ClientInput>,
    pub progress: Option<&'a Progress<'a>>,
}

/// Logits at scale 2^fl, one row of `labels` per sequence.
pub type Logits = Vec<i64>;

impl BertProgram<'_> {
    fn tick(&self, e: &Engine, layer: usize) {
        if let Some(p) = self.progress {
            p(e.role, e.is_online(), layer);
        }
    }

    /// LayerNorm of the residual stream h (ring 64, 2^fres) with P0's gamma and beta
    /// (`{ln}.g`, `{ln}.b` at 2^fg and 2^(fy + fg); `{ln}.gx`, `{ln}.bx` divided by the
    /// output's private scale): returns the a-bit output for the next linear layers
    /// (masked, x^ at P0) and the output on the residual stream (additive, 2^fres).
    fn layernorm(
        &self,
        e: &mut Engine,
        h: &Additive<u64>,
        ln: &str,
    ) -> Result<(Masked<u32>, Additive<u64>)> {
        let c = &self.consts;
        let t = &self.tables;
        // exact centring: H h - sum h (scale H 2^fres)
        let u = e.sub(&e.mul_public(h, self.shapes.hidden as i64), &e.sum_last(h))?;
        let um = e.open(&u, Reveal::Both)?;
        let sq = e.square_masked(&um)?;
        let v = e.sum_last(&sq);
        let vm = e.open(&v, Reveal::Both)?;
        let rs = e.lut(&vm, c.w_var(), &t.rsqrt)?;
        let rsm = e.open(&rs, Reveal::Both)?;
        let y = e.mul_masked(&um, &rsm)?; // y 2^fy

        // y only to P0: both outputs are P0's private affine maps of it, each as a linear
        // layer's output (x^ at P0, P1's share sent offline, P1 gets only its table's
        // index bits): (a) (gamma y + beta) / s for the next linear layers, requantized
        // to a bits; (b) gamma y + beta at 2^(fy + fg), truncated into the residual stream
        let ym = e.open(&y, Reveal::P0)?;
        let (gx, bx) = (format!("{ln}.gx"), format!("{ln}.bx"));
        let xm = e.affine_private(&ym, &gx, &bx, &[c.w_lnx()])?;
        let (g, b) = (format!("{ln}.g"), format!("{ln}.b"));
        let zm = e.affine_private(&ym, &g, &b, &[c.w_lnres()])?;
        // both tables' inputs at once (with exact truncation: one flight for the two)
        let ins = e.table_inputs(&[(&xm, c.w_lnx()), (&zm, c.w_lnres())])?;
        let xa = e.lut(&ins[0].0, ins[0].1, &t.req32)?;
        let r = e.trunc_ext::<u64, u64>(&ins[1].0, ins[1].1, 1)?;
        Ok((e.open(&xa, Reveal::P0)?, r))
    }

    /// The embedding LayerNorm's gamma and beta on the client's normalised input y
    /// (residual encoding, x^ at P0), twice: on the residual stream (2^fres), and divided
    /// by the output's private per-tensor scale (`emb.gx`, `emb.bx`, pre-divided by P0)
    /// and requantized to a bits. Quantizing after gamma matters on real models: a few
    /// dimensions of the normalised vector reach ~sqrt(hidden) (BERT's outlier
    /// features), and their small gamma is what keeps the LayerNorm output in range.
    fn embedding_affine(
        &self,
        e: &mut Engine,
        y: &Masked<u64>,
    ) -> Result<(Masked<u32>, Additive<u64>)> {
        let c = &self.consts;
        let r = e.scale_private(y, "emb.g")?;
        let r = e.add_private(&r, "emb.b")?;
        let x = e.scale_private(y, "emb.gx")?;
        let x = e.add_private(&x, "emb.bx")?;
        let xm = e.open(&e.cast_down::<u64, u32>(&x), Reveal::Both)?;
        let xa = e.lut(&xm, c.w_qkv(), &self.tables.req32)?;
        Ok((e.open(&xa, Reveal::P0)?, r))
    }

    /// Requantize Q, K, V, open them, and compute the attention probabilities (8 bits) by
    /// the log-sum-exp softmax; the score path runs in ring S. Returns P and V by heads.
    #[allow(clippy::too_many_arguments)]
    fn attention<S: protocol::ring::Ring>(
        &self,
        e: &mut Engine,
        l: usize,
        zq: &Masked<u32>,
        zk: &Masked<u32>,
        zv: &Masked<u32>,
        st: &ScoreTables<S>,
    ) -> Result<(Masked<u32>, Masked<u32>, Additive<u32>)> {
        let c = &self.consts;
        let t = &self.tables;
        let s = &self.shapes;
        let ly = l as u16;
        let wq = c.w_qkv();
        let split = Move::SplitHeads {
            batch: s.batch,
            heads: s.heads,
        };
        e.at(ly, OpKind::Requant);
        let ins = e.table_inputs(&[(zq, wq), (zk, wq), (zv, wq)])?;
        let q = e.lut(&ins[0].0, ins[0].1, &st.req)?;
        let k = e.lut(&ins[1].0, ins[1].1, &st.req)?;
        let v = e.lut(&ins[2].0, ins[2].1, &t.req32)?;
        drop(ins);
        let pq = e.open_start(&q, Reveal::Both)?;
        let pk = e.open_start(&k, Reveal::Both)?;
        let pv = e.open_start(&v, Reveal::Both)?;
        let (qm, km, vm) = (e.open_finish(pq)?, e.open_finish(pk)?, e.open_finish(pv)?);

        e.at(ly, OpKind::AttnMatmul);
        let qh = e.move_masked(&qm, split)?;
        let kt = e.move_masked(&e.move_masked(&km, split)?, Move::TransposeLast2)?;
        let vh = e.move_masked(&vm, split)?;
        let scores = e.matmul_masked(&qh, &kt, Some(&name(l, "c")))?;
        // zero points: c sum_d (q - zq)(k - zk) = c q.k - c zq sum_d k + terms constant along
        // each row (removed by the centring below)
        let ksum = e.sum_rows_masked(&kt, 0)?;
        let kcorr = e.scale_private(&ksum, &name(l, "czq"))?;
        let scores = e.sub_cols(&scores, &kcorr)?;

        e.at(ly, OpKind::Softmax);
        // centre each row exactly: n s - sum s; then E >= n and exp cannot overflow
        let sc = e.sub(&e.mul_public(&scores, s.seq as i64), &e.sum_last(&scores))?;
        let sm = e.open(&sc, Reveal::Both)?;
        let ex = e.lut::<S, u64>(&sm, c.w_exp(), &t.exp)?;
        let esum = e.sum_last(&ex);
        let em = e.open(&esum, Reveal::Both)?;
        // ln E over 12-bit windows of E (it spans n .. n e^sat), each higher one selected
        // by a 0/1 table on its own index; the table says where window i is NOT selected
        // (b_i = 1 for an index below 2^LN_SELECT_BITS: 16 nonzero entries of 4096, so its
        // DPF is evaluated on one leaf instead of the whole domain), and
        // L = L_top - sum_i b_i (L_i - L_(i-1)) telescopes to the highest selected window
        // (selection is monotone in i)
        // (every table before the first opening starts: a table's own exchange, with exact
        // truncation, must not overtake an opening in flight)
        let wins: Vec<(&Masked<u64>, Window)> = (0..LN_WINDOWS).map(|i| (&em, c.w_ln(i))).collect();
        let ems = e.table_inputs(&wins)?;
        let mut ls = Vec::with_capacity(LN_WINDOWS);
        let mut bs = Vec::with_capacity(LN_WINDOWS);
        for (i, (m, w)) in ems.iter().enumerate() {
            ls.push(e.lut(m, *w, &st.ln[i])?);
            if i > 0 {
                bs.push(e.lut(m, *w, &st.ln_unsel)?);
            }
        }
        drop(ems);
        let mut pend = Vec::with_capacity(2 * LN_WINDOWS);
        for (i, b) in bs.iter().enumerate() {
            let diff = e.sub(&ls[i + 1], &ls[i])?;
            pend.push((
                e.open_start(b, Reveal::Both)?,
                e.open_start(&diff, Reveal::Both)?,
            ));
        }
        let mut lse = ls.pop().expect("LN_WINDOWS >= 1");
        for (pb, pd) in pend {
            let (bm, dm) = (e.open_finish(pb)?, e.open_finish(pd)?);
            let unsel = e.mul_masked(&bm, &dm)?;
            lse = e.sub(&lse, &unsel)?;
        }
        let lm = e.open(&lse, Reveal::Both)?;
        let d = e.sub_masked(&sm, &lm)?;
        let p = e.lut(&d, c.w_p(), &t.p)?;
        let pm = e.open(&p, Reveal::Both)?;
        // the context's zero point: sum_j p (v - zv) = p.v - zv sum_j p
        let psum = e.sum_last_masked(&pm)?;
        let vcorr = e.scale_private(&psum, &name(l, "zv"))?;
        Ok((pm, vh, vcorr))
    }

    fn layer(
        &self,
        e: &mut Engine,
        l: usize,
        x: Masked<u32>,
        res: Additive<u64>,
    ) -> Result<(Masked<u32>, Additive<u64>)> {
        let c = &self.consts;
        let t = &self.tables;
        let s = &self.shapes;
        let ly = l as u16;

        e.at(ly, OpKind::Linear);
        let wq = c.w_qkv();
        let zq = e.linear(&x, &name(l, "q"), &[wq])?;
        let zk = e.linear(&x, &name(l, "k"), &[wq])?;
        let zv = e.linear(&x, &name(l, "v"), &[wq])?;
        let (pm, vh, vcorr) = if c.scores_in_u32() {
            self.attention::<u32>(e, l, &zq, &zk, &zv, &t.s32)?
        } else {
            self.attention::<u64>(e, l, &zq, &zk, &zv, &t.s64)?
        };

        e.at(ly, OpKind::AttnMatmul);
        let ctx = e.matmul_masked(&pm, &vh, None)?;
        let ctx = e.sub(&ctx, &vcorr)?;
        let ctx = e.move_additive(&ctx, Move::MergeHeads { batch: s.batch })?;
        let cm = e.open(&ctx, Reveal::P0)?;

        e.at(ly, OpKind::Linear);
        let wr = c.w_res();
        let zo = e.linear(&cm, &name(l, "o"), &[wr])?;
        e.at(ly, OpKind::Residual);
        let o = e.trunc_ext::<u32, u64>(&zo, wr, 1)?;
        let h1 = e.add(&o, &res)?;

        e.at(ly, OpKind::LayerNorm);
        let (y1, r1) = self.layernorm(e, &h1, &name(l, "ln1"))?;

        e.at(ly, OpKind::Linear);
        let wg = c.w_gelu();
        let z1 = e.linear(&y1, &name(l, "ffn1"), &[wg])?;
        e.at(ly, OpKind::Gelu);
        let g = e.lut(&z1, wg, &t.gelu)?;
        let gm = e.open(&g, Reveal::P0)?;
        e.at(ly, OpKind::Linear);
        let z2 = e.linear(&gm, &name(l, "ffn2"), &[wr])?;
        e.at(ly, OpKind::Residual);
        let f = e.trunc_ext::<u32, u64>(&z2, wr, 1)?;
        let h2 = e.add(&f, &r1)?;

        e.at(ly, OpKind::LayerNorm);
        let (y2, r2) = self.layernorm(e, &h2, &name(l, "ln2"))?;
        Ok((y2, r2))
    }
}

impl Program for BertProgram<'_> {
    type Output = Logits;

    fn register(&self, e: &mut Engine) -> Result<()> {
        let s = &self.shapes;
        let (h, f) = (s.hidden, s.ffn);
        for l in 0..s.layers {
            for (w, din, dout) in [
                ("q", h, h),
                ("k", h, h),
                ("v", h, h),
                ("o", h, h),
                ("ffn1", h, f),
                ("ffn2", f, h),
            ] {
                e.register_linear::<u32>(&name(l, w), din, dout)?;
            }
            if self.consts.scores_in_u32() {
                e.register_vector::<u32>(&name(l, "c"), 1)?;
                e.register_vector::<u32>(&name(l, "czq"), s.seq)?;
            } else {
                e.register_vector::<u64>(&name(l, "c"), 1)?;
                e.register_vector::<u64>(&name(l, "czq"), s.seq)?;
            }
            e.register_vector::<u32>(&name(l, "zv"), 1)?;
            for ln in ["ln1", "ln2"] {
                e.register_vector::<u64>(&name(l, &format!("{ln}.g")), h)?;
                e.register_vector::<u64>(&name(l, &format!("{ln}.gx")), h)?;
            }
        }
        e.register_vector::<u64>("emb.g", h)?;
        e.register_vector::<u64>("emb.gx", h)?;
        if s.pooler {
            e.register_linear::<u32>("pool", h, h)?;
        }
        e.register_linear::<u32>("cls", h, s.labels)?;
        Ok(())
    }

    fn run(&self, e: &mut Engine) -> Result<Option<Logits>> {
        let s = &self.shapes;
        let c = &self.consts;
        let rows = s.batch * s.seq;
        let shape = [rows, s.hidden];
        e.at(NO_LAYER, OpKind::Input);
        let mine = matches!(e.role, Role::P1 | Role::Plain);
        let inp = if mine { self.input.as_ref() } else { None };
        let xr = e.input_p1::<u64>(inp.map(|i| i.y_res.as_slice()), &shape)?;
        e.at(NO_LAYER, OpKind::LayerNorm);
        let (mut x, mut res) = self.embedding_affine(e, &xr)?;
        for l in 0..s.layers {
            let (nx, nres) = self.layer(e, l, x, res)?;
            x = nx;
            res = nres;
            self.tick(e, l + 1);
        }
        drop(res);
        e.at(NO_LAYER, OpKind::Pooler);
        let pooled = if s.pooler {
            // BERT pooler: tanh(W h_[CLS] + b) on the first token of each sequence
            let first = e.move_masked(&x, Move::FirstRows { batch: s.batch })?;
            let wt = c.w_tanh();
            let zp = e.linear(&first, "pool", &[wt])?;
            let tp = e.lut(&zp, wt, &self.tables.tanh)?;
            e.open(&tp, Reveal::P0)?
        } else {
            // mean pooling: the sum of the rows (local on masked values); 1/n and the last
            // LayerNorm's gamma and beta are folded into the head
            e.sum_rows_masked(&x, s.batch)?
        };
        e.at(NO_LAYER, OpKind::Output);
        let z = e.linear(&pooled, "cls", &[])?;
        let za = e.to_additive(&z)?;
        let out = e.reveal_p1(&za)?;
        Ok(out.map(|v| v.iter().map(|x| protocol::ring::Ring::to_i64(*x)).collect()))
    }
}
