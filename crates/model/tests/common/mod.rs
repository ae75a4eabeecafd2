//! Set-up shared by the model's integration tests: a booted machine of boot
//! memory only, anonymous mappings, page addresses. A test file that needs
//! it says `mod common;` and uses what it needs (the rest is dead code for
//! that file, hence the `allow`).

#![allow(dead_code)]

use mmsim_model::mm::mmap::{BackingKind, MmStruct, MmapArgs, Prot, do_mmap, use_mm};
use mmsim_model::safeguards::Safeguards;
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Cpu, Machine, MachineConfig, RangeConfig, RangeKind, VirtAddr};
use std::sync::Arc;

/// A native machine with 64 MiB of boot memory in 8 MiB sections (room for
/// 2 MiB THPs) and the safeguards `sg`.
pub fn boot_machine(sg: Safeguards) -> Arc<Machine> {
    Machine::new(MachineConfig {
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 64 << 20,
            node: 0,
        }],
        section_shift: 23,
        safeguards: sg,
        ..Default::default()
    })
    .unwrap()
}

/// `cpu` switches to `mm` and maps `len` bytes of private anonymous memory,
/// read-write, at `addr` if given; `thp` allows PMD-size folios.
pub fn anon_mmap(
    cpu: &Cpu,
    mm: &MmStruct,
    addr: Option<VirtAddr>,
    len: u64,
    thp: bool,
) -> VirtAddr {
    use_mm(cpu, mm);
    do_mmap(
        cpu,
        mm,
        &MmapArgs {
            addr,
            len,
            prot: Prot::ReadWrite,
            backing: BackingKind::Anon,
            thp,
        },
    )
    .unwrap()
}

/// The address of page `i` of a mapping at `a`.
pub fn page_at(a: VirtAddr, i: u64) -> VirtAddr {
    VirtAddr::new(a.as_u64() + i * PAGE_SIZE)
}

/// The detectors saw nothing on `m` (the violations listed if they did).
pub fn assert_no_violation(m: &Machine) {
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}
