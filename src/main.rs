//! `mmsim`: the command line.
//!
//! Exit status: 0 = ran and found no violation, 1 = a violation was found
//! (or a benchmark missed its bar with `--enforce`), 2 = bad input or usage,
//! 3 = internal error: a defect of the model (a panic, an oops outside any
//! operation), never of the input; please report it with the command line,
//! the scenario and the replay string it prints. Every command takes
//! `--json` and then prints exactly one JSON object on stdout.
//!
//! A panic anywhere ends in one place, [`cli::internal_error`]: the
//! explorer catches its own (it must, to keep the failing schedule's replay
//! string) and hands them there; every other unwinds to `main`.

// Denied everywhere but in `cli::bench::kernel`, which makes the io_uring
// system calls that reach the real kernel's pin_user_pages_fast().
#![deny(unsafe_code)]

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// An executable, checkable model of Linux v6.18's lockless memory-management paths.
#[derive(Parser, Debug)]
#[command(name = "mmsim", version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Model constants: kernel baseline, page and section size, struct page size.
    Info(cli::info::InfoArgs),
    /// The built-in scenarios.
    List(cli::check::ListArgs),
    /// Explore a scenario's interleavings and report what the detectors find.
    Check(cli::check::CheckArgs),
    /// Rerun one schedule from the replay string `check` printed.
    Replay(cli::check::ReplayArgs),
    /// The protection matrix: which safeguards make a scenario safe.
    Ablate(cli::ablate::AblateArgs),
    /// Generate scenarios, explore them, and report each distinct violation as a minimized scenario file.
    Hunt(cli::hunt::HuntArgs),
    /// Combine the JSON outputs of `check --shard K/N` runs, or the outputs of `hunt --shard K/N` runs.
    Merge(cli::check::MergeArgs),
    /// The seed's story: a speculative reference against a freed memmap.
    Demo(cli::demo::DemoArgs),
    /// Every safeguard, its v6.18 default and what it protects.
    Safeguards(cli::JsonArg),
    /// The kernel's gup_test selftest (flags and output) against the model.
    #[command(name = "gup-test")]
    GupTest(cli::gup_test::GupTestArgs),
    /// Real threads, random operations, detectors on.
    Stress(cli::stress::StressArgs),
    /// The performance suite, side by side with the real kernel.
    Bench(cli::bench::BenchArgs),
}

/// The explorer's allocator: it serves each exploring thread's snapshot
/// arena (the booted machine restored for each execution instead of booted
/// again), and with `--scheduler dpor` compiled in it tells the explorer
/// which heap blocks each step allocates (fewer executions to exhaust a
/// scenario). Elsewhere it is the system allocator behind one load of a
/// global counter.
#[global_allocator]
static ALLOC: mmsim_facade::dpor::TrackingAlloc = mmsim_facade::dpor::TrackingAlloc;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let json = std::env::args().any(|a| a == "--json");
    match std::panic::catch_unwind(|| dispatch(args)) {
        Ok(code) => ExitCode::from(code),
        Err(p) => ExitCode::from(cli::internal_error(json, &cli::panic_message(&*p), None)),
    }
}

fn dispatch(args: Args) -> u8 {
    match args.cmd {
        Cmd::Info(a) => cli::info::run(&a),
        Cmd::List(a) => cli::check::run_list(&a),
        Cmd::Check(a) => cli::check::run(&a),
        Cmd::Replay(a) => cli::check::run_replay(&a),
        Cmd::Hunt(a) => cli::hunt::run(&a),
        Cmd::Merge(a) => cli::check::run_merge(&a),
        Cmd::Ablate(a) => cli::ablate::run(&a),
        Cmd::Demo(a) => cli::demo::run(&a),
        Cmd::Safeguards(a) => cli::safeguards(&a),
        Cmd::GupTest(a) => cli::gup_test::run(&a),
        Cmd::Stress(a) => cli::stress::run(&a),
        Cmd::Bench(a) => cli::bench::run(&a),
    }
}
