//! Boot a machine, allocate and free, take a speculative reference.

use mmsim_model::mm::page_alloc::{Gfp, folio_alloc};
use mmsim_model::mm::page_ref::{folio_put, folio_ref_count, folio_try_get};
use mmsim_model::{Machine, MachineConfig};

#[test]
fn boot_alloc_free_no_leak() {
    let m = Machine::new(MachineConfig::default()).unwrap();
    let cpu = m.cpu(0);
    let f = folio_alloc(&cpu, Gfp::KERNEL, 0).unwrap();
    assert_eq!(folio_ref_count(&cpu, f), 1);
    assert!(folio_try_get(&cpu, f));
    folio_put(&cpu, f);
    folio_put(&cpu, f);
    assert_eq!(folio_ref_count(&cpu, f), 0);
    assert!(!folio_try_get(&cpu, f));
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}
