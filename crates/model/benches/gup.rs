//! The cost of GUP-fast in the model: `pin_user_pages_fast()` and
//! `get_user_pages_fast()` per 4 KiB page (with the unpin or put that
//! undoes each call), on 2 MiB THP folios, and the speculative reference
//! at its heart, `folio_try_get()` (with the `folio_put()` that drops it).
//!
//! ```text
//! cargo bench -p mmsim-model --bench gup -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Throughput is in pages: criterion's "elem/s" is pages per second.
//! `mmsim bench` measures the same walk side by side with the real kernel
//! (io_uring buffer registration); these benches are for tracking the
//! model's own cost from one change to the next.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmsim_model::kernel::cpu::Cpu;
use mmsim_model::mm::gup::{
    FOLL_LONGTERM, FOLL_WRITE, get_user_pages_fast, pin_user_pages_fast, put_user_pages,
    unpin_user_pages,
};
use mmsim_model::mm::memory::access_user;
use mmsim_model::mm::mm_types::page_folio;
use mmsim_model::mm::mmap::{BackingKind, MmStruct, MmapArgs, Prot, do_mmap, mm_alloc, use_mm};
use mmsim_model::mm::page_ref::{folio_put, folio_try_get};
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Machine, MachineConfig, Pfn, RangeConfig, RangeKind, VirtAddr};
use std::hint::black_box;
use std::sync::Arc;

/// Pages per GUP call: 4 MiB, a few PTE tables' worth.
const NR_PAGES: u64 = 1024;

struct Buf {
    m: Arc<Machine>,
    mm: Arc<MmStruct>,
    addr: VirtAddr,
}

fn buffer(thp: bool) -> Buf {
    let m = Machine::new(MachineConfig {
        nr_cpus: 1,
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 128 << 20,
            node: 0,
        }],
        ..Default::default()
    })
    .unwrap();
    let cpu = m.boot_cpu();
    let mm = mm_alloc(&cpu).unwrap();
    let len = NR_PAGES * PAGE_SIZE;
    let addr = do_mmap(
        &cpu,
        &mm,
        &MmapArgs {
            addr: None,
            len,
            prot: Prot::ReadWrite,
            backing: BackingKind::Anon,
            thp,
        },
    )
    .unwrap();
    for off in (0..len).step_by(PAGE_SIZE as usize) {
        access_user(&cpu, &mm, VirtAddr::new(addr.as_u64() + off), Some(off)).unwrap();
    }
    drop(cpu);
    Buf { m, mm, addr }
}

fn cpu0(b: &Buf) -> Cpu {
    let cpu = b.m.cpu(0);
    use_mm(&cpu, &b.mm);
    cpu
}

fn gup_fast(c: &mut Criterion) {
    let mut g = c.benchmark_group("GUP-fast");
    g.throughput(Throughput::Elements(NR_PAGES));
    for (name, thp) in [("4 KiB folios", false), ("2 MiB THP", true)] {
        let b = buffer(thp);
        let cpu = cpu0(&b);
        let mut pages: Vec<Pfn> = Vec::with_capacity(NR_PAGES as usize);
        g.bench_function(
            format!("pin_user_pages_fast(LONGTERM)+unpin, {name}"),
            |bn| {
                bn.iter(|| {
                    pages.clear();
                    let n = pin_user_pages_fast(
                        &cpu,
                        &b.mm,
                        b.addr,
                        NR_PAGES,
                        FOLL_WRITE | FOLL_LONGTERM,
                        &mut pages,
                    )
                    .unwrap();
                    assert_eq!(n as u64, NR_PAGES);
                    unpin_user_pages(&cpu, black_box(&pages));
                })
            },
        );
        g.bench_function(format!("get_user_pages_fast+put, {name}"), |bn| {
            bn.iter(|| {
                pages.clear();
                let n = get_user_pages_fast(&cpu, &b.mm, b.addr, NR_PAGES, FOLL_WRITE, &mut pages)
                    .unwrap();
                assert_eq!(n as u64, NR_PAGES);
                put_user_pages(&cpu, black_box(&pages));
            })
        });
        assert!(b.m.detect.violations().is_empty());
    }
    g.finish();
}

fn folio_refs(c: &mut Criterion) {
    let b = buffer(false);
    let cpu = cpu0(&b);
    // A mapped anonymous page: its count is at least one, so the
    // speculative reference always succeeds and the put never frees.
    let mut pages = Vec::new();
    get_user_pages_fast(&cpu, &b.mm, b.addr, 1, 0, &mut pages).unwrap();
    let page = b.m.sparse.pfn_to_page(pages[0]);
    let mut g = c.benchmark_group("folio refcount");
    g.bench_function("folio_try_get+folio_put", |bn| {
        bn.iter(|| {
            let folio = page_folio(&cpu, black_box(page));
            assert!(folio_try_get(&cpu, folio));
            folio_put(&cpu, folio);
        })
    });
    g.finish();
    put_user_pages(&cpu, &pages);
}

criterion_group!(benches, gup_fast, folio_refs);
criterion_main!(benches);
