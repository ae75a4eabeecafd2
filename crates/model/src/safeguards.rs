//! Safeguards: every protective step of every lockless protocol, by name.
//!
//! A safeguard is a step the kernel takes so that a lockless reader cannot
//! go wrong: a recheck, a grace period, an IPI. Each has a stable name
//! (`layer.what`), a default (what Linux v6.18 does) and one line on what it
//! protects. A run can switch any of them off to see what it protects
//! against, or switch on a fix that upstream does not have. Protocols ask
//! [`Safeguards::on`] at the step itself, so switching one off removes exactly
//! that step and nothing else.

use std::fmt;

/// One safeguard's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sg(u8);

/// What the registry knows about a safeguard.
#[derive(Debug)]
pub struct SafeguardInfo {
    /// Stable name, e.g. `sparse.usage_kfree_rcu`.
    pub name: &'static str,
    /// Whether Linux v6.18 has it.
    pub default: bool,
    /// What it protects, in one line.
    pub protects: &'static str,
}

macro_rules! safeguards {
    ($( $(#[$doc:meta])* $id:ident = $idx:expr, $name:expr, $default:expr, $protects:expr; )*) => {
        impl Sg {
            $( $(#[$doc])* pub const $id: Sg = Sg($idx); )*
        }
        /// Every safeguard in the model, in a stable order.
        pub static REGISTRY: &[SafeguardInfo] = &[
            $( SafeguardInfo { name: $name, default: $default, protects: $protects }, )*
        ];
    };
}

safeguards! {
    /// `section_deactivate()` frees `ms->usage` with `kfree_rcu`, so a
    /// `pfn_valid()` that loaded the pointer under `rcu_read_lock_sched()`
    /// may still read it (the fix for CVE-2023-52489).
    USAGE_KFREE_RCU = 0, "sparse.usage_kfree_rcu", true,
        "pfn_valid() readers of ms->usage against section_deactivate() freeing it (CVE-2023-52489)";
    /// GUP-fast rechecks the PTE after taking its reference
    /// (`gup_fast_pte_range()`).
    GUP_FAST_PTE_RECHECK = 1, "gup_fast.pte_recheck", true,
        "GUP-fast against the page being unmapped, freed and reused after its PTE was read";
    /// GUP-fast rechecks the PMD after taking its reference.
    GUP_FAST_PMD_RECHECK = 2, "gup_fast.pmd_recheck", true,
        "GUP-fast against the PTE table being detached (THP collapse, 70cbc3cc78a9)";
    /// `try_get_folio()` rechecks `page_folio()` after its reference.
    GUP_FAST_FOLIO_RECHECK = 3, "gup_fast.folio_recheck", true,
        "GUP-fast against a folio split between page_folio() and the reference";
    /// GUP-fast with `FOLL_PIN` checks `mm->write_protect_seq`.
    GUP_FAST_WRITE_PROTECT_SEQ = 4, "gup_fast.write_protect_seq", true,
        "FOLL_PIN GUP-fast against fork() write-protecting the mm (COW of pinned pages)";
    /// Page-table pages are freed after an RCU grace period
    /// (`MMU_GATHER_RCU_TABLE_FREE`).
    RCU_TABLE_FREE = 5, "mmu_gather.rcu_table_free", true,
        "GUP-fast's walk against page-table pages being freed (needed where TLB flushes are not IPIs)";
    /// The seed thread's fix: `synchronize_rcu()` in `try_remove_memory()`
    /// after the memory is known unused and before the memmap is freed.
    HOTPLUG_SYNCHRONIZE_RCU = 6, "hotplug.synchronize_rcu", false,
        "GUP-fast (any lockless walker) against hot-remove freeing the memmap (the seed's fix; not upstream)";
    /// The seed thread's fix for ZONE_DEVICE: `synchronize_rcu()` in
    /// `pageunmap_range()` after `mem_hotplug_begin()`.
    MEMREMAP_SYNCHRONIZE_RCU = 7, "memremap.synchronize_rcu", false,
        "GUP-fast against memunmap_pages() freeing the device memmap (the seed's fix; not upstream)";
    /// `percpu_down_write(&mem_hotplug_lock)` enters an `rcu_sync`, which
    /// waits for a grace period when it finds `GP_IDLE`.
    MEM_HOTPLUG_LOCK_RCU_SYNC = 8, "mem_hotplug_lock.rcu_sync", true,
        "incidentally: walkers that started before mem_hotplug_begin() when rcu_sync was idle";
    /// `lru_cache_disable()` calls `synchronize_rcu_expedited()`.
    LRU_DISABLE_SYNCHRONIZE_RCU = 9, "lru.disable_synchronize_rcu", true,
        "incidentally: walkers that stalled on an earlier block when a later block is offlined";
    /// `percpu_ref_kill()` switches to atomic mode through `call_rcu`.
    PERCPU_REF_KILL_RCU = 10, "percpu_ref.kill_rcu", true,
        "incidentally: walkers of device pages zapped before memunmap_pages() killed pgmap->ref";
    /// page_ext's `MEM_OFFLINE` notifier `offline_page_ext()` calls
    /// `synchronize_rcu()`. It runs only where a page_ext user is enabled:
    /// its default follows the `page_ext` configuration option (see
    /// [`Safeguards::for_config`]), off in v6.18's Kconfig defaults.
    PAGE_EXT_OFFLINE_SYNCHRONIZE_RCU = 11, "page_ext.offline_synchronize_rcu", false,
        "incidentally, where a page_ext user is on (page_owner, allocation profiling, page_table_check): walkers of the block being offlined; default = config page_ext";
    /// The seed thread's "separate change" for offlining: `synchronize_rcu()`
    /// in `offline_pages()` after the last `test_pages_isolated()`, before
    /// `__offline_isolated_pages()` and the poisoning.
    HOTPLUG_OFFLINE_SYNCHRONIZE_RCU = 12, "hotplug.offline_synchronize_rcu", false,
        "GUP-fast (any lockless walker) against offlining: grace period after isolation, before the memmap is poisoned or freed (the seed's fix, offline placement; not upstream)";
    /// `clear_node_memory_tier()`'s `synchronize_rcu()` (and
    /// `establish_demotion_targets()`'s), run by the memory-tier node
    /// notifier when offlining takes a node's last memory (`numa` only).
    MEMTIER_SYNCHRONIZE_RCU = 13, "memtier.synchronize_rcu", true,
        "incidentally, with numa: walkers of the block whose offlining empties its node (NODE_REMOVED_LAST_MEMORY)";
    /// `copy_present_ptes()` refuses to share a `PageAnonExclusive` page
    /// that may be DMA-pinned (`folio_needs_cow_for_dma()`: `MMF_HAS_PINNED`
    /// and `folio_maybe_dma_pinned()`) and copies it for the child at fork.
    FORK_COW_FOR_DMA = 14, "fork.cow_for_dma", true,
        "a page pinned before fork() against the parent's later write fault replacing it (the pin would point at the child's page)";
    /// `collapse_huge_page()` calls `tlb_remove_table_sync_one()` after
    /// `pmdp_collapse_flush()`: an IPI every CPU must take, so a GUP-fast
    /// walker that loaded the old PMD has left its IRQs-off section
    /// (Linux 2ba99c5e0881).
    KHUGEPAGED_IPI_SYNC = 15, "khugepaged.ipi_sync", true,
        "GUP-fast against khugepaged's collapse where the TLB flush sends no IPI (the old PTE table, its pages; 2ba99c5e0881)";
    /// `__collapse_huge_page_isolate()` refuses a page with references
    /// beyond its mappings (`folio_expected_ref_count()`).
    KHUGEPAGED_REFCOUNT_CHECK = 16, "khugepaged.refcount_check", true,
        "a pinned (or otherwise referenced) page against khugepaged copying it into a new THP and dropping it";
    /// `retract_page_tables()` and `collapse_pte_mapped_thp()` free the
    /// detached PTE table with `pte_free_defer()` (`call_rcu`, v6.5,
    /// "mm/pgtable: add pte_free_defer() for use by khugepaged"); off: a
    /// plain `pte_free()` right after `pmdp_collapse_flush()`.
    KHUGEPAGED_PTE_FREE_DEFER = 17, "khugepaged.pte_free_defer", true,
        "GUP-fast (and RCU page-table walkers) against the PTE table that a file/shmem collapse retracts, where the TLB flush sends no IPI";
    /// `ksm_memory_callback(MEM_GOING_OFFLINE)` sets `KSM_RUN_OFFLINE`
    /// under `ksm_thread_mutex` (and `MEM_OFFLINE` clears it): ksmd
    /// finishes its batch first and then waits in `wait_while_offlining()`.
    KSM_RUN_OFFLINE = 18, "ksm.run_offline", true,
        "ksmd's ksm_get_folio() (kpfn read without IRQs off or RCU) against offlining and removal of the memory a stable node points into";
    /// `ksm_memory_callback(MEM_OFFLINE)` → `ksm_check_stable_tree()`
    /// removes the stable nodes whose `kpfn` is in the offlined range.
    KSM_OFFLINE_PRUNE = 19, "ksm.offline_prune", true,
        "a stale stable node (its KSM folio freed) against ksmd following its kpfn into memory that was offlined and removed";
    /// `hugetlb_vmemmap_optimize_folio()` (and `_restore_folio()`) wait for
    /// a grace period after `static_branch_inc()`, before remapping the
    /// vmemmap (`VMEMMAP_SYNCHRONIZE_RCU`, Linux bd225530a4c7).
    HUGETLB_VMEMMAP_SYNCHRONIZE_RCU = 20, "hugetlb_vmemmap.synchronize_rcu", true,
        "a speculative folio_try_get() (page_count_writable, then atomic_add_unless) against HVO remapping the struct page it writes read-only";
}

/// A set of switches, one per registered safeguard.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Safeguards {
    bits: u64,
}

impl Default for Safeguards {
    /// Linux v6.18: every safeguard at its default.
    fn default() -> Self {
        let mut s = Safeguards { bits: 0 };
        for (i, info) in REGISTRY.iter().enumerate() {
            if info.default {
                s.bits |= 1 << i;
            }
        }
        s
    }
}

impl Safeguards {
    /// v6.18's safeguards for a kernel built with `cfg`: the defaults, with
    /// `page_ext.offline_synchronize_rcu` following `cfg.page_ext` (that
    /// grace period exists exactly where a page_ext user is enabled).
    pub fn for_config(cfg: &crate::config::KernelConfig) -> Safeguards {
        let mut s = Safeguards::default();
        s.set(Sg::PAGE_EXT_OFFLINE_SYNCHRONIZE_RCU, cfg.page_ext);
        s
    }

    /// Whether the step runs.
    #[inline]
    pub fn on(&self, sg: Sg) -> bool {
        self.bits & (1 << sg.0) != 0
    }

    /// Switches one safeguard.
    pub fn set(&mut self, sg: Sg, on: bool) {
        if on {
            self.bits |= 1 << sg.0;
        } else {
            self.bits &= !(1 << sg.0);
        }
    }

    /// Switches one safeguard by name; `Err` names the unknown safeguard.
    pub fn set_by_name(&mut self, name: &str, on: bool) -> Result<(), String> {
        let i = lookup(name).ok_or_else(|| format!("unknown safeguard `{name}`"))?;
        self.set(Sg(i as u8), on);
        Ok(())
    }

    /// Every safeguard with its state, in registry order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static SafeguardInfo, bool)> + '_ {
        REGISTRY
            .iter()
            .enumerate()
            .map(|(i, info)| (info, self.bits & (1 << i) != 0))
    }

    /// The safeguards that differ from v6.18's defaults, as `name=on|off`.
    pub fn overrides(&self) -> Vec<String> {
        self.overrides_from(&Safeguards::default())
    }

    /// The safeguards that differ from `d`, as `name=on|off`.
    pub fn overrides_from(&self, d: &Safeguards) -> Vec<String> {
        self.iter()
            .zip(d.iter())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((info, a), _)| format!("{}={}", info.name, if a { "on" } else { "off" }))
            .collect()
    }
}

/// The registry index of a safeguard name.
pub fn lookup(name: &str) -> Option<usize> {
    REGISTRY.iter().position(|i| i.name == name)
}

impl fmt::Debug for Safeguards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(i, on)| (i.name, on)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_v6_18_and_names_are_unique() {
        let s = Safeguards::default();
        assert!(s.on(Sg::USAGE_KFREE_RCU));
        assert!(s.on(Sg::GUP_FAST_PTE_RECHECK));
        assert!(s.on(Sg::RCU_TABLE_FREE));
        let mut names: Vec<_> = REGISTRY.iter().map(|i| i.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
        assert!(REGISTRY.len() <= 64);
    }

    #[test]
    fn set_by_name_round_trips() {
        let mut s = Safeguards::default();
        s.set_by_name("sparse.usage_kfree_rcu", false).unwrap();
        assert!(!s.on(Sg::USAGE_KFREE_RCU));
        assert_eq!(
            s.overrides(),
            vec!["sparse.usage_kfree_rcu=off".to_string()]
        );
        assert!(s.set_by_name("no.such", true).is_err());
    }
}
