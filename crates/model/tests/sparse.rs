//! The sparse memory model (`mm/sparse.c`): section and subsection
//! validity through hot-add and hot-remove, early sections, and the
//! lifetime of `ms->usage` (`kfree_rcu` since CVE-2023-52489).

use mmsim_facade::sched::Mode;
use mmsim_model::detect::Kind;
use mmsim_model::kernel::cpu::Died;
use mmsim_model::kernel::rcupdate::{rcu_barrier, rcu_read_lock};
use mmsim_model::machine::MemRange;
use mmsim_model::mm::memory_hotplug::{
    __add_pages, __remove_pages, move_pfn_range_to_zone, online_pages_range,
};
use mmsim_model::mm::mmzone::ZoneType;
use mmsim_model::mm::page_alloc::{
    __offline_isolated_pages, start_isolate_page_range, test_pages_isolated,
};
use mmsim_model::mm::sparse::{
    offline_mem_sections, online_mem_sections, pfn_to_online_page, pfn_valid,
};
use mmsim_model::safeguards::{Safeguards, Sg};
use mmsim_model::{Cpu, Errno, Machine, MachineConfig, Pfn, RangeConfig, RangeKind};
use std::sync::Arc;
use std::time::Duration;

fn config(section_shift: u32, boot: u64, dimm: u64) -> MachineConfig {
    MachineConfig {
        section_shift,
        ranges: vec![
            RangeConfig {
                name: "boot".into(),
                kind: RangeKind::Boot,
                bytes: boot,
                node: 0,
            },
            RangeConfig {
                name: "dimm".into(),
                kind: RangeKind::Hotplug,
                bytes: dimm,
                node: 0,
            },
        ],
        ..Default::default()
    }
}

fn machine(section_shift: u32, boot: u64, dimm: u64) -> Arc<Machine> {
    Machine::new(config(section_shift, boot, dimm)).unwrap()
}

fn online(cpu: &Cpu, start: Pfn, nr: u64) {
    __add_pages(cpu, start, nr).unwrap();
    move_pfn_range_to_zone(cpu, start, nr, 0, ZoneType::Movable);
    online_mem_sections(cpu, start, start.add(nr));
    online_pages_range(cpu, start, nr);
}

/// Offlines and removes `[start, start + nr)`, every page of it free.
fn offline_and_remove(cpu: &Cpu, start: Pfn, nr: u64) {
    let end = start.add(nr);
    start_isolate_page_range(cpu, start, end);
    assert!(test_pages_isolated(cpu, start, end));
    assert_eq!(__offline_isolated_pages(cpu, start, end), nr);
    offline_mem_sections(cpu, start, end);
    __remove_pages(cpu, start, nr);
}

fn no_violations(m: &Machine) {
    let v = m.detect.violations();
    assert!(v.is_empty(), "unexpected violations: {v:?}");
}

fn dimm(m: &Machine) -> MemRange {
    m.range("dimm").unwrap().clone()
}

#[test]
fn pfn_valid_follows_add_and_remove() {
    let m = machine(21, 4 << 20, 4 << 20);
    let cpu = m.cpu(0);
    let d = dimm(&m);
    let last = d.end().checked_sub(1).unwrap();
    let boot = m.range("boot").unwrap().clone();
    let sample = [d.start, d.start.add(511), d.start.add(512), last];
    // Before __add_pages: no memmap.
    for &p in &sample {
        assert!(!pfn_valid(&cpu, p), "{p:?} valid before __add_pages");
        assert!(pfn_to_online_page(&cpu, p).is_none());
        assert!(!m.sparse.pfn_to_page(p).is_live());
    }
    // Beyond the last section.
    assert!(!pfn_valid(&cpu, d.end()));
    assert!(!pfn_valid(&cpu, Pfn::new(Pfn::MAX)));
    assert!(pfn_to_online_page(&cpu, d.end()).is_none());
    // Boot memory is valid and online throughout.
    assert!(pfn_valid(&cpu, boot.start));
    assert!(pfn_to_online_page(&cpu, boot.start).is_some());

    __add_pages(&cpu, d.start, d.nr_pages).unwrap();
    for &p in &sample {
        assert!(pfn_valid(&cpu, p), "{p:?} not valid after __add_pages");
        assert!(m.sparse.pfn_to_page(p).is_live());
        // Present but not online yet.
        assert!(pfn_to_online_page(&cpu, p).is_none());
    }
    let ms = m.sparse.pfn_to_section(d.start).unwrap();
    assert!(ms.present() && ms.valid() && !ms.online() && !ms.early());
    // Adding it twice is refused.
    assert_eq!(__add_pages(&cpu, d.start, d.nr_pages), Err(Errno::EEXIST));

    move_pfn_range_to_zone(&cpu, d.start, d.nr_pages, 0, ZoneType::Movable);
    online_mem_sections(&cpu, d.start, d.end());
    for &p in &sample {
        let page = pfn_to_online_page(&cpu, p).expect("online page");
        assert_eq!(page.pfn(), p);
        assert_eq!(page.zonenum(&cpu), ZoneType::Movable as usize);
    }
    online_pages_range(&cpu, d.start, d.nr_pages);
    assert_eq!(m.zone(ZoneType::Movable).free_pages(), d.nr_pages);

    offline_and_remove(&cpu, d.start, d.nr_pages);
    for &p in &sample {
        assert!(!pfn_valid(&cpu, p), "{p:?} valid after __remove_pages");
        assert!(pfn_to_online_page(&cpu, p).is_none());
        assert!(!m.sparse.pfn_to_page(p).is_live());
    }
    for nr in 0..2 {
        let ms = m.sparse.pfn_to_section(d.start.add(nr * 512)).unwrap();
        assert!(!ms.present() && !ms.valid() && !ms.online());
    }
    assert!(pfn_valid(&cpu, boot.start));
    assert_eq!(m.zone(ZoneType::Movable).managed_pages(), 0);

    // And back again: the same pfns are valid, at the same memmap.
    online(&cpu, d.start, d.nr_pages);
    for &p in &sample {
        assert!(pfn_valid(&cpu, p));
        assert!(pfn_to_online_page(&cpu, p).is_some());
    }
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    no_violations(&m);
}

#[test]
fn offline_section_is_not_online_but_still_valid() {
    let m = machine(21, 4 << 20, 2 << 20);
    let cpu = m.cpu(0);
    let d = dimm(&m);
    online(&cpu, d.start, d.nr_pages);
    start_isolate_page_range(&cpu, d.start, d.end());
    assert!(test_pages_isolated(&cpu, d.start, d.end()));
    __offline_isolated_pages(&cpu, d.start, d.end());
    offline_mem_sections(&cpu, d.start, d.end());
    // Offline: pfn_to_online_page() says no, the memmap is still there.
    assert!(pfn_to_online_page(&cpu, d.start).is_none());
    assert!(pfn_valid(&cpu, d.start));
    assert!(m.sparse.pfn_to_page(d.start).is_live());
    __remove_pages(&cpu, d.start, d.nr_pages);
    assert!(!pfn_valid(&cpu, d.start));
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    no_violations(&m);
}

#[test]
fn subsections_are_valid_one_at_a_time() {
    // 4 MiB sections of two 2 MiB subsections.
    let m = machine(22, 4 << 20, 4 << 20);
    let cpu = m.cpu(0);
    let d = dimm(&m);
    assert_eq!(d.nr_pages, 1024);
    let half = 512;
    let (lo, hi) = (d.start, d.start.add(half));
    let ms = m.sparse.pfn_to_section(lo).unwrap();

    // Only the first subsection.
    __add_pages(&cpu, lo, half).unwrap();
    assert!(ms.valid());
    assert!(pfn_valid(&cpu, lo));
    assert!(pfn_valid(&cpu, lo.add(half - 1)));
    assert!(!pfn_valid(&cpu, hi), "the absent subsection is valid");
    assert!(!pfn_valid(&cpu, d.end().checked_sub(1).unwrap()));
    assert!(m.sparse.pfn_to_page(lo).is_live());
    assert!(!m.sparse.pfn_to_page(hi).is_live());
    // Re-adding the same subsection is refused; the other one is not.
    assert_eq!(__add_pages(&cpu, lo, half), Err(Errno::EEXIST));
    __add_pages(&cpu, hi, half).unwrap();
    assert!(pfn_valid(&cpu, hi));
    assert!(m.sparse.pfn_to_page(hi).is_live());
    // Remove the first: the section stays valid through the second.
    __remove_pages(&cpu, lo, half);
    assert!(ms.valid());
    assert!(!pfn_valid(&cpu, lo));
    assert!(pfn_valid(&cpu, hi));
    assert!(!m.sparse.pfn_to_page(lo).is_live());
    assert!(m.sparse.pfn_to_page(hi).is_live());
    // Online only the second subsection.
    move_pfn_range_to_zone(&cpu, hi, half, 0, ZoneType::Movable);
    online_mem_sections(&cpu, hi, d.end());
    online_pages_range(&cpu, hi, half);
    assert!(pfn_to_online_page(&cpu, hi).is_some());
    assert!(pfn_to_online_page(&cpu, lo).is_none());
    offline_and_remove(&cpu, hi, half);
    assert!(!ms.valid() && !ms.present());
    assert!(!pfn_valid(&cpu, hi));
    assert!(!m.sparse.pfn_to_page(hi).is_live());
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    no_violations(&m);
}

#[test]
fn early_sections_are_valid_for_the_whole_section() {
    let m = machine(22, 8 << 20, 4 << 20);
    let cpu = m.cpu(0);
    let boot = m.range("boot").unwrap().clone();
    for nr in 0..2 {
        let ms = m.sparse.nr_to_section(nr).unwrap();
        assert!(ms.early() && ms.valid() && ms.present() && ms.online());
    }
    for pfn in boot.start.as_u64()..boot.end().as_u64() {
        assert!(pfn_valid(&cpu, Pfn::new(pfn)), "boot pfn {pfn:#x}");
    }
    no_violations(&m);
}

#[test]
fn early_subsection_removal_keeps_the_boot_memmap() {
    // Removing part of an early section: pfn_valid() stays true for the
    // whole section and the boot memmap is kept (it is freed only with the
    // last subsection).
    let m = machine(22, 8 << 20, 4 << 20);
    let cpu = m.cpu(0);
    let sec1 = m.sparse.section_nr_to_pfn(1);
    let ms = m.sparse.nr_to_section(1).unwrap();
    offline_and_remove(&cpu, sec1, 512);
    assert!(ms.early() && ms.valid());
    assert!(pfn_valid(&cpu, sec1), "early section lost pfn_valid()");
    assert!(m.sparse.pfn_to_page(sec1).is_live());
    no_violations(&m);
}

#[test]
fn early_section_removal_frees_the_boot_memmap() {
    // section_deactivate() of an early section's last subsection frees
    // the boot memmap (free_map_bootmem()), keeps the boot usage map, and
    // the section comes back as an ordinary hot-added one.
    let m = machine(22, 8 << 20, 4 << 20);
    let cpu = m.cpu(0);
    let sec1 = m.sparse.section_nr_to_pfn(1);
    let ms = m.sparse.nr_to_section(1).unwrap();
    let pps = m.sparse.pages_per_section();
    offline_and_remove(&cpu, sec1, pps);
    assert!(!ms.valid() && !ms.present() && !ms.early());
    assert!(!pfn_valid(&cpu, sec1));
    assert!(!pfn_valid(&cpu, sec1.add(pps - 1)));
    assert!(
        !m.sparse.pfn_to_page(sec1).is_live(),
        "boot memmap not freed with its section"
    );
    assert_eq!(m.rcu.pending(), 0, "a boot usage map must not be kfree'd");
    // Section 0 is untouched.
    assert!(pfn_valid(&cpu, Pfn::new(0)));
    online(&cpu, sec1, pps);
    assert!(!ms.early() && ms.valid() && ms.online());
    assert!(pfn_valid(&cpu, sec1));
    assert!(pfn_to_online_page(&cpu, sec1).is_some());
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    no_violations(&m);
}

#[test]
fn page_pointer_taken_before_first_hot_add_sees_the_new_memmap() {
    // pfn_to_page() is arithmetic: a pointer computed before the section
    // ever had a memmap points at the memmap that hot-add populates.
    let m = machine(21, 4 << 20, 2 << 20);
    let cpu = m.cpu(0);
    let d = dimm(&m);
    let early = m.sparse.pfn_to_page(d.start);
    assert!(!early.is_live());
    online(&cpu, d.start, d.nr_pages);
    assert!(early.is_live());
    let now = m.sparse.pfn_to_page(d.start);
    assert_eq!(early.ref_count(&cpu), now.ref_count(&cpu));
    assert_eq!(early.page_type(&cpu), now.page_type(&cpu));
    assert_eq!(early.flags(&cpu), now.flags(&cpu));
    // A write through one is seen through the other.
    early.set_index(&cpu, 0x1234);
    assert_eq!(now.index(&cpu), 0x1234);
    now.set_index(&cpu, 0);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    no_violations(&m);
}

/// Removes the DIMM while `reader` (another CPU) is inside an RCU read-side
/// section; returns how many RCU callbacks were pending right after.
fn remove_under_reader(m: &Arc<Machine>) -> usize {
    let boot = m.boot_cpu();
    let reader = m.cpu(1);
    let d = dimm(m);
    online(&boot, d.start, d.nr_pages);
    let g = rcu_read_lock(&reader);
    offline_and_remove(&boot, d.start, d.nr_pages);
    let pending = m.rcu.pending();
    drop(g);
    pending
}

#[test]
fn usage_is_freed_after_a_grace_period() {
    let m = machine(21, 4 << 20, 2 << 20);
    assert!(m.sg.on(Sg::USAGE_KFREE_RCU));
    let pending = remove_under_reader(&m);
    assert!(pending > 0, "ms->usage freed without a grace period");
    let boot = m.boot_cpu();
    rcu_barrier(&boot);
    assert_eq!(m.rcu.pending(), 0);
    // The section can be added again (a fresh usage map).
    let d = dimm(&m);
    online(&boot, d.start, d.nr_pages);
    assert!(pfn_valid(&boot, d.start));
    drop(boot);
    assert_eq!(m.check_leaks(), 0);
    no_violations(&m);
}

#[test]
fn usage_is_freed_at_once_without_the_safeguard() {
    let mut sg = Safeguards::default();
    sg.set(Sg::USAGE_KFREE_RCU, false);
    let m = Machine::new(MachineConfig {
        safeguards: sg,
        ..config(21, 4 << 20, 2 << 20)
    })
    .unwrap();
    assert_eq!(remove_under_reader(&m), 0);
    no_violations(&m);
}

#[test]
fn re_adding_while_the_old_usage_waits_for_its_grace_period() {
    // The section comes back before the old usage map's kfree_rcu ran: the
    // new one is a different object, and the late free does not touch it.
    let m = machine(21, 4 << 20, 2 << 20);
    let boot = m.boot_cpu();
    let reader = m.cpu(1);
    let d = dimm(&m);
    online(&boot, d.start, d.nr_pages);
    let g = rcu_read_lock(&reader);
    offline_and_remove(&boot, d.start, d.nr_pages);
    assert!(m.rcu.pending() > 0);
    online(&boot, d.start, d.nr_pages);
    assert!(pfn_valid(&boot, d.start));
    drop(g);
    rcu_barrier(&boot);
    assert!(pfn_valid(&boot, d.start));
    assert!(pfn_to_online_page(&boot, d.start).is_some());
    drop(boot);
    drop(reader);
    assert_eq!(m.check_leaks(), 0);
    no_violations(&m);
}

/// A `pfn_valid()` on cpu1 that has loaded `ms->usage` is held there while
/// the boot CPU removes the section; then it reads the usage map.
fn pfn_valid_races_removal(safeguard: bool) -> (Arc<Machine>, Result<bool, Died>) {
    let mut sg = Safeguards::default();
    sg.set(Sg::USAGE_KFREE_RCU, safeguard);
    let m = Machine::new(MachineConfig {
        safeguards: sg,
        mode: Mode::Native,
        hooks: true,
        ..config(21, 4 << 20, 2 << 20)
    })
    .unwrap();
    let d = dimm(&m);
    let boot = m.boot_cpu();
    online(&boot, d.start, d.nr_pages);
    let hold = m
        .ctx
        .hold(1, "pfn_section_valid", "test_bit(subsection_map)", 0);
    let m2 = m.clone();
    let reader = std::thread::spawn(move || {
        let cpu = m2.cpu(1);
        let r = cpu.run(|| pfn_valid(&cpu, d.start));
        cpu.finish();
        r
    });
    assert!(m.ctx.wait_reached(hold, Duration::from_secs(10)));
    offline_and_remove(&boot, d.start, d.nr_pages);
    m.ctx.release(hold);
    let r = reader.join().unwrap();
    rcu_barrier(&boot);
    (m, r)
}

#[test]
fn pfn_valid_reader_keeps_usage_alive_with_kfree_rcu() {
    let (m, r) = pfn_valid_races_removal(true);
    // The reader reads the old usage map, still allocated, whose bit
    // section_deactivate() cleared before it queued the free: not valid.
    assert_eq!(r, Ok(false));
    no_violations(&m);
    assert_eq!(m.rcu.pending(), 0);
}

#[test]
fn pfn_valid_reader_reads_freed_usage_without_kfree_rcu() {
    let (m, r) = pfn_valid_races_removal(false);
    assert_eq!(r, Err(Died::Oops));
    let v = m.detect.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, Kind::SectionUsageUseAfterFree);
    assert_eq!(v[0].cpu, Some(1));
    assert_eq!(v[0].function, "pfn_section_valid");
    assert_eq!(v[0].step, "test_bit(subsection_map)");
    assert_eq!(v[0].pfn, Some(dimm(&m).start));
}
