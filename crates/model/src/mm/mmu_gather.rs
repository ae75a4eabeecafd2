//! Batching unmaps: TLB flushes, then page and page-table frees.
//!
//! Kernel: `mm/mmu_gather.c`, `include/asm-generic/tlb.h`,
//! `arch/x86/mm/tlb.c` (`flush_tlb_mm_range`).
//!
//! `zap_pte_range()` clears PTEs and queues each page's mapping reference
//! here; [`tlb_flush_mmu`] flushes the TLB and only then drops the
//! references, so no CPU can still reach a freed page through a stale TLB
//! entry.
//!
//! What the flush waits for depends on the machine's [`Arch`]: with IPIs
//! (x86 on bare metal) the flusher interrupts every other CPU of the mm and
//! waits until each has handled it — a CPU with IRQs off, such as one in
//! GUP-fast, handles it only when it enables them, so the flush waits for
//! the walker. With broadcast invalidation (arm64 TLBI, x86 INVLPGB,
//! paravirt flushes that skip preempted vCPUs) nobody is interrupted and
//! nobody is waited for.
//!
//! Page-table pages are freed by [`tlb_remove_table`]. With
//! `MMU_GATHER_RCU_TABLE_FREE` (x86 selects it unconditionally since v6.15;
//! safeguard `mmu_gather.rcu_table_free`) they are freed after an RCU grace
//! period, which waits for GUP-fast's IRQ-disabled walk on every
//! architecture. Without it they are freed right after the TLB flush, which
//! waits for GUP-fast only where the flush is an IPI.

use crate::kernel::cpu::Cpu;
use crate::kernel::rcupdate::{call_rcu, wait_for_irqs_enabled};
use crate::machine::Arch;
use crate::mm::mm_types::pgty;
use crate::mm::mmap::MmStruct;
use crate::mm::page_alloc::__free_pages;
use crate::mm::page_ref::folio_put;
use crate::safeguards::Sg;
use crate::types::Pfn;
use mmsim_facade::point;

/// `struct mmu_gather`.
pub struct MmuGather<'a> {
    mm: &'a MmStruct,
    folios: Vec<Pfn>,
    tables: Vec<Pfn>,
    /// Whether entries were changed that a TLB may cache.
    pub need_flush: bool,
}

impl MmuGather<'_> {
    /// `__tlb_remove_folio_pages()`: drop this reference after the flush.
    pub fn remove_folio(&mut self, folio: Pfn) {
        self.folios.push(folio);
        self.need_flush = true;
    }
}

/// Kernel: `tlb_gather_mmu()`.
pub fn tlb_gather_mmu<'a>(_cpu: &Cpu, mm: &'a MmStruct) -> MmuGather<'a> {
    MmuGather {
        mm,
        folios: Vec::new(),
        tables: Vec::new(),
        need_flush: false,
    }
}

/// Kernel: `flush_tlb_mm_range()`: on `ipi`, waits until every other CPU
/// of the mm has had IRQs enabled since (handled the flush IPI).
pub fn flush_tlb_mm_range(cpu: &Cpu, mm: &MmStruct) {
    cpu.point(point!("flush_tlb_mm_range", "flush"));
    match cpu.m.arch {
        Arch::Ipi => wait_for_irqs_enabled(
            cpu,
            &|i| mm.cpu_in_mask(i),
            point!("flush_tlb_mm_range", "wait for IPI ack from cpu"),
        ),
        Arch::Broadcast => {}
    }
}

/// Kernel: `arch/x86/mm/tlb.c arch_tlbbatch_flush()`: one flush for every
/// CPU of `cpumask` (`flush_tlb_multi()`), owed by deferred unmaps (see
/// [`crate::mm::migrate::try_to_unmap_flush`]); on `ipi`, waits until each
/// of them has had IRQs enabled since (handled the IPI). With INVLPGB the
/// flush is a broadcast, waited for by nobody.
pub fn arch_tlbbatch_flush(cpu: &Cpu, cpumask: u64) {
    cpu.point(point!("arch_tlbbatch_flush", "flush"));
    match cpu.m.arch {
        Arch::Ipi => wait_for_irqs_enabled(
            cpu,
            &|i| cpumask & (1 << i) != 0,
            point!("arch_tlbbatch_flush", "wait for IPI ack from cpu"),
        ),
        Arch::Broadcast => {}
    }
}

/// Kernel: `tlb_remove_table_sync_one()`: an IPI to every CPU, waited for.
pub fn tlb_remove_table_sync_one(cpu: &Cpu) {
    cpu.point(point!("tlb_remove_table_sync_one", "smp_call_function"));
    wait_for_irqs_enabled(
        cpu,
        &|_| true,
        point!("tlb_remove_table_sync_one", "wait for IPI ack from cpu"),
    );
}

/// Kernel: `tlb_remove_table()`: a page-table page to free once no walker
/// can be in it.
pub fn tlb_remove_table(_cpu: &Cpu, tlb: &mut MmuGather<'_>, table: Pfn) {
    tlb.tables.push(table);
    tlb.need_flush = true;
}

fn free_table_page(cpu: &Cpu, table: Pfn) {
    // pagetable_dtor_free()
    let p = cpu.m.sparse.pfn_to_page(table);
    p.set_page_type(cpu, pgty::NONE);
    __free_pages(cpu, p, 0);
}

/// Kernel: `tlb_flush_mmu()`: flush, then free what was queued.
pub fn tlb_flush_mmu(cpu: &Cpu, tlb: &mut MmuGather<'_>) {
    if !tlb.need_flush {
        return;
    }
    flush_tlb_mm_range(cpu, tlb.mm);
    tlb.need_flush = false;
    // tlb_batch_pages_flush(): the mapping references go.
    for f in tlb.folios.drain(..) {
        cpu.point_arg(point!("tlb_batch_pages_flush", "folio_put"), f.as_u64());
        let page = cpu.m.sparse.pfn_to_page(f);
        folio_put(cpu, crate::mm::mm_types::Folio::from_head(page));
    }
    // tlb_table_flush()
    if tlb.tables.is_empty() {
        return;
    }
    let tables: Vec<Pfn> = std::mem::take(&mut tlb.tables);
    if cpu.m.sg.on(Sg::RCU_TABLE_FREE) {
        cpu.point(point!("tlb_table_flush", "call_rcu(tlb_remove_table_rcu)"));
        call_rcu(cpu, "tlb_remove_table_rcu", move |cpu| {
            for t in tables {
                free_table_page(cpu, t);
            }
        });
    } else {
        for t in tables {
            cpu.point_arg(point!("tlb_table_flush", "free page table"), t.as_u64());
            free_table_page(cpu, t);
        }
    }
}

/// Kernel: `tlb_finish_mmu()`.
pub fn tlb_finish_mmu(cpu: &Cpu, mut tlb: MmuGather<'_>) {
    tlb_flush_mmu(cpu, &mut tlb);
}
