//! `autodl-fuzz`: runs the fuzz targets, each in a worker process so that an abort, a stack
//! overflow or a hang is caught and its input saved, not lost with the process.
//!
//! ```text
//! autodl-fuzz [--seconds N] [--corpus DIR] [--artifacts DIR] [TARGET...]   fuzz (all targets)
//! autodl-fuzz --replay TARGET FILE                                          run one input
//! autodl-fuzz --list                                                        name the targets
//! ```
//! `cargo xtask fuzz` builds it with coverage instrumentation and runs it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use autodl_fuzz::{Scratch, Target, coverage, engine, target, targets};

/// Address-space limit of a worker: inputs may make a reader allocate what its limits allow
/// (4 GiB for an image), not more.
const WORKER_MEMORY: u64 = 12 << 30;
/// A worker that spends this long on one input is hung.
const HANG: Duration = Duration::from_secs(30);

struct Args {
    seconds: u64,
    corpus: PathBuf,
    artifacts: PathBuf,
    targets: Vec<String>,
    worker: bool,
    replay: Option<(String, PathBuf)>,
    list: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 60,
        corpus: PathBuf::from("crates/fuzz/corpus"),
        artifacts: PathBuf::from("target/fuzz-artifacts"),
        targets: Vec::new(),
        worker: false,
        replay: None,
        list: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--seconds" => {
                let v = value("--seconds")?;
                args.seconds = v
                    .parse()
                    .map_err(|_| format!("--seconds: `{v}` is not a whole number"))?;
            }
            "--corpus" => args.corpus = PathBuf::from(value("--corpus")?),
            "--artifacts" => args.artifacts = PathBuf::from(value("--artifacts")?),
            "--worker" => args.worker = true,
            "--list" => args.list = true,
            "--replay" => {
                let t = value("--replay")?;
                let f = value("--replay")?;
                args.replay = Some((t, PathBuf::from(f)));
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            name => {
                if target(name).is_none() {
                    return Err(format!(
                        "unknown target `{name}` (targets: {})",
                        targets()
                            .iter()
                            .map(|t| t.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                args.targets.push(name.to_owned());
            }
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.list {
        for t in targets() {
            println!("{}", t.name);
        }
        return ExitCode::SUCCESS;
    }
    if let Some((name, file)) = &args.replay {
        return replay(name, file);
    }
    if args.worker {
        return worker(&args);
    }
    supervise(&args)
}

fn replay(name: &str, file: &Path) -> ExitCode {
    let (Some(t), Ok(input)) = (target(name), std::fs::read(file)) else {
        eprintln!(
            "error: unknown target `{name}` or unreadable {}",
            file.display()
        );
        return ExitCode::from(2);
    };
    let Ok(scratch) = Scratch::new() else {
        eprintln!("error: cannot make a scratch folder");
        return ExitCode::FAILURE;
    };
    // Not caught: a panic prints its message and backtrace.
    (t.run)(&scratch, &input);
    println!("{}: no crash", file.display());
    ExitCode::SUCCESS
}

/// Caps the worker's address space, so that an unbounded allocation fails (and is found)
/// instead of taking the machine.
#[allow(unsafe_code)]
fn limit_memory() {
    let lim = libc::rlimit {
        rlim_cur: WORKER_MEMORY,
        rlim_max: WORKER_MEMORY,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    unsafe {
        libc::setrlimit(libc::RLIMIT_AS, &lim);
    }
}

fn worker(args: &Args) -> ExitCode {
    let Some(t) = args.targets.first().and_then(|n| target(n)) else {
        return ExitCode::from(2);
    };
    limit_memory();
    engine::quiet_panics();
    let dir = args.artifacts.join(t.name);
    let _ = std::fs::create_dir_all(&dir);
    let opts = engine::Options {
        duration: Duration::from_secs(args.seconds),
        corpus: Some(args.corpus.join(t.name)),
        artifacts: Some(dir.clone()),
        current: Some(dir.join(".current")),
        seed: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        ..engine::Options::default()
    };
    let line = |s: &engine::Stats| {
        println!(
            "stats {} {} {} {}",
            s.execs,
            s.corpus,
            s.edges,
            s.crashes.len()
        );
    };
    let stats = engine::fuzz(&t, &opts, line);
    line(&stats);
    for (_, msg) in &stats.crashes {
        eprintln!("{}: panicked: {msg}", t.name);
    }
    ExitCode::SUCCESS
}

#[derive(Default)]
struct Totals {
    execs: u64,
    corpus: usize,
    edges: usize,
    crashes: Vec<String>,
}

fn supervise(args: &Args) -> ExitCode {
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("error: cannot find this program's path");
        return ExitCode::FAILURE;
    };
    let chosen: Vec<Target> = if args.targets.is_empty() {
        targets()
    } else {
        args.targets.iter().filter_map(|n| target(n)).collect()
    };
    if !coverage::instrumented() {
        eprintln!(
            "note: not built with coverage instrumentation; mutating blindly (cargo xtask fuzz builds it instrumented)"
        );
    } else {
        eprintln!("{} instrumented edges", coverage::edges());
    }
    let mut failed = false;
    let mut rows = Vec::new();
    for t in chosen {
        let totals = supervise_one(&exe, args, &t);
        eprintln!(
            "{}: {} executions ({:.0}/s), corpus {}, edges {}, crashes {}",
            t.name,
            totals.execs,
            totals.execs as f64 / args.seconds.max(1) as f64,
            totals.corpus,
            totals.edges,
            totals.crashes.len()
        );
        for c in &totals.crashes {
            eprintln!("  {c}");
        }
        failed |= !totals.crashes.is_empty();
        rows.push((t.name, totals));
    }
    println!("| target | executions | per second | corpus | edges | crashes |");
    println!("|---|---|---|---|---|---|");
    for (name, t) in &rows {
        println!(
            "| {name} | {} | {:.0} | {} | {} | {} |",
            t.execs,
            t.execs as f64 / args.seconds.max(1) as f64,
            t.corpus,
            t.edges,
            t.crashes.len()
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs workers for one target until its time is spent, restarting one that dies and
/// saving the input it died on.
fn supervise_one(exe: &Path, args: &Args, t: &Target) -> Totals {
    let mut totals = Totals::default();
    let dir = args.artifacts.join(t.name);
    let current = dir.join(".current");
    let end = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < end {
        let left = end
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1);
        let child = Command::new(exe)
            .args([
                "--worker",
                t.name,
                "--seconds",
                &left.to_string(),
                "--corpus",
            ])
            .arg(&args.corpus)
            .arg("--artifacts")
            .arg(&args.artifacts)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                totals.crashes.push(format!("cannot start a worker: {e}"));
                return totals;
            }
        };
        let stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            if let Some(out) = stdout {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if f.len() == 5 && f[0] == "stats" {
                        last = Some((
                            f[1].parse::<u64>().unwrap_or(0),
                            f[2].parse::<usize>().unwrap_or(0),
                            f[3].parse::<usize>().unwrap_or(0),
                        ));
                    }
                }
            }
            last
        });
        let mut stderr = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = std::io::Read::read_to_string(e, &mut text);
            }
            text
        });
        let mut hung = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) => {}
                Err(_) => break None,
            }
            let stale = std::fs::metadata(&current)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|e| e > HANG);
            if stale {
                let _ = child.kill();
                hung = true;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let last = reader.join().ok().flatten();
        let err = err_reader.join().unwrap_or_default();
        if let Some((execs, corpus, edges)) = last {
            totals.execs += execs;
            totals.corpus = corpus;
            totals.edges = totals.edges.max(edges);
        }
        for line in err.lines().filter(|l| l.contains(": panicked: ")) {
            totals.crashes.push(line.to_owned());
        }
        let died = hung || status.is_none_or(|s| !s.success());
        if died {
            let input = std::fs::read(&current).unwrap_or_default();
            let kind = if hung { "timeout-" } else { "crash-" };
            let saved = dir.join(format!("{kind}{}", engine::hash(&input)));
            let _ = std::fs::write(&saved, &input);
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            totals.crashes.push(format!(
                "{} (worker {}): {}",
                saved.display(),
                if hung {
                    "hung".to_owned()
                } else {
                    status.map_or("lost".to_owned(), |s| s.to_string())
                },
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ));
        }
        let _ = std::fs::remove_file(&current);
    }
    totals
}
