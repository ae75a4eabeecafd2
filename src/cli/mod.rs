//! The subcommands.

pub mod bench;
pub mod check;
pub mod demo;
pub mod gup_test;
pub mod info;
pub mod stress;

use clap::Args;
use mmsim_model::safeguards::Safeguards;

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
