//! The kernel configuration a run models.
//!
//! A verdict about a lockless protocol holds for a kernel *configuration*,
//! not for "Linux": the same sequence is a silent use-after-free on one
//! build, an oops at a poisoned `struct page` on another, and closed by an
//! incidental grace period on a third. Each option here is one such switch,
//! named as scenario files and `--config NAME=on|off` name it, with its
//! v6.18 Kconfig default and what it changes in the model.
//!
//! * `debug_vm` (`CONFIG_DEBUG_VM`, default n): the `VM_WARN_ON_ONCE()`
//!   checks on the modelled paths (`!pfn_valid()` in
//!   `gup_fast_pte_range()`), and page-init poisoning (`page_init_poison()`,
//!   on by default under DEBUG_VM unless `vm_debug=-`): `offline_pages()`
//!   ends with `remove_pfn_range_from_zone()`, which fills the offlined
//!   memmap with `0xff`, and `pageunmap_range()` does the same for device
//!   memory. A walker that resumes after that reads a `compound_head` of all
//!   ones and oopses *before* any memmap is freed.
//! * `numa` (`CONFIG_NUMA`, default y on every distribution kernel): nodes,
//!   their memory tiers and the node notifiers. Offlining the block that
//!   empties a node sends `NODE_REMOVED_LAST_MEMORY`, and
//!   `memtier_hotplug_callback()` → `clear_node_memory_tier()` waits for a
//!   grace period before `MEM_OFFLINE` and the poisoning; with more than
//!   one memory node, offlining migrates pages to *other* nodes
//!   (`do_migrate_range()` clears the source node from the target mask).
//!   Off, every range is on node 0 and there are no memory tiers.
//! * `page_ext` (default n in v6.18's Kconfig): whether any page_ext user is
//!   enabled: `page_owner=on`; memory allocation profiling
//!   (`CONFIG_MEM_ALLOC_PROFILING` with its support on, the default under
//!   `CONFIG_MEM_ALLOC_PROFILING_ENABLED_BY_DEFAULT`, unless in compressed
//!   mode); `page_table_check` when enforced or `page_table_check=on`. Then
//!   page_ext's `MEM_OFFLINE` notifier `offline_page_ext()` waits for a
//!   grace period before the poisoning. The safeguard
//!   `page_ext.offline_synchronize_rcu` *is* that grace period: its default
//!   follows this option (see [`crate::safeguards::Safeguards::for_config`]),
//!   and switching it alone says "as if some page_ext user were enabled"
//!   (on) or "page_ext without its grace period" (off).
//! * `hvo` (`CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP_DEFAULT_ON`, default n;
//!   at run time `hugetlb_free_vmemmap=on` or the
//!   `vm.hugetlb_optimize_vmemmap` sysctl): HugeTLB Vmemmap Optimization.
//!   `hugetlb_vmemmap_optimize_folio()` then remaps the tail struct pages
//!   of each new HugeTLB folio read-only onto its first vmemmap page, after
//!   turning `hugetlb_optimize_vmemmap_key` on (which makes
//!   `page_count_writable()` check for fake heads) and waiting for a grace
//!   period. Off, HugeTLB folios keep their whole memmap and the key stays
//!   off.

use std::fmt;

/// One configuration option's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigOpt {
    /// `CONFIG_DEBUG_VM`: VM_WARN checks and page-init poisoning.
    DebugVm,
    /// `CONFIG_NUMA`: nodes and memory tiers.
    Numa,
    /// A page_ext user is enabled (page_owner, allocation profiling,
    /// page_table_check).
    PageExt,
    /// HugeTLB Vmemmap Optimization is enabled.
    Hvo,
}

/// What the registry knows about an option.
#[derive(Debug)]
pub struct ConfigInfo {
    /// Which option.
    pub opt: ConfigOpt,
    /// Stable name (`[config]` key, `--config NAME=on|off`).
    pub name: &'static str,
    /// v6.18's Kconfig default.
    pub default: bool,
    /// What it changes, in one line.
    pub changes: &'static str,
}

/// Every option, in a stable order.
pub static REGISTRY: &[ConfigInfo] = &[
    ConfigInfo {
        opt: ConfigOpt::DebugVm,
        name: "debug_vm",
        default: false,
        changes: "CONFIG_DEBUG_VM: VM_WARN_ON_ONCE checks (pfn_valid in GUP-fast) and page-init poisoning of offlined/unmapped memmaps",
    },
    ConfigInfo {
        opt: ConfigOpt::Numa,
        name: "numa",
        default: true,
        changes: "CONFIG_NUMA: nodes, memory tiers and node notifiers (memtier grace period when a node's last memory goes; migration to other nodes)",
    },
    ConfigInfo {
        opt: ConfigOpt::PageExt,
        name: "page_ext",
        default: false,
        changes: "a page_ext user (page_owner=on, allocation profiling, page_table_check): offline_page_ext()'s grace period at MEM_OFFLINE",
    },
    ConfigInfo {
        opt: ConfigOpt::Hvo,
        name: "hvo",
        default: false,
        changes: "HugeTLB Vmemmap Optimization (HUGETLB_PAGE_OPTIMIZE_VMEMMAP_DEFAULT_ON / hugetlb_free_vmemmap=on): HugeTLB folios' tail struct pages remapped read-only, page_count_writable()'s fake-head check on",
    },
];

/// A kernel configuration: one value per [`ConfigOpt`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelConfig {
    /// `CONFIG_DEBUG_VM`.
    pub debug_vm: bool,
    /// `CONFIG_NUMA`.
    pub numa: bool,
    /// A page_ext user is enabled.
    pub page_ext: bool,
    /// HugeTLB Vmemmap Optimization is enabled.
    pub hvo: bool,
}

impl Default for KernelConfig {
    /// v6.18's Kconfig defaults.
    fn default() -> Self {
        KernelConfig {
            debug_vm: false,
            numa: true,
            page_ext: false,
            hvo: false,
        }
    }
}

/// The registry entry of an option name.
pub fn lookup(name: &str) -> Option<&'static ConfigInfo> {
    REGISTRY.iter().find(|i| i.name == name)
}

impl KernelConfig {
    /// The value of one option.
    pub fn get(&self, o: ConfigOpt) -> bool {
        match o {
            ConfigOpt::DebugVm => self.debug_vm,
            ConfigOpt::Numa => self.numa,
            ConfigOpt::PageExt => self.page_ext,
            ConfigOpt::Hvo => self.hvo,
        }
    }

    /// Sets one option.
    pub fn set(&mut self, o: ConfigOpt, on: bool) {
        match o {
            ConfigOpt::DebugVm => self.debug_vm = on,
            ConfigOpt::Numa => self.numa = on,
            ConfigOpt::PageExt => self.page_ext = on,
            ConfigOpt::Hvo => self.hvo = on,
        }
    }

    /// Sets one option by name; `Err` names the unknown option.
    pub fn set_by_name(&mut self, name: &str, on: bool) -> Result<(), String> {
        let info = lookup(name).ok_or_else(|| {
            format!(
                "unknown configuration option `{name}` (known: {})",
                REGISTRY
                    .iter()
                    .map(|i| i.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        self.set(info.opt, on);
        Ok(())
    }

    /// Every option with its value, in registry order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static ConfigInfo, bool)> + '_ {
        REGISTRY.iter().map(|i| (i, self.get(i.opt)))
    }

    /// The options that differ from v6.18's defaults, as `name=on|off`.
    pub fn overrides(&self) -> Vec<String> {
        self.iter()
            .filter(|(i, v)| *v != i.default)
            .map(|(i, v)| format!("{}={}", i.name, if v { "on" } else { "off" }))
            .collect()
    }

    /// A short label: `v6.18 defaults` or the overrides.
    pub fn label(&self) -> String {
        let o = self.overrides();
        if o.is_empty() {
            "v6.18 defaults (debug_vm=off numa=on page_ext=off hvo=off)".into()
        } else {
            o.join(" ")
        }
    }
}

impl fmt::Debug for KernelConfig {
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
    fn defaults_are_v6_18_kconfig() {
        let c = KernelConfig::default();
        assert!(!c.debug_vm && c.numa && !c.page_ext && !c.hvo);
        assert!(c.overrides().is_empty());
        for i in REGISTRY {
            assert_eq!(c.get(i.opt), i.default, "{}", i.name);
        }
    }

    #[test]
    fn set_by_name_round_trips() {
        let mut c = KernelConfig::default();
        c.set_by_name("debug_vm", true).unwrap();
        c.set_by_name("numa", false).unwrap();
        assert_eq!(c.overrides(), vec!["debug_vm=on", "numa=off"]);
        assert!(c.set_by_name("kasan", true).is_err());
    }
}
