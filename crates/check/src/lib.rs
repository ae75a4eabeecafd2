//! mmsim-check: the explorer that runs scenario files against the model.
//!
//! The layer between the model (`mmsim-model`) and the command line:
//!
//! * [`ablate`]: the protection matrix: a scenario with each safeguard
//!   flipped, and pairs switched off together;
//! * [`scenario`]: scenario files (TOML, the format of `SCENARIOS.md`),
//!   parsed and validated, every error at `file:line:column`;
//! * [`catalog`]: the built-in scenarios of the repository's `scenarios/`;
//! * [`setup`]: a scenario's start state on a fresh machine;
//! * [`ops`]: each CPU's operations, run against the model;
//! * [`explore`]: many executions under shuttle (PCT, random, bounded DFS),
//!   every schedule recorded; [`explore::replay`] reruns one;
//! * [`replay`]: the replay string that names a schedule;
//! * [`trace`]: an execution's trace as a per-CPU timeline;
//! * [`svg`]: the same trace as per-CPU swimlanes, an SVG picture.
//! * [`fuzz`]: generated scenario files, valid and hostile, and a run of
//!   one as `mmsim check` would (the fuzz tests; a random scenario hunt).
//! * [`hunt`]: `mmsim hunt`: generated scenarios explored, failing
//!   schedules deduplicated by signature, minimized and classified.
//!
//! The model code is the same code that runs natively: the explorer only
//! builds machines in `Mode::Explore`, where every scheduling point of the
//! model is a shuttle scheduling decision.

// No unsafe code but one module's: restoring a snapshot of a booted
// machine (`explore::snapshot`), whose contract the explorer's execution
// loop upholds.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod ablate;
pub mod catalog;
pub mod explore;
pub mod fuzz;
pub mod hunt;
pub mod ops;
pub mod replay;
pub mod scenario;
pub mod setup;
pub mod svg;
pub mod trace;

use scenario::{Scenario, ScenarioError};
use std::fmt;

/// Why a check could not run: bad input (exit status 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputError {
    /// The scenario file is malformed or names something undefined.
    Scenario(ScenarioError),
    /// The set-up cannot build the scenario's start state.
    Setup(setup::SetupError),
    /// Anything else (a file that cannot be read, a bad option).
    Other(String),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::Scenario(e) => e.fmt(f),
            InputError::Setup(e) => e.fmt(f),
            InputError::Other(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for InputError {}

impl From<ScenarioError> for InputError {
    fn from(e: ScenarioError) -> Self {
        InputError::Scenario(e)
    }
}

impl From<setup::SetupError> for InputError {
    fn from(e: setup::SetupError) -> Self {
        InputError::Setup(e)
    }
}

/// The largest scenario file (a catalog file is a few kilobytes).
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;

/// Reads a regular file of at most `max` bytes. Anything else (a device
/// such as `/dev/zero`, a FIFO, a directory, a larger file) is refused
/// without reading it, so that no input can make a read last forever.
pub fn read_regular_file(path: &str, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path}: not a regular file"));
    }
    let too_big = || format!("{path}: larger than {} KiB, the most this reads", max >> 10);
    if meta.len() > max {
        return Err(too_big());
    }
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    let mut bytes = Vec::new();
    // The file may have grown since the metadata was read.
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{path}: cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Loads a scenario: a built-in name, or a path to a file (a regular file
/// of at most [`MAX_SCENARIO_BYTES`]).
///
/// An argument that names an existing file, contains a `/` or ends in
/// `.toml` is a path; anything else is a built-in name.
pub fn load(arg: &str) -> Result<Scenario, InputError> {
    let p = std::path::Path::new(arg);
    let is_path = arg.contains('/') || arg.ends_with(".toml") || p.exists();
    if !is_path {
        return match catalog::find(arg) {
            Some(b) => Ok(b.scenario()?),
            None => Err(InputError::Other(format!(
                "no built-in scenario `{arg}` (see `mmsim list`), and no such file"
            ))),
        };
    }
    let bytes = read_regular_file(arg, MAX_SCENARIO_BYTES).map_err(InputError::Other)?;
    Ok(scenario::parse_bytes(&bytes, arg)?)
}
