//! `mmsim gup-test`: the kernel selftest `tools/testing/selftests/mm/gup_test.c`
//! run against the model.
//!
//! Same flags and output lines as the selftest (`PIN_FAST_BENCHMARK: Time:
//! get:N put:N us`): a buffer of `-m` MiB is mapped and faulted in from "user
//! space", then each of `-j` threads (model CPUs) gets or pins it `-n` pages
//! per call and puts or unpins it all, `-r` times, timing both halves as
//! `mm/gup_test.c`'s ioctl does.

use clap::Args;
use mmsim_model::mm::gup::{
    FOLL_LONGTERM, FOLL_WRITE, get_user_pages, get_user_pages_fast, pin_user_pages,
    pin_user_pages_fast, put_user_pages, unpin_user_pages,
};
use mmsim_model::mm::memory::access_user;
use mmsim_model::mm::mmap::{BackingKind, MmapArgs, Prot, do_mmap, exit_mmap, mm_alloc, use_mm};
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Machine, MachineConfig, RangeConfig, RangeKind, VirtAddr};
use std::time::Instant;

/// `mmsim gup-test` arguments (the selftest's).
#[derive(Args, Debug)]
pub struct GupTestArgs {
    /// GUP_FAST_BENCHMARK: get_user_pages_fast (the default).
    #[arg(short = 'u')]
    pub gup_fast: bool,
    /// PIN_FAST_BENCHMARK: pin_user_pages_fast.
    #[arg(short = 'a')]
    pub pin_fast: bool,
    /// PIN_LONGTERM_BENCHMARK: pin_user_pages with FOLL_LONGTERM (slow path).
    #[arg(short = 'L')]
    pub pin_longterm: bool,
    /// GUP_BASIC_TEST: get_user_pages (slow path).
    #[arg(short = 'g')]
    pub gup_basic: bool,
    /// Buffer size in MiB.
    #[arg(short = 'm', default_value_t = 128)]
    pub mb: u64,
    /// Pages per call.
    #[arg(short = 'n', default_value_t = 1)]
    pub nr_pages_per_call: u64,
    /// Repeats.
    #[arg(short = 'r', default_value_t = 1)]
    pub repeats: u32,
    /// Threads (model CPUs), all on the same buffer.
    #[arg(short = 'j', default_value_t = 1)]
    pub threads: u32,
    /// THP on (MADV_HUGEPAGE).
    #[arg(short = 't')]
    pub thp: bool,
    /// THP off (the model's default).
    #[arg(short = 'T')]
    pub no_thp: bool,
    /// Write (FOLL_WRITE; the selftest's default).
    #[arg(short = 'w')]
    pub write: bool,
    /// Read only (no FOLL_WRITE).
    #[arg(short = 'W')]
    pub no_write: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cmd {
    GupFast,
    PinFast,
    PinLongterm,
    GupBasic,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::GupFast => "GUP_FAST_BENCHMARK",
            Cmd::PinFast => "PIN_FAST_BENCHMARK",
            Cmd::PinLongterm => "PIN_LONGTERM_BENCHMARK",
            Cmd::GupBasic => "GUP_BASIC_TEST",
        }
    }
}

/// One timed round.
#[derive(Debug, Clone)]
pub struct Round {
    /// Microseconds spent getting/pinning.
    pub get_us: u128,
    /// Microseconds spent putting/unpinning.
    pub put_us: u128,
    /// Bytes covered.
    pub size: u64,
    /// Nanoseconds per page for the get half.
    pub get_ns_per_page: f64,
}

/// The largest buffer, in MiB.
const MAX_MB: u64 = 16384;
/// The most threads (model CPUs).
const MAX_THREADS: u32 = 64;

/// Refuses what the selftest would clamp or ignore, naming the flag and
/// its range.
fn check_args(a: &GupTestArgs) -> Result<(), String> {
    let cmds = [a.gup_fast, a.pin_fast, a.pin_longterm, a.gup_basic];
    if cmds.iter().filter(|&&c| c).count() > 1 {
        return Err("-u, -a, -L and -g each name the test to run: give one".into());
    }
    if a.thp && a.no_thp {
        return Err("-t (THP on) and -T (THP off): give one".into());
    }
    if a.write && a.no_write {
        return Err("-w (write) and -W (read only): give one".into());
    }
    if !(1..=MAX_MB).contains(&a.mb) {
        return Err(format!("-m {}: the buffer is 1 to {MAX_MB} MiB", a.mb));
    }
    let pages = (a.mb << 20) / PAGE_SIZE;
    if !(1..=pages).contains(&a.nr_pages_per_call) {
        return Err(format!(
            "-n {}: pages per call are 1 to {pages}, the pages of the -m {} MiB buffer",
            a.nr_pages_per_call, a.mb
        ));
    }
    if a.repeats == 0 {
        return Err("-r 0: at least one repeat".into());
    }
    if !(1..=MAX_THREADS).contains(&a.threads) {
        return Err(format!(
            "-j {}: 1 to {MAX_THREADS} threads (model CPUs)",
            a.threads
        ));
    }
    Ok(())
}

/// Runs the benchmark; returns the command name and the rounds.
pub fn bench(a: &GupTestArgs) -> Result<(&'static str, Vec<Round>, bool), String> {
    let cmd = if a.pin_fast {
        Cmd::PinFast
    } else if a.pin_longterm {
        Cmd::PinLongterm
    } else if a.gup_basic {
        Cmd::GupBasic
    } else {
        Cmd::GupFast
    };
    check_args(a)?;
    let size = a.mb << 20;
    let boot = (size + (64 << 20)).div_ceil(128 << 20) * (128 << 20);
    let m = Machine::new(MachineConfig {
        nr_cpus: a.threads,
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: boot,
            node: 0,
        }],
        ..Default::default()
    })?;
    let boot_cpu = m.boot_cpu();
    let mm = mm_alloc(&boot_cpu).map_err(|e| e.to_string())?;
    let thp = a.thp && !a.no_thp;
    let addr = do_mmap(
        &boot_cpu,
        &mm,
        &MmapArgs {
            addr: None,
            len: size,
            prot: Prot::ReadWrite,
            backing: BackingKind::Anon,
            thp,
        },
    )
    .map_err(|e| e.to_string())?;
    // Fault them in here, from user space.
    let mut off = 0;
    while off < size {
        access_user(&boot_cpu, &mm, VirtAddr::new(addr.as_u64() + off), Some(0))
            .map_err(|e| e.to_string())?;
        off += PAGE_SIZE;
    }
    let write = !a.no_write;
    let flags = if write { FOLL_WRITE } else { 0 };
    let nr_pages = size / PAGE_SIZE;
    let mut handles = Vec::new();
    for t in 0..a.threads {
        let cpu = m.cpu(t);
        let mm = mm.clone();
        let (repeats, per_call) = (a.repeats, a.nr_pages_per_call);
        handles.push(std::thread::spawn(move || {
            use_mm(&cpu, &mm);
            let mut rounds = Vec::new();
            let mut pages = Vec::with_capacity(nr_pages as usize);
            for _ in 0..repeats {
                pages.clear();
                let t0 = Instant::now();
                let mut i = 0;
                while i < nr_pages {
                    let n = per_call.min(nr_pages - i);
                    let start = VirtAddr::new(addr.as_u64() + i * PAGE_SIZE);
                    let r = match cmd {
                        Cmd::GupFast => get_user_pages_fast(&cpu, &mm, start, n, flags, &mut pages),
                        Cmd::PinFast => pin_user_pages_fast(&cpu, &mm, start, n, flags, &mut pages),
                        Cmd::PinLongterm => {
                            pin_user_pages(&cpu, &mm, start, n, flags | FOLL_LONGTERM, &mut pages)
                        }
                        Cmd::GupBasic => get_user_pages(&cpu, &mm, start, n, flags, &mut pages),
                    };
                    match r {
                        Ok(got) if got > 0 => i += got as u64,
                        _ => break,
                    }
                }
                let get = t0.elapsed();
                let t1 = Instant::now();
                match cmd {
                    Cmd::GupFast | Cmd::GupBasic => put_user_pages(&cpu, &pages),
                    Cmd::PinFast | Cmd::PinLongterm => unpin_user_pages(&cpu, &pages),
                }
                let put = t1.elapsed();
                rounds.push(Round {
                    get_us: get.as_micros(),
                    put_us: put.as_micros(),
                    size: pages.len() as u64 * PAGE_SIZE,
                    get_ns_per_page: get.as_nanos() as f64 / pages.len().max(1) as f64,
                });
            }
            rounds
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().map_err(|_| "a benchmark thread panicked")?);
    }
    exit_mmap(&boot_cpu, &mm);
    drop(boot_cpu);
    let clean = m.check_leaks() == 0 && m.detect.violations().is_empty();
    Ok((cmd.name(), all, clean))
}

/// Runs `mmsim gup-test`.
pub fn run(a: &GupTestArgs) -> u8 {
    let (name, rounds, clean) = match bench(a) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mmsim gup-test: {e}");
            return 2;
        }
    };
    let size = a.mb << 20;
    if a.json {
        let rs: Vec<_> = rounds
            .iter()
            .map(|r| serde_json::json!({"get_us": r.get_us, "put_us": r.put_us, "size": r.size, "get_ns_per_page": r.get_ns_per_page}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"command": name, "size": size, "nr_pages_per_call": a.nr_pages_per_call,
                "threads": a.threads, "thp": a.thp && !a.no_thp, "rounds": rs, "clean": clean})
        );
    } else {
        for r in &rounds {
            print!("{name}: Time: get:{} put:{} us", r.get_us, r.put_us);
            if r.size != size {
                print!(", truncated (size: {})", r.size);
            }
            println!();
        }
    }
    if clean { 0 } else { 1 }
}
