//! A failing schedule as a picture: per-CPU swimlanes in time order.
//!
//! The same trace as [`crate::trace::timeline`], drawn: one lane (a
//! column) per CPU, the rcuo kthread last and teardown after it; time runs
//! down, one row per line of the text timeline (runs of identical steps
//! collapse into one row with a count, as there). On top of the steps:
//!
//! * each operation of the scenario as a labelled span, from its `>>` to
//!   its `<<`;
//! * IRQ-disabled regions and RCU read-side sections, shaded. The model
//!   does not trace `local_irq_save()` itself (it is on GUP-fast's hot
//!   path), so the regions are read from the steps: GUP-fast's walk
//!   (`gup_fast_pgd_range` down to `try_get_folio` and `gup_put_folio`)
//!   runs with IRQs off, `pfn_valid()` under `rcu_read_lock_sched()`;
//! * grace periods (`synchronize_rcu`, `synchronize_rcu_expedited`) as bars
//!   from "start grace period" to "grace period ended", and every wait
//!   (a grace period's reader, a lock, a completion, a flush IPI) as an
//!   arrow to the CPU it waits for;
//! * the moment the memmap, a page table or `ms->usage` is freed, as a
//!   line across every lane;
//! * the violating step, highlighted, with its kind.
//!
//! The SVG is self-contained: a style sheet inside it, the generic
//! `monospace` font family, no scripts and nothing external. Every element
//! carries its meaning in a class and `data-` attributes (the tests read
//! them back with an XML parser).

use crate::ops::{OP_RESULT, OP_START, TEARDOWN};
use crate::trace;
use mmsim_facade::sched::{Event, TraceEntry};
use std::fmt::Write;

const LANE_W: usize = 340;
const ROW_H: usize = 16;
const TOP: usize = 70;
const LEFT: usize = 10;
/// Characters of a step's label that fit in a lane.
const LABEL_CHARS: usize = 52;

/// The functions of GUP-fast's walk, which runs with IRQs disabled.
const IRQ_OFF_FUNCS: &[&str] = &[
    "gup_fast_pgd_range",
    "gup_fast_p4d_range",
    "gup_fast_pud_range",
    "gup_fast_pmd_range",
    "gup_fast_pte_range",
    "gup_fast_pmd_leaf",
    "try_grab_folio_fast",
    "try_get_folio",
    "gup_put_folio",
    "gup_fast_folio_allowed",
];

/// The functions that run inside an RCU read-side section (and are not in
/// an IRQ-disabled region already).
const RCU_FUNCS: &[&str] = &["pfn_valid", "page_ref_add_unless", "page_count_writable"];

/// Helpers that run in their caller's context: a step of theirs is inside
/// an IRQ-disabled region when the lane's step before it is (the
/// speculative reference `page_ref_add_unless()` under GUP-fast's walk).
const NESTED_FUNCS: &[&str] = &["page_ref_add_unless", "page_count_writable"];

/// Steps that free what a lockless reader may still touch, and what.
const FREES: &[(&str, &str, &str)] = &[
    ("depopulate_section_memmap", "vmemmap_free", "memmap freed"),
    ("section_deactivate", "kfree(ms->usage)", "ms->usage freed"),
    ("tlb_table_flush", "free page table", "page table freed"),
];

/// One row: a collapsed run of identical entries.
struct RowEntry<'a> {
    e: &'a TraceEntry,
    count: usize,
    line: String,
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn short(s: &str) -> String {
    if s.chars().count() <= LABEL_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(LABEL_CHARS - 1).collect();
        t.push('…');
        t
    }
}

/// The rows of `trace` up to its first violation, collapsed as the text
/// timeline collapses them.
fn rows(trace: &[TraceEntry]) -> Vec<RowEntry<'_>> {
    let end = trace
        .iter()
        .position(|e| e.event == Event::Report)
        .map_or(trace.len(), |i| i + 1);
    let mut out: Vec<RowEntry> = Vec::new();
    for e in &trace[..end] {
        let l = trace::line(e);
        match out.last_mut() {
            Some(r) if r.line == l && lane_of(r.e) == lane_of(e) => r.count += 1,
            _ => out.push(RowEntry {
                e,
                count: 1,
                line: l,
            }),
        }
    }
    out
}

/// The lane of an entry: its CPU, or `usize::MAX` for teardown.
fn lane_of(e: &TraceEntry) -> usize {
    if std::ptr::eq(e.point, TEARDOWN) {
        usize::MAX
    } else {
        e.cpu as usize
    }
}

/// The timeline line of a row, as [`trace::timeline`] prints it (without
/// the indentation).
fn row_line(r: &RowEntry) -> String {
    if r.count > 1 {
        format!("{}  (x{})", r.line, r.count)
    } else {
        r.line.clone()
    }
}

/// Draws `trace` (up to its first violation) as an SVG document. `cpus`
/// is the number of model CPUs (the rcuo kthread is the CPU numbered
/// after them); `title` heads the picture.
pub fn schedule_svg(trace: &[TraceEntry], cpus: usize, title: &str) -> String {
    let rows = rows(trace);
    let max_cpu = rows
        .iter()
        .map(|r| lane_of(r.e))
        .filter(|&l| l != usize::MAX)
        .max()
        .unwrap_or(0);
    let cpu_lanes = (max_cpu + 1).max(cpus);
    let has_teardown = rows.iter().any(|r| lane_of(r.e) == usize::MAX);
    let lanes = cpu_lanes + usize::from(has_teardown);
    let col = |l: usize| if l == usize::MAX { cpu_lanes } else { l };
    let x0 = |l: usize| LEFT + col(l) * LANE_W;
    let y = |i: usize| TOP + i * ROW_H;
    let width = LEFT * 2 + lanes * LANE_W;
    let height = TOP + rows.len() * ROW_H + 40;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">
<style>
.bg {{ fill: #ffffff; }}
.lane-bg {{ fill: #f7f7f7; stroke: #dddddd; }}
.lane-label {{ font-weight: bold; font-size: 13px; }}
.op {{ fill: #dbe9f7; stroke: #6a9ccc; }}
.op-label {{ fill: #24507a; font-style: italic; }}
.irq {{ fill: #f6d7a8; fill-opacity: 0.7; }}
.rcu {{ fill: #cfe8cf; fill-opacity: 0.7; }}
.gp {{ fill: #b38bd9; }}
.wait {{ stroke: #7a4fb0; stroke-width: 1.2; fill: none; }}
.freed {{ stroke: #c00000; stroke-width: 1.5; stroke-dasharray: 6 3; }}
.freed-label {{ fill: #c00000; font-weight: bold; }}
.violation {{ fill: #ff4d4d; fill-opacity: 0.35; stroke: #c00000; stroke-width: 2; }}
.violation-kind {{ fill: #c00000; font-weight: bold; }}
.title {{ font-size: 14px; font-weight: bold; }}
</style>
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#7a4fb0"/></marker></defs>
<rect class="bg" x="0" y="0" width="{width}" height="{height}"/>
<text class="title" x="{LEFT}" y="20">{}</text>
"##,
        esc(title)
    );
    // Lanes.
    s.push_str("<g class=\"lanes\">\n");
    for l in 0..lanes {
        let (label, data) = if l == cpu_lanes {
            ("teardown".to_string(), "teardown".to_string())
        } else if l >= cpus {
            (format!("cpu{l} (rcuo)"), l.to_string())
        } else {
            (format!("cpu{l}"), l.to_string())
        };
        let x = LEFT + l * LANE_W;
        let _ = writeln!(
            s,
            r#"<g class="lane" data-lane="{data}"><rect class="lane-bg" x="{x}" y="{}" width="{}" height="{}"/><text class="lane-label" x="{}" y="{}">{}</text></g>"#,
            TOP - 24,
            LANE_W - 4,
            rows.len() * ROW_H + 30,
            x + 6,
            TOP - 8,
            esc(&label)
        );
    }
    s.push_str("</g>\n");
    // Operations: from `>>` to `<<` on the same lane.
    s.push_str("<g class=\"ops\">\n");
    for (i, r) in rows.iter().enumerate() {
        if !std::ptr::eq(r.e.point, OP_START) {
            continue;
        }
        let l = lane_of(r.e);
        let end = rows[i + 1..]
            .iter()
            .position(|q| lane_of(q.e) == l && std::ptr::eq(q.e.point, OP_RESULT))
            .map_or(rows.len() - 1, |k| i + 1 + k);
        let note = r.e.note.as_deref().unwrap_or("?");
        let _ = writeln!(
            s,
            r#"<rect class="op" data-cpu="{}" data-op="{}" data-first-row="{i}" data-last-row="{end}" x="{}" y="{}" width="{}" height="{}" rx="4"><title>{}</title></rect>"#,
            r.e.cpu,
            esc(note),
            x0(l) + 2,
            y(i) - ROW_H + 3,
            LANE_W - 8,
            (end - i + 1) * ROW_H,
            esc(note)
        );
    }
    s.push_str("</g>\n");
    // IRQ-disabled regions and RCU read-side sections: maximal runs of a
    // lane's rows in those functions.
    s.push_str("<g class=\"regions\">\n");
    for (class, funcs, what) in [
        ("irq", IRQ_OFF_FUNCS, "IRQs disabled (GUP-fast's walk)"),
        ("rcu", RCU_FUNCS, "RCU read-side section"),
    ] {
        for l in (0..cpu_lanes).chain(std::iter::once(usize::MAX)) {
            let mine: Vec<usize> = (0..rows.len())
                .filter(|&i| lane_of(rows[i].e) == l)
                .collect();
            // Whether each of the lane's rows is inside; a nested helper's
            // step inherits the row before it.
            let mut flags: Vec<bool> = Vec::with_capacity(mine.len());
            for (j, &i) in mine.iter().enumerate() {
                let e = rows[i].e;
                let step = matches!(
                    e.event,
                    Event::Step | Event::Wait | Event::Resume | Event::Report
                );
                let own = step && funcs.contains(&e.point.func);
                let nested = step && NESTED_FUNCS.contains(&e.point.func) && j > 0 && flags[j - 1];
                flags.push(own || nested);
            }
            let mut k = 0;
            while k < mine.len() {
                if !flags[k] {
                    k += 1;
                    continue;
                }
                let first = mine[k];
                while k + 1 < mine.len() && flags[k + 1] {
                    k += 1;
                }
                let last = mine[k];
                let _ = writeln!(
                    s,
                    r#"<rect class="{class}" data-cpu="{}" data-first-row="{first}" data-last-row="{last}" x="{}" y="{}" width="8" height="{}"><title>{what}</title></rect>"#,
                    rows[first].e.cpu,
                    x0(l) + 4,
                    y(first) - ROW_H + 4,
                    (last - first + 1) * ROW_H
                );
                k += 1;
            }
        }
    }
    s.push_str("</g>\n");
    // Grace periods and waits.
    s.push_str("<g class=\"grace-periods\">\n");
    for (i, r) in rows.iter().enumerate() {
        let e = r.e;
        if e.event == Event::Step && e.point.step == "start grace period" {
            let l = lane_of(e);
            let end = rows[i + 1..]
                .iter()
                .position(|q| {
                    lane_of(q.e) == l
                        && q.e.point.func == e.point.func
                        && q.e.point.step == "grace period ended"
                })
                .map(|k| i + 1 + k);
            let last = end.unwrap_or(rows.len() - 1);
            let _ = writeln!(
                s,
                r#"<rect class="gp" data-cpu="{}" data-func="{}" data-first-row="{i}" data-last-row="{last}" data-ended="{}" x="{}" y="{}" width="5" height="{}"><title>{}: grace period</title></rect>"#,
                e.cpu,
                esc(e.point.func),
                end.is_some(),
                x0(l) + LANE_W - 14,
                y(i) - ROW_H + 4,
                (last - i + 1) * ROW_H,
                esc(e.point.func)
            );
        }
    }
    for (i, r) in rows.iter().enumerate() {
        let e = r.e;
        if e.event != Event::Wait {
            continue;
        }
        let Some(to) = e.arg else { continue };
        let to = to as usize;
        let from = lane_of(e);
        let (fx, tx) = if col(to) > col(from) {
            (x0(from) + LANE_W - 8, x0(to) + 4)
        } else if col(to) < col(from) {
            (x0(from) + 4, x0(to) + LANE_W - 8)
        } else {
            continue;
        };
        let yy = y(i) - ROW_H / 2 + 2;
        let _ = writeln!(
            s,
            r#"<line class="wait" data-row="{i}" data-from="{}" data-to="{to}" x1="{fx}" y1="{yy}" x2="{tx}" y2="{yy}" marker-end="url(#arrow)"><title>{}: {} waits for cpu{to}</title></line>"#,
            e.cpu,
            esc(e.point.func),
            esc(e.point.step)
        );
    }
    s.push_str("</g>\n");
    // Frees across every lane.
    s.push_str("<g class=\"frees\">\n");
    for (i, r) in rows.iter().enumerate() {
        let e = r.e;
        if let Some((_, _, what)) = FREES
            .iter()
            .find(|(f, st, _)| e.point.func == *f && e.point.step == *st)
        {
            // The step's line comes before the step runs: the free is
            // done once the row is passed.
            let yy = y(i) + 4;
            let _ = writeln!(
                s,
                r#"<g class="freed-mark" data-row="{i}" data-what="{what}"><line class="freed" x1="{LEFT}" y1="{yy}" x2="{}" y2="{yy}"/><text class="freed-label" x="{}" y="{}">{what}</text></g>"#,
                width - LEFT,
                width - LEFT - 8 * what.len() - 6,
                yy - 2
            );
        }
    }
    s.push_str("</g>\n");
    // Steps.
    s.push_str("<g class=\"steps\">\n");
    for (i, r) in rows.iter().enumerate() {
        let l = lane_of(r.e);
        let full = row_line(r);
        let shown = full
            .strip_prefix(&format!("cpu{} ", r.e.cpu))
            .unwrap_or(&full)
            .to_string();
        let _ = writeln!(
            s,
            r#"<text class="step" data-row="{i}" data-cpu="{}" data-func="{}" data-step="{}" data-line="{}" x="{}" y="{}">{}<title>{}</title></text>"#,
            if l == usize::MAX {
                "teardown".to_string()
            } else {
                r.e.cpu.to_string()
            },
            esc(r.e.point.func),
            esc(r.e.point.step),
            esc(&full),
            x0(l) + 16,
            y(i),
            esc(&short(&shown)),
            esc(&full)
        );
    }
    s.push_str("</g>\n");
    // The violation.
    if let Some((i, r)) = rows
        .iter()
        .enumerate()
        .find(|(_, r)| r.e.event == Event::Report)
    {
        let l = lane_of(r.e);
        let kind = r.e.note.as_deref().unwrap_or("violation");
        let _ = writeln!(
            s,
            r#"<g class="violation-mark" data-row="{i}" data-kind="{}" data-cpu="{}"><rect class="violation" x="{}" y="{}" width="{}" height="{ROW_H}"/><text class="violation-kind" x="{}" y="{}">VIOLATION {}</text></g>"#,
            esc(kind),
            if l == usize::MAX {
                "teardown".to_string()
            } else {
                r.e.cpu.to_string()
            },
            x0(l) + 1,
            y(i) - ROW_H + 4,
            LANE_W - 6,
            x0(l) + 16,
            y(i) + ROW_H,
            esc(&short(kind))
        );
    }
    s.push_str("</svg>\n");
    s
}
