//! Under the explorer, a CPU about to block while no other task can run is
//! a deadlock: it unwinds with the facade's `Stuck`, the model records a
//! `deadlock` naming the CPU and the point, and the run ends normally
//! instead of shuttle aborting the exploration.

use mmsim_check::explore::sched::{Driver, Inner, Recorder};
use mmsim_facade::point;
use mmsim_facade::sched::Mode;
use mmsim_model::detect::Kind;
use mmsim_model::kernel::cpu::Died;
use mmsim_model::{Machine, MachineConfig, RangeConfig, RangeKind};
use shuttle::scheduler::{RandomScheduler, Schedule};
use std::cell::RefCell;
use std::rc::Rc;

/// The explorer's recorder over shuttle's random scheduler.
struct Random(Inner);

impl Driver for Random {
    fn inner(&mut self) -> &mut Inner {
        &mut self.0
    }
    fn decided(&mut self, _cpu: u8) {}
    fn new_execution(&mut self) -> Option<Schedule> {
        self.0.as_scheduler().new_execution()
    }
}

#[test]
fn two_cpus_waiting_for_each_other_are_a_deadlock() {
    let runs = std::sync::Arc::new(mmsim_facade::AtomicUsize::new(0));
    let r2 = runs.clone();
    let driver = Rc::new(RefCell::new(Random(Inner::Random(
        RandomScheduler::new_from_seed(1, 300),
    ))));
    let mut cfg = shuttle::Config::new();
    cfg.failure_persistence = shuttle::FailurePersistence::None;
    shuttle::Runner::new(Recorder::new(driver), cfg).run(move || {
        let m = Machine::new(MachineConfig {
            nr_cpus: 2,
            section_shift: 16,
            ranges: vec![RangeConfig {
                name: "boot".into(),
                kind: RangeKind::Boot,
                bytes: 64 << 10,
                node: 0,
            }],
            mode: Mode::Explore,
            ..Default::default()
        })
        .unwrap();
        let handles: Vec<_> = (0..2u32)
            .map(|i| {
                let c = m.cpu(i);
                shuttle::thread::spawn(move || {
                    let r = c.run(|| {
                        c.point(point!("test", "before the wait"));
                        c.sched.wait(
                            point!("test", "wait for the other CPU"),
                            0x1000 + i as usize,
                            Some(1 - i as u64),
                            || false,
                        );
                    });
                    c.finish();
                    r
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), Err(Died::Stuck));
        }
        let v = m.detect.violations();
        assert!(m.detect.found(Kind::Deadlock), "{v:?}");
        assert!(
            v.iter().all(|v| v.step == "wait for the other CPU"),
            "{v:?}"
        );
        r2.fetch_add(1, mmsim_facade::Ordering::Relaxed);
    });
    assert_eq!(runs.load(mmsim_facade::Ordering::Relaxed), 300);
}
