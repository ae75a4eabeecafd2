//! What the command-line tests share: running the binary, reading its one
//! JSON object, writing scratch files.

#![allow(dead_code)] // Each test file uses some of these.

use serde_json::Value;
use std::process::{Command, Output};

/// Runs `mmsim` with `args`.
pub fn mmsim(args: &[&str]) -> Output {
    mmsim_env(args, &[])
}

/// Runs `mmsim` with `args` and extra environment variables.
pub fn mmsim_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmsim"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run mmsim")
}

/// The one JSON object `o` printed on stdout.
pub fn json(o: &Output) -> Value {
    let s = String::from_utf8_lossy(&o.stdout);
    assert_eq!(s.lines().count(), 1, "not one JSON line: {s}");
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// Writes `text` to a file named `name` in this test process's scratch
/// folder and returns its path.
pub fn scratch(name: &str, text: &str) -> String {
    scratch_bytes(name, text.as_bytes())
}

/// [`scratch`] for bytes.
pub fn scratch_bytes(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("mmsim-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
