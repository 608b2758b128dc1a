//! Every fuzz target, briefly: its seeds and the kept corpus, then a few hundred mutations,
//! none of which may panic. `cargo xtask fuzz` runs them for longer, with coverage.

// A test crate reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use autodl_fuzz::{engine, targets};

#[test]
fn every_target_survives_its_corpus_and_some_mutations() {
    engine::quiet_panics();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut failures = Vec::new();
    for t in targets() {
        let copy = tempfile::tempdir().unwrap();
        // The kept corpus is read, never written, by the tests.
        let kept = corpus.join(t.name);
        if kept.is_dir() {
            for e in std::fs::read_dir(&kept).unwrap() {
                let p = e.unwrap().path();
                std::fs::copy(&p, copy.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        let opts = engine::Options {
            duration: Duration::from_secs(20),
            max_execs: Some(300),
            corpus: Some(copy.path().to_path_buf()),
            seed: 7,
            ..engine::Options::default()
        };
        let stats = engine::fuzz(&t, &opts, |_| {});
        assert!(stats.execs > 0, "{}: nothing ran", t.name);
        for (input, msg) in stats.crashes {
            failures.push(format!(
                "{}: {msg}\n  input: {:?}",
                t.name,
                String::from_utf8_lossy(&input)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_seed_is_accepted_by_its_reader() {
    // The seeds are valid inputs: a target whose seeds all fail would fuzz only error paths.
    let dir = tempfile::tempdir().unwrap();
    let voc = autodl_fuzz::targets()
        .into_iter()
        .map(|t| (t.name, (t.seeds)().len()))
        .collect::<Vec<_>>();
    assert!(voc.iter().all(|(_, n)| *n > 0), "{voc:?}");
    let pkg = dir.path().join("m.dlpk");
    let seeds = (autodl_fuzz::target("package").unwrap().seeds)();
    std::fs::write(&pkg, &seeds[0]).unwrap();
    let out = dir.path().join("x");
    std::fs::create_dir(&out).unwrap();
    autodl_package::unpack(&pkg, &out).unwrap();
    autodl_package::ModelMeta::load(&out).unwrap();
}
