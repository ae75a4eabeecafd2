//! Timelines: an explored run's trace as one line per kernel step.
//!
//! ```text
//! cpu0 >> pin_user_pages_fast buf pages 0..1 [write, fast_only] as p
//! cpu0 gup_fast_pte_range: ptep_get_lockless -> 0x40000000
//!     cpu1 >> munmap buf pages 0..1
//!     cpu1 synchronize_rcu: wait for readers: waiting for cpu0
//! ```
//!
//! Each line names the CPU, the kernel function and the step, with the
//! step's value in hex where it has one; a CPU's lines are indented by its
//! number, so each CPU reads as a column. `>>` starts an operation of the
//! scenario and `<<` gives its result; `teardown >>` starts the teardown
//! after the CPUs (every process exits, then the leak check), and
//! `teardown: VIOLATION` is what it found. Waits say whom they wait for. The
//! timeline ends at the first violation; runs of identical lines collapse
//! into one with a count. The same trace always prints the same way.

use crate::ops::{OP_RESULT, OP_START, TEARDOWN};
use mmsim_facade::sched::{Event, TraceEntry};

/// One entry as text (without indentation).
pub fn line(e: &TraceEntry) -> String {
    let cpu = e.cpu;
    if std::ptr::eq(e.point, OP_START) {
        return format!("cpu{cpu} >> {}", e.note.as_deref().unwrap_or("?"));
    }
    if std::ptr::eq(e.point, OP_RESULT) {
        return format!("cpu{cpu} << {}", e.note.as_deref().unwrap_or("?"));
    }
    if std::ptr::eq(e.point, TEARDOWN) {
        let what = e.note.as_deref().unwrap_or("?");
        return match (e.event, e.arg) {
            (Event::Report, Some(p)) => format!("teardown: VIOLATION {what} at pfn {p:#x}"),
            (Event::Report, None) => format!("teardown: VIOLATION {what}"),
            _ => format!("teardown >> {what}"),
        };
    }
    let at = format!("cpu{cpu} {}: {}", e.point.func, e.point.step);
    match e.event {
        Event::Step => {
            let mut s = at;
            if let Some(a) = e.arg {
                s += &format!(" -> {a:#x}");
            }
            if let Some(n) = &e.note {
                s += &format!(" ({n})");
            }
            s
        }
        Event::Wait => match e.arg {
            Some(c) => format!("{at}: waiting for cpu{c}"),
            None => format!("{at}: waiting"),
        },
        Event::Resume => format!("{at}: resumed"),
        Event::Report => {
            let mut s = format!(
                "{at}: VIOLATION {}",
                e.note.as_deref().unwrap_or("(unnamed)")
            );
            if let Some(p) = e.arg {
                s += &format!(" at pfn {p:#x}");
            }
            s
        }
    }
}

/// The timeline of `trace` up to its first violation (all of it if
/// `to_end`), with runs of identical lines collapsed.
pub fn timeline(trace: &[TraceEntry], to_end: bool) -> Vec<String> {
    let end = if to_end {
        trace.len()
    } else {
        trace
            .iter()
            .position(|e| e.event == Event::Report)
            .map_or(trace.len(), |i| i + 1)
    };
    let mut out: Vec<String> = Vec::new();
    let mut last: Option<(String, usize)> = None;
    let flush = |out: &mut Vec<String>, l: Option<(String, usize)>| {
        if let Some((s, n)) = l {
            if n > 1 {
                out.push(format!("{s}  (x{n})"));
            } else {
                out.push(s);
            }
        }
    };
    for e in &trace[..end] {
        let column = if std::ptr::eq(e.point, TEARDOWN) {
            0
        } else {
            e.cpu as usize
        };
        let indent = "    ".repeat(column.min(8));
        let l = format!("{indent}{}", line(e));
        match &mut last {
            Some((s, n)) if *s == l => *n += 1,
            _ => {
                let prev = last.take();
                flush(&mut out, prev);
                last = Some((l, 1));
            }
        }
    }
    flush(&mut out, last);
    if end < trace.len() {
        out.push(format!(
            "... {} more step{} after the violation",
            trace.len() - end,
            if trace.len() - end == 1 { "" } else { "s" }
        ));
    }
    out
}
