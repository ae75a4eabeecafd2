//! The scenario format under fuzzing (issue 12's guard): generated files,
//! valid and mutated, through parse, validation, set-up and a few explored
//! schedules. Nothing may panic, every answer must be an exit status of
//! 0, 1 or 2, and every exit 2 must name `file:line:column`.
//!
//! The default run is bounded for CI (8,000 files, about ten seconds in
//! release). The long run, 100,000 files in about two minutes:
//!
//! ```sh
//! cargo test --release -p mmsim-check --test fuzz -- --ignored --nocapture
//! MMSIM_FUZZ_CASES=1000000 MMSIM_FUZZ_SEED=7 \
//!   cargo test --release -p mmsim-check --test fuzz -- --ignored --nocapture
//! ```
//!
//! A failure prints the case's seed and file; `MMSIM_FUZZ_ONLY=<case>`
//! reruns that one case and prints its file.

use mmsim_check::explore::derive;
use mmsim_check::fuzz::{Generator, Rng, Verdict, exercise, mutate, render};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One case: a generated file, mutated three times in four.
fn case(seed: u64, i: u64) -> (Vec<u8>, Vec<&'static str>) {
    let s = derive(seed, i);
    let mut g = Generator::new(s);
    let t = g.scenario();
    if i.is_multiple_of(4) {
        return (render(&t).into_bytes(), Vec::new());
    }
    mutate(&mut Rng::new(s ^ 0x5bd1_e995), &t)
}

#[test]
fn generated_and_mutated_scenarios_never_panic_and_every_refusal_has_a_position() {
    fuzz(8000);
}

/// The long run (`-- --ignored`): 100,000 files unless MMSIM_FUZZ_CASES
/// says otherwise, about two minutes on the project's machine.
#[test]
#[ignore]
fn long_fuzz_run() {
    fuzz(100_000);
}

fn fuzz(default_cases: u64) {
    let cases = env("MMSIM_FUZZ_CASES", default_cases);
    let seed = env("MMSIM_FUZZ_SEED", 0);
    let only = std::env::var("MMSIM_FUZZ_ONLY")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    // MMSIM_FUZZ_VERBOSE=1: print why unmutated files were refused (to
    // tune the generator).
    let verbose = env("MMSIM_FUZZ_VERBOSE", 0) == 1;
    let start = Instant::now();
    let (mut refused, mut clean, mut found) = (0u64, 0u64, 0u64);
    let (mut valid_ran, mut valid) = (0u64, 0u64);
    let mut slowest = (Duration::ZERO, 0);
    let mut defects = Vec::new();
    for i in 0..cases {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let (bytes, muts) = case(seed, i);
        if only.is_some() {
            println!("{}", String::from_utf8_lossy(&bytes));
        }
        let t = Instant::now();
        let v = exercise(&bytes, "fuzz.toml", 4, i);
        let took = t.elapsed();
        if took > slowest.0 {
            slowest = (took, i);
        }
        if muts.is_empty() {
            valid += 1;
        }
        if let (true, Verdict::Refused(r)) = (verbose && muts.is_empty(), &v) {
            println!("case {i}: {r}");
        }
        match v {
            Verdict::Refused(_) => refused += 1,
            Verdict::Clean => clean += 1,
            Verdict::Found(_) => found += 1,
            Verdict::Defect(d) => {
                defects.push(format!(
                    "case {i} (seed {seed}, mutations {muts:?}): {d}\n{}",
                    String::from_utf8_lossy(&bytes)
                ));
                continue;
            }
        }
        if muts.is_empty() && !matches!(v, Verdict::Refused(_)) {
            valid_ran += 1;
        }
    }
    println!(
        "{cases} cases in {:.1} s: {refused} refused (exit 2), {clean} clean (0), {found} with violations (1), {} defects; slowest case {} took {:.3} s",
        start.elapsed().as_secs_f64(),
        defects.len(),
        slowest.1,
        slowest.0.as_secs_f64()
    );
    assert!(
        defects.is_empty(),
        "{} defects; the first:\n{}",
        defects.len(),
        defects[0]
    );
    // The generator must keep reaching set-up and the explorer, or the
    // fuzzing only tests the parser.
    if only.is_none() {
        assert!(
            valid_ran * 2 >= valid,
            "only {valid_ran} of {valid} unmutated files ran"
        );
    }
}
