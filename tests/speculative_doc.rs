//! docs/SPECULATIVE.md's replay strings still show what they claim: each
//! one replays, without diverging, to a violation. A change of the model's
//! scheduling points makes old strings diverge; this test says which to
//! regenerate (`mmsim check` with the settings in the string prints the new
//! one). And every scenario the document names is in the catalog.

mod common;

use common::{json, mmsim};

const DOC: &str = include_str!("../docs/SPECULATIVE.md");

/// Every `mmsim1:...` replay string in the document.
fn replays() -> Vec<&'static str> {
    let mut out: Vec<&str> = DOC
        .match_indices("mmsim1:")
        .map(|(i, _)| {
            let rest = &DOC[i..];
            let end = rest
                .find(|c: char| c == '`' || c == '\'' || c.is_whitespace())
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[test]
fn every_replay_string_in_the_document_reproduces_a_violation() {
    let rs = replays();
    assert!(rs.len() >= 10, "only {} replay strings", rs.len());
    let mut stale = Vec::new();
    for r in rs {
        let v = json(&mmsim(&["replay", r, "--json"]));
        let found = v["violations"].as_array().is_some_and(|a| !a.is_empty());
        if !found || !v["diverged"].is_null() {
            stale.push(format!(
                "{r}: diverged {}, violations {}",
                v["diverged"], v["violations"]
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "docs/SPECULATIVE.md has replay strings that no longer reproduce:\n{}",
        stale.join("\n")
    );
}

#[test]
fn every_scenario_the_document_names_is_in_the_catalog() {
    let names = [
        "hot-remove-vs-gup-fast",
        "gup-fast-file-vs-hot-remove",
        "pagecache-lookup-vs-hot-remove",
        "ksm-vs-hot-remove",
        "compact-vs-hot-remove",
        "compact-vs-memunmap",
        "kpageflags-vs-hot-remove",
        "hvo-vs-speculative-get",
        "memunmap-vs-gup-fast",
        "devdax-pin-vs-memunmap",
    ];
    for n in names {
        assert!(
            DOC.contains(&format!("`{n}`")),
            "the document does not name {n}"
        );
        assert!(
            mmsim_check::catalog::find(n).is_some(),
            "{n} is named by docs/SPECULATIVE.md but is not in the catalog"
        );
    }
}
