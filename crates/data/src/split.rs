//! Train/val split: from `splits/train.txt` and `splits/val.txt` when present, else a seeded
//! shuffle that gives the same split for the same seed and stems on every machine.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::files::{IMAGE_EXTS, ext_lower, read_text, stem_of};
use crate::{BadSample, DataError, ReadOptions, Sample, Split};

pub(crate) struct SplitResult {
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    pub test: Vec<Sample>,
    pub source: String,
}

pub(crate) fn check_options(opts: &ReadOptions) -> Result<(), DataError> {
    let f = opts.val_fraction;
    if !f.is_finite() || !(0.0..1.0).contains(&f) {
        return Err(DataError::InvalidOption {
            option: "val-fraction",
            reason: format!("{f} is not in [0, 1)"),
        });
    }
    let t = opts.test_fraction;
    if !t.is_finite() || !(0.0..1.0).contains(&t) || f + t >= 1.0 {
        return Err(DataError::InvalidOption {
            option: "test-fraction",
            reason: format!(
                "{t} is not in [0, 1), or with val-fraction {f} leaves nothing to train on"
            ),
        });
    }
    Ok(())
}

/// Mixed into the run's seed for drawing the test split.
const TEST_SEED: u64 = 0x7465_7374_5f73_706c;

/// Splits the valid `samples` (sorted by stem). `known` holds every stem seen, valid or not.
pub(crate) fn assign(
    root: &Path,
    samples: Vec<Sample>,
    known: &HashSet<String>,
    opts: &ReadOptions,
    bad: &mut Vec<BadSample>,
) -> Result<SplitResult, DataError> {
    let dir = root.join("splits");
    let train_txt = dir.join("train.txt");
    let val_txt = dir.join("val.txt");
    if !train_txt.is_file() && !val_txt.is_file() {
        let stems: Vec<&str> = samples.iter().map(|s| s.stem.as_str()).collect();
        let val = random_val(&stems, opts.val_fraction, opts.seed);
        let n = stems.len() as f64;
        let (val, rest): (Vec<Sample>, Vec<Sample>) =
            samples.into_iter().partition(|s| val.contains(&s.stem));
        if opts.test_fraction <= 0.0 {
            return Ok(SplitResult {
                train: rest,
                val,
                test: Vec::new(),
                source: format!(
                    "seeded random split (seed {}, val fraction {})",
                    opts.seed, opts.val_fraction
                ),
            });
        }
        // The test samples come out of what validation left, drawn with a seed of their own,
        // so that a test fraction leaves validation as it was; at least one stays to train.
        let rest_stems: Vec<&str> = rest.iter().map(|s| s.stem.as_str()).collect();
        let share = (opts.test_fraction * n / rest_stems.len().max(1) as f64).min(1.0);
        let mut test = random_val(&rest_stems, share, opts.seed ^ TEST_SEED);
        if test.len() >= rest_stems.len()
            && let Some(keep) = rest_stems.iter().min()
        {
            test.remove(*keep);
        }
        let (test, train): (Vec<Sample>, Vec<Sample>) =
            rest.into_iter().partition(|s| test.contains(&s.stem));
        return Ok(SplitResult {
            train,
            val,
            test,
            source: format!(
                "seeded random split (seed {}, val fraction {}, test fraction {})",
                opts.seed, opts.val_fraction, opts.test_fraction
            ),
        });
    }

    let valid: HashSet<&str> = samples.iter().map(|s| s.stem.as_str()).collect();
    let mut listed: HashMap<String, Split> = HashMap::new();
    let mut in_both: HashSet<String> = HashSet::new();
    for (split, path) in [(Split::Train, &train_txt), (Split::Val, &val_txt)] {
        if !path.is_file() {
            continue;
        }
        for (line, stem) in read_list(path)? {
            if !valid.contains(stem.as_str()) {
                // A skipped sample was reported already; only a stem nothing matches is news.
                if !known.contains(&stem) {
                    bad.push(BadSample::new(
                        path,
                        format!("line {line}: stem '{stem}' has no sample"),
                    ));
                }
                continue;
            }
            match listed.get(&stem) {
                Some(&other) if other != split => {
                    in_both.insert(stem);
                }
                _ => {
                    listed.insert(stem, split);
                }
            }
        }
    }
    // A test list keeps its samples out of train and val without a complaint.
    let test: HashSet<String> = match dir.join("test.txt") {
        p if p.is_file() => read_list(&p)?.into_iter().map(|(_, s)| s).collect(),
        _ => HashSet::new(),
    };

    let mut train = Vec::new();
    let mut val = Vec::new();
    let mut held_out = Vec::new();
    for s in samples {
        if in_both.contains(&s.stem) {
            bad.push(BadSample::new(
                &s.image,
                format!(
                    "stem '{}' is listed in both splits/train.txt and splits/val.txt",
                    s.stem
                ),
            ));
            continue;
        }
        match listed.get(&s.stem) {
            Some(Split::Train) => train.push(s),
            Some(Split::Val) => val.push(s),
            None if test.contains(&s.stem) => held_out.push(s),
            None => bad.push(BadSample::new(
                &s.image,
                "not listed in splits/train.txt or splits/val.txt",
            )),
        }
    }
    Ok(SplitResult {
        train,
        val,
        test: held_out,
        source: "splits/ files".to_owned(),
    })
}

/// The stems of a split list with their line numbers. Lines may also be paths
/// (`images/a.jpg`), which some tools write.
fn read_list(path: &Path) -> Result<Vec<(usize, String)>, DataError> {
    let text = read_text(path)?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let p = Path::new(l);
            let is_path = l.contains(['/', '\\']) || IMAGE_EXTS.contains(&ext_lower(p).as_str());
            let stem = if is_path { stem_of(p) } else { None };
            (i, stem.unwrap_or_else(|| l.to_owned()))
        })
        .collect())
}

/// The stems that go to val: sorted stems shuffled by ChaCha8 seeded with `seed` (a generator
/// whose output is fixed by its specification, unlike `StdRng`), the first
/// `round(n * fraction)` of them, and at least one (but not all) when there are two or more.
pub(crate) fn random_val(stems: &[&str], fraction: f64, seed: u64) -> HashSet<String> {
    let mut sorted: Vec<&str> = stems.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let mut n_val = (n as f64 * fraction).round() as usize;
    if n >= 2 {
        n_val = n_val.clamp(1, n - 1);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    sorted.shuffle(&mut rng);
    sorted.into_iter().take(n_val).map(str::to_owned).collect()
}
