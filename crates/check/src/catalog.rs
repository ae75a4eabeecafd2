//! The built-in scenarios: every `*.toml` file of the repository's
//! `scenarios/` folder, compiled in (`build.rs` lists the folder; a new
//! scenario is a new file).
//!
//! Each is an ordinary scenario file; `mmsim check NAME` runs it, and the
//! test suite runs every one with its own settings and with each of its
//! `[[expect.variant]]`s.

use crate::scenario::{Scenario, ScenarioError, parse};

/// A built-in scenario.
#[derive(Debug)]
pub struct Builtin {
    /// Its name (also its file's stem).
    pub name: &'static str,
    /// Its file in the repository.
    pub path: &'static str,
    /// Its text.
    pub text: &'static str,
}

macro_rules! builtin {
    ($name:literal) => {
        Builtin {
            name: $name,
            path: concat!("scenarios/", $name, ".toml"),
            text: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scenarios/",
                $name,
                ".toml"
            )),
        }
    };
}

/// Every built-in scenario, by name (the build script lists the folder).
pub static CATALOG: &[Builtin] = include!(concat!(env!("OUT_DIR"), "/catalog.rs"));

/// The built-in scenario named `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    CATALOG.iter().find(|b| b.name == name)
}

impl Builtin {
    /// Parses it (`builtin:NAME` in errors).
    pub fn scenario(&self) -> Result<Scenario, ScenarioError> {
        let mut s = parse(self.text, &format!("builtin:{}", self.name))?;
        s.source = self.name.to_string();
        Ok(s)
    }
}
