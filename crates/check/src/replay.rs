//! Replay strings: everything `mmsim replay` needs to rerun one schedule.
//!
//! ```text
//! mmsim1:munmap-reuse-vs-gup-fast:broadcast:gup_fast.pte_recheck=off:a3b12a
//! ```
//!
//! Fields, separated by `:`: the format version; the scenario (a built-in
//! name or a path, as given to `mmsim check`; it may itself contain `:`); the
//! architecture; every configuration option that differs from v6.18's
//! Kconfig defaults and then every safeguard that differs from v6.18's
//! defaults for that configuration, as `name=on|off` separated by `,` (or
//! `-`; option names have no `.`, safeguard names do); the decisions.
//! Configuration, safeguards and architecture are the ones the run used,
//! whatever the file says now.
//!
//! Decisions are the CPU chosen at each point where two or more CPUs could
//! run: `a` is cpu0, `b` cpu1, ... `z` cpu25, `A` cpu26, ... `Z` cpu51, each
//! optionally followed by a repeat count (`a3` = cpu0 three times). `-` is
//! no decision at all.

use mmsim_model::safeguards::{REGISTRY, Safeguards};
use mmsim_model::{Arch, KernelConfig};

const PREFIX: &str = "mmsim1:";

/// A decoded replay string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplaySpec {
    /// The scenario: a built-in name or a path.
    pub scenario: String,
    /// The architecture.
    pub arch: Arch,
    /// The kernel configuration.
    pub config: KernelConfig,
    /// The safeguards.
    pub safeguards: Safeguards,
    /// The decisions, CPU numbers.
    pub decisions: Vec<u8>,
}

fn cpu_char(c: u8) -> char {
    match c {
        0..=25 => (b'a' + c) as char,
        _ => (b'A' + (c - 26)) as char,
    }
}

fn char_cpu(c: char) -> Option<u8> {
    match c {
        'a'..='z' => Some(c as u8 - b'a'),
        'A'..='Z' => Some(c as u8 - b'A' + 26),
        _ => None,
    }
}

/// Run-length letters (see the module doc).
pub fn encode_decisions(d: &[u8]) -> String {
    if d.is_empty() {
        return "-".into();
    }
    let mut s = String::new();
    let mut i = 0;
    while i < d.len() {
        let mut j = i;
        while j < d.len() && d[j] == d[i] {
            j += 1;
        }
        s.push(cpu_char(d[i]));
        if j - i > 1 {
            s += &(j - i).to_string();
        }
        i = j;
    }
    s
}

/// The inverse of [`encode_decisions`].
pub fn decode_decisions(s: &str) -> Result<Vec<u8>, String> {
    if s == "-" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let cpu = char_cpu(c).ok_or_else(|| format!("`{c}` is not a CPU letter"))?;
        let mut n = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            n.push(*d);
            chars.next();
        }
        let count: usize = if n.is_empty() {
            1
        } else {
            n.parse()
                .ok()
                .filter(|&k| k > 0 && k <= 1 << 24)
                .ok_or_else(|| format!("bad repeat count `{n}`"))?
        };
        if out.len() + count > 1 << 24 {
            return Err("too many decisions".into());
        }
        out.extend(std::iter::repeat_n(cpu, count));
    }
    Ok(out)
}

/// The replay string of a run.
pub fn encode(
    scenario: &str,
    arch: Arch,
    config: &KernelConfig,
    sg: &Safeguards,
    decisions: &[u8],
) -> String {
    let mut o = config.overrides();
    o.extend(sg.overrides_from(&Safeguards::for_config(config)));
    format!(
        "{PREFIX}{scenario}:{}:{}:{}",
        arch.name(),
        if o.is_empty() {
            "-".into()
        } else {
            o.join(",")
        },
        encode_decisions(decisions)
    )
}

/// Decodes a replay string.
pub fn decode(s: &str) -> Result<ReplaySpec, String> {
    let s = s.trim();
    let rest = s
        .strip_prefix(PREFIX)
        .ok_or_else(|| format!("a replay string starts with `{PREFIX}`"))?;
    let mut parts = rest.rsplitn(4, ':');
    let (Some(dec), Some(sgs), Some(arch), Some(scenario)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a replay string has five `:`-separated fields".into());
    };
    if scenario.is_empty() {
        return Err("the replay string names no scenario".into());
    }
    let arch = Arch::from_name(arch).ok_or_else(|| format!("unknown arch `{arch}`"))?;
    let mut config = KernelConfig::default();
    let mut sg_items = Vec::new();
    if sgs != "-" {
        let mut seen: Vec<&str> = Vec::new();
        for item in sgs.split(',') {
            let (name, v) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}` is not NAME=on|off"))?;
            // `encode` names each switch once: a repeat is an edited
            // string, and which of two switches wins would be a guess.
            if seen.contains(&name) {
                return Err(format!("`{name}` appears twice"));
            }
            seen.push(name);
            let on = match v {
                "on" => true,
                "off" => false,
                _ => return Err(format!("`{item}` is not NAME=on|off")),
            };
            if mmsim_model::config::lookup(name).is_some() {
                config.set_by_name(name, on)?;
            } else {
                sg_items.push((name, on));
            }
        }
    }
    // Safeguard defaults follow the configuration: apply it first.
    let mut safeguards = Safeguards::for_config(&config);
    for (name, on) in sg_items {
        safeguards.set_by_name(name, on)?;
    }
    Ok(ReplaySpec {
        scenario: scenario.to_string(),
        arch,
        config,
        safeguards,
        decisions: decode_decisions(dec)?,
    })
}

impl ReplaySpec {
    /// The configuration as explicit switches for every option.
    pub fn config_switches(&self) -> Vec<(String, bool)> {
        self.config
            .iter()
            .map(|(i, on)| (i.name.to_string(), on))
            .collect()
    }

    /// The safeguards as explicit switches for every registered one.
    pub fn safeguard_switches(&self) -> Vec<(String, bool)> {
        self.safeguards
            .iter()
            .map(|(i, on)| (i.name.to_string(), on))
            .collect()
    }
}

/// Every safeguard name (for messages).
pub fn safeguard_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|i| i.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip() {
        let d = vec![0, 0, 0, 1, 1, 0, 27, 27, 3];
        let s = encode_decisions(&d);
        assert_eq!(s, "a3b2aB2d");
        assert_eq!(decode_decisions(&s).unwrap(), d);
        assert_eq!(decode_decisions("-").unwrap(), Vec::<u8>::new());
        assert!(decode_decisions("a0").is_err());
        assert!(decode_decisions("1").is_err());
    }

    #[test]
    fn strings_round_trip_with_colons_in_paths() {
        let mut sg = Safeguards::default();
        sg.set_by_name("gup_fast.pte_recheck", false).unwrap();
        let c = KernelConfig::default();
        let s = encode("C:/x/y.toml", Arch::Broadcast, &c, &sg, &[1, 0, 0]);
        assert_eq!(
            s,
            "mmsim1:C:/x/y.toml:broadcast:gup_fast.pte_recheck=off:ba2"
        );
        let r = decode(&s).unwrap();
        assert_eq!(r.scenario, "C:/x/y.toml");
        assert_eq!(r.arch, Arch::Broadcast);
        assert_eq!(r.safeguards, sg);
        assert_eq!(r.decisions, vec![1, 0, 0]);
        assert!(decode("mmsim1:x:ipi:nope=off:a").is_err());
        // Configuration options ride in the same field; safeguard defaults
        // follow them.
        let mut c = KernelConfig::default();
        c.set_by_name("page_ext", true).unwrap();
        c.set_by_name("debug_vm", true).unwrap();
        let sg = Safeguards::for_config(&c);
        let s = encode("x", Arch::Ipi, &c, &sg, &[]);
        assert_eq!(s, "mmsim1:x:ipi:debug_vm=on,page_ext=on:-");
        let r = decode(&s).unwrap();
        assert_eq!((r.config, r.safeguards), (c, sg));
        // Issue 12: a contradictory string was read as its last switch.
        let e = decode("mmsim1:x:ipi:gup_fast.pte_recheck=off,gup_fast.pte_recheck=on:a");
        assert_eq!(e.unwrap_err(), "`gup_fast.pte_recheck` appears twice");
        assert!(decode("garbage").is_err());
    }
}
