//! `--svg`: the failing schedule as per-CPU swimlanes, read back with an
//! XML parser and checked against the timeline's steps.

mod common;

use common::{json, mmsim, scratch};

fn attr<'a>(n: &roxmltree::Node<'a, 'a>, a: &str) -> &'a str {
    n.attribute(a).unwrap_or_else(|| panic!("no {a} on {n:?}"))
}

/// The seed's race: `check --svg` and `replay --svg` draw the same steps
/// as the timeline, one lane per CPU and the rcuo kthread, the operations
/// as spans, the grace periods, the memmap free across the lanes, and the
/// violating step highlighted with its kind.
#[test]
fn the_seed_race_svg_has_the_timelines_lanes_spans_and_violation() {
    let path = scratch("seed.svg", "");
    let o = mmsim(&["check", "hot-remove-vs-gup-fast", "--svg", &path, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j = json(&o);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("<script") && !text.contains("http://www.w3.org/1999/xlink"));
    assert!(!text.contains("@import") && !text.contains("url(http"));
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let class = |c: &'static str| {
        doc.descendants()
            .filter(move |n| n.attribute("class") == Some(c))
            .collect::<Vec<_>>()
    };
    // Lanes: cpu0, cpu1, and the rcuo kthread.
    let lanes: Vec<&str> = class("lane").iter().map(|n| attr(n, "data-lane")).collect();
    assert_eq!(lanes, ["0", "1", "2"]);
    // Steps: exactly the timeline's lines, in order.
    let timeline: Vec<String> = j["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().trim().to_string())
        .filter(|l| !l.starts_with("..."))
        .collect();
    let steps = class("step");
    let lines: Vec<&str> = steps.iter().map(|n| attr(n, "data-line")).collect();
    assert_eq!(lines, timeline);
    for (i, n) in steps.iter().enumerate() {
        assert_eq!(attr(n, "data-row"), i.to_string());
        assert!(timeline[i].starts_with(&format!("cpu{} ", attr(n, "data-cpu"))));
    }
    // Operations as spans, one per `>>`, each on its CPU's lane.
    let ops = class("op");
    let starts: Vec<&String> = timeline.iter().filter(|l| l.contains(" >> ")).collect();
    assert_eq!(ops.len(), starts.len());
    for (n, l) in ops.iter().zip(&starts) {
        assert!(l.starts_with(&format!(
            "cpu{} >> {}",
            attr(n, "data-cpu"),
            attr(n, "data-op")
        )));
    }
    // Grace periods: the offline's synchronize_rcu ran and ended on cpu1.
    assert!(class("gp").iter().any(|n| attr(n, "data-cpu") == "1"
        && attr(n, "data-func") == "synchronize_rcu"
        && attr(n, "data-ended") == "true"));
    // The violation: the last row, on cpu0, with the JSON's kind, after the
    // memmap was freed, inside cpu0's IRQ-disabled region.
    let v = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("violation-mark"))
        .expect("a highlighted violation");
    let vrow: usize = attr(&v, "data-row").parse().unwrap();
    assert_eq!(vrow, steps.len() - 1);
    assert_eq!(attr(&v, "data-cpu"), "0");
    assert_eq!(
        attr(&v, "data-kind"),
        j["violations"][0]["kind"].as_str().unwrap()
    );
    let freed = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("freed-mark"))
        .expect("the memmap free is marked");
    assert_eq!(attr(&freed, "data-what"), "memmap freed");
    assert!(attr(&freed, "data-row").parse::<usize>().unwrap() < vrow);
    assert!(class("irq").iter().any(|n| attr(n, "data-cpu") == "0"
        && attr(n, "data-first-row").parse::<usize>().unwrap() <= vrow
        && attr(n, "data-last-row").parse::<usize>().unwrap() >= vrow));
    // replay --svg draws the same schedule.
    let rpath = scratch("seed-replay.svg", "");
    let r = mmsim(&["replay", j["replay"].as_str().unwrap(), "--svg", &rpath]);
    assert_eq!(r.status.code(), Some(1));
    let rtext = std::fs::read_to_string(&rpath).unwrap();
    let rdoc = roxmltree::Document::parse(&rtext).unwrap();
    let rlines: Vec<&str> = rdoc
        .descendants()
        .filter(|n| n.attribute("class") == Some("step"))
        .map(|n| attr(&n, "data-line"))
        .collect();
    assert_eq!(rlines, lines);
}

/// A wait draws an arrow to the CPU it waits for: `memunmap_pages()`
/// without its incidental grace periods, where the kill's
/// `wait_for_completion()` or a grace period waits for the walker.
#[test]
fn a_wait_is_an_arrow_to_the_cpu_waited_for() {
    let path = scratch("mem.svg", "");
    let o = mmsim(&[
        "check",
        "memunmap-vs-gup-fast",
        "--safeguard",
        "percpu_ref.kill_rcu=off",
        "--safeguard",
        "mem_hotplug_lock.rcu_sync=off",
        "--svg",
        &path,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let text = std::fs::read_to_string(&path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let steps: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("step"))
        .collect();
    let waits: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("wait"))
        .collect();
    assert!(!waits.is_empty(), "no wait drawn");
    for w in waits {
        let row: usize = attr(&w, "data-row").parse().unwrap();
        let line = attr(&steps[row], "data-line");
        assert!(
            line.ends_with(&format!("waiting for cpu{}", attr(&w, "data-to"))),
            "{line}"
        );
    }
    // One highlighted violation.
    let kinds: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("violation-mark"))
        .map(|n| attr(&n, "data-kind"))
        .collect();
    assert_eq!(kinds.len(), 1);
}

/// `ablate --svg`: the heat map has a cell per scenario and safeguard
/// with the effect the JSON gives it, and the violation kinds as legend.
#[test]
fn the_ablate_heat_map_agrees_with_its_json() {
    let path = scratch("matrix.svg", "");
    let o = mmsim(&[
        "ablate",
        "munmap-table-free-vs-gup-fast",
        "usage-vs-pfn-valid",
        "--iterations",
        "200",
        "--svg",
        &path,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let j = json(&o);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("<script"));
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    let cells: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("matrix-cell"))
        .collect();
    let rows = j["rows"].as_array().unwrap();
    let want: Vec<(String, String, String)> = rows
        .iter()
        .flat_map(|r| {
            r["cells"].as_array().unwrap().iter().map(move |c| {
                (
                    r["scenario"].as_str().unwrap().to_string(),
                    c["safeguard"].as_str().unwrap().to_string(),
                    c["effect"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect();
    let got: Vec<(String, String, String)> = cells
        .iter()
        .map(|n| {
            (
                attr(n, "data-scenario").to_string(),
                attr(n, "data-safeguard").to_string(),
                attr(n, "data-effect").to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);
    let legend: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("legend-kind"))
        .map(|n| attr(&n, "data-kind"))
        .collect();
    for k in ["page-table-use-after-free", "section-usage-use-after-free"] {
        assert!(legend.contains(&k), "{legend:?}");
    }
}

/// `demo --svg DIR` writes the seed's race as a picture; the README's
/// picture (`docs/seed-race.svg`) is exactly that file.
#[test]
fn demo_svg_writes_the_seed_race_and_the_readme_picture_is_it() {
    let dir = std::env::temp_dir().join(format!("mmsim-demo-svg-{}", std::process::id()));
    let d = dir.to_string_lossy().into_owned();
    let o = mmsim(&["demo", "--svg", &d]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let text = std::fs::read_to_string(dir.join("seed-race.svg")).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    let v = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("violation-mark"))
        .expect("the violation is highlighted");
    assert_eq!(attr(&v, "data-kind"), "memmap-use-after-free");
    let committed = include_str!("../docs/seed-race.svg");
    assert_eq!(
        text, committed,
        "docs/seed-race.svg is not what `mmsim demo --svg docs` writes now: regenerate it"
    );
    let readme = include_str!("../README.md");
    assert!(readme.contains("](docs/seed-race.svg)"));
}
