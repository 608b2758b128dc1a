//! The fuzzing loop: mutate corpus inputs, run the target, keep inputs that reach new edges,
//! record the ones that panic.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Scratch, Target, coverage};

/// How long and where to fuzz.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stop after this long.
    pub duration: Duration,
    /// Stop after this many executions, if set.
    pub max_execs: Option<u64>,
    /// Longest input tried.
    pub max_len: usize,
    /// Folder of kept inputs: read at the start, new finds written to it.
    pub corpus: Option<PathBuf>,
    /// Folder for inputs that panicked (`crash-<hash>`).
    pub artifacts: Option<PathBuf>,
    /// Where each input is written before it runs, so a supervisor can save the one that
    /// killed the process.
    pub current: Option<PathBuf>,
    /// Seed of the mutator.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            duration: Duration::from_secs(10),
            max_execs: None,
            max_len: 64 << 10,
            corpus: None,
            artifacts: None,
            current: None,
            seed: 1,
        }
    }
}

/// What a fuzzing session did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Inputs run.
    pub execs: u64,
    /// Inputs in the corpus at the end.
    pub corpus: usize,
    /// Edges reached (0 when the binary is not instrumented).
    pub edges: usize,
    /// Inputs that panicked, with the panic message.
    pub crashes: Vec<(Vec<u8>, String)>,
}

/// A 64-bit FNV-1a hash, naming kept inputs by content.
pub fn hash(bytes: &[u8]) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// SplitMix64: small, fast, and enough for choosing mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING_BYTES: [u8; 14] = [
    0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'-', b'.', b'"', b'<', b'>', b'\n', b' ',
];
const INTERESTING_NUMBERS: [&str; 12] = [
    "0",
    "-1",
    "1",
    "255",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "1e309",
    "-1e-320",
    "NaN",
    "0.5",
];

/// One to eight stacked mutations of `input`, with `other` to splice from.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], dict: &[&str], max_len: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(8) {
        let len = v.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16.min(len - start))).min(len);
                v.drain(start..end);
            }
            4 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64.min(len - start))).min(len);
                let chunk = v[start..end].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            6 if !dict.is_empty() => {
                let tok = dict[rng.below(dict.len())].as_bytes().to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, tok);
            }
            7 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            8 if len > 0 => {
                // Replace a run of digits with an interesting number.
                let start = rng.below(len);
                if let Some(d) = v[start..].iter().position(u8::is_ascii_digit) {
                    let s = start + d;
                    let e = s + v[s..]
                        .iter()
                        .position(|b| !(b.is_ascii_digit() || *b == b'.'))
                        .unwrap_or(len - s);
                    let num = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
                    v.splice(s..e, num.bytes());
                }
            }
            9 if len > 0 => {
                v.truncate(rng.below(len));
            }
            _ => {
                let at = rng.below(len + 1);
                let b = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
                v.insert(at, b);
            }
        }
    }
    v.truncate(max_len);
    v
}

static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

/// Runs `input` once; `Err` holds the panic message.
pub fn run_one(target: &Target, scratch: &Scratch, input: &[u8]) -> Result<(), String> {
    coverage::reset();
    match std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(scratch, input))) {
        Ok(()) => Ok(()),
        Err(_) => Err(LAST_PANIC
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|_| "panic".to_owned())),
    }
}

/// Keeps panic messages for [`run_one`] instead of printing them.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut m) = LAST_PANIC.lock() {
            *m = info.to_string();
        }
    }));
}

fn read_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

fn save(dir: &Path, prefix: &str, input: &[u8]) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("{prefix}{}", hash(input)));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

/// Fuzzes `target`: first its seeds and the corpus, then mutations of them, until the time
/// or the executions run out. `progress` sees the statistics every few seconds.
pub fn fuzz(target: &Target, opts: &Options, mut progress: impl FnMut(&Stats)) -> Stats {
    let mut stats = Stats::default();
    let Ok(scratch) = Scratch::new() else {
        stats
            .crashes
            .push((Vec::new(), "cannot make a scratch folder".into()));
        return stats;
    };
    let mut corpus: Vec<Vec<u8>> = (target.seeds)();
    if let Some(dir) = &opts.corpus {
        corpus.extend(read_corpus(dir));
    }
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut seen = vec![false; coverage::MAP_SIZE];
    let mut rng = Rng(opts.seed);
    let start = Instant::now();
    let mut last_report = Instant::now();
    let run = |input: &[u8], stats: &mut Stats, seen: &mut [bool]| -> bool {
        if let Some(cur) = &opts.current {
            let _ = std::fs::write(cur, input);
        }
        stats.execs += 1;
        if let Err(msg) = run_one(target, &scratch, input) {
            if let Some(dir) = &opts.artifacts {
                save(dir, "crash-", input);
            }
            stats.crashes.push((input.to_vec(), msg));
            return false;
        }
        coverage::merge_into(seen) > 0
    };
    let initial = std::mem::take(&mut corpus);
    for input in initial {
        run(&input, &mut stats, &mut seen);
        corpus.push(input);
    }
    loop {
        if start.elapsed() >= opts.duration || opts.max_execs.is_some_and(|m| stats.execs >= m) {
            break;
        }
        let a = rng.below(corpus.len());
        let b = rng.below(corpus.len());
        let input = mutate(
            &mut rng,
            &corpus[a],
            &corpus[b],
            target.dictionary,
            opts.max_len,
        );
        if run(&input, &mut stats, &mut seen) {
            if let Some(dir) = &opts.corpus {
                save(dir, "", &input);
            }
            corpus.push(input);
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            stats.corpus = corpus.len();
            stats.edges = seen.iter().filter(|s| **s).count();
            progress(&stats);
            last_report = Instant::now();
        }
    }
    stats.corpus = corpus.len();
    stats.edges = seen.iter().filter(|s| **s).count();
    stats
}
