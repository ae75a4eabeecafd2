//! The subcommands.

pub mod ablate;
pub mod bench;
pub mod check;
pub mod demo;
pub mod gup_test;
pub mod hunt;
pub mod info;
pub mod stress;

use clap::Args;
use mmsim_model::safeguards::Safeguards;

/// The exit status of an internal error (see `main.rs`).
pub const EXIT_INTERNAL: u8 = 3;

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "a panic with a non-text payload".into()
    }
}

/// Reports a defect of the model (a panic, an oops outside any operation)
/// and returns [`EXIT_INTERNAL`]: the one place where such a failure
/// becomes an exit status, so that it never looks like bad input. With
/// `replay`, the string that reruns the failing schedule.
pub fn internal_error(json: bool, message: &str, replay: Option<&str>) -> u8 {
    let command: Vec<String> = std::env::args().collect();
    let command = command.join(" ");
    if json {
        println!(
            "{}",
            serde_json::json!({
                "error": format!("internal error: {message}"),
                "internal_error": true,
                "command": command,
                "replay": replay,
            })
        );
    }
    eprintln!("mmsim: internal error: please report (a defect of the model, not of the input)");
    eprintln!("  {message}");
    eprintln!("  command: {command}");
    if let Some(r) = replay {
        eprintln!("  replay: mmsim replay '{r}'");
    }
    EXIT_INTERNAL
}

/// Just `--json`.
#[derive(Args, Debug)]
pub struct JsonArg {
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `mmsim safeguards`.
pub fn safeguards(a: &JsonArg) -> u8 {
    let d = Safeguards::default();
    if a.json {
        let list: Vec<_> = d
            .iter()
            .map(|(i, on)| {
                serde_json::json!({"name": i.name, "default": if on {"on"} else {"off"}, "protects": i.protects})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "kernel": "v6.18", "safeguards": list })
        );
    } else {
        println!("Safeguards (default = Linux v6.18):");
        for (i, on) in d.iter() {
            println!(
                "  {:<36} {:<4} {}",
                i.name,
                if on { "on" } else { "off" },
                i.protects
            );
        }
    }
    0
}
