//! `rcu_sync`: lets readers skip synchronisation while no writer is near.
//!
//! Kernel: `kernel/rcu/sync.c`, used by `percpu_rw_semaphore` (and so by
//! `mem_hotplug_lock`).
//!
//! The state machine (`GP_IDLE → GP_ENTER → GP_PASSED → GP_EXIT → GP_IDLE`,
//! with `GP_REPLAY`) is the kernel's. The property that matters for the
//! seed's race: [`rcu_sync_enter`] waits for a grace period only when it
//! finds the state `GP_IDLE`. [`rcu_sync_exit`] moves `GP_PASSED → GP_EXIT`
//! and queues `call_rcu(rcu_sync_func)`, which returns the state to
//! `GP_IDLE` a grace period later. A CPU that stays in an IRQs-off region
//! holds that callback back, so the *next* writer finds `GP_EXIT` and goes
//! on at once: it gets no grace period of its own.
//!
//! The safeguard `mem_hotplug_lock.rcu_sync` switches the grace period of
//! `rcu_sync_enter()` off (the state machine still runs).

use crate::kernel::cpu::Cpu;
use crate::kernel::rcupdate::{call_rcu, synchronize_rcu};
use mmsim_facade::sched::chan;
use mmsim_facade::{AtomicU8, Ordering, RawLock, point};

/// `enum { GP_IDLE, GP_ENTER, GP_PASSED, GP_EXIT, GP_REPLAY }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GpState {
    /// No writer, and every reader has seen that.
    Idle = 0,
    /// A writer is waiting for its grace period.
    Enter = 1,
    /// Readers are on the slow path.
    Passed = 2,
    /// The last writer left; a callback will return to idle.
    Exit = 3,
    /// Another writer left while the callback was pending.
    Replay = 4,
}

impl GpState {
    fn from_u8(v: u8) -> GpState {
        match v {
            0 => GpState::Idle,
            1 => GpState::Enter,
            2 => GpState::Passed,
            3 => GpState::Exit,
            _ => GpState::Replay,
        }
    }

    /// The kernel's name.
    pub fn name(self) -> &'static str {
        match self {
            GpState::Idle => "GP_IDLE",
            GpState::Enter => "GP_ENTER",
            GpState::Passed => "GP_PASSED",
            GpState::Exit => "GP_EXIT",
            GpState::Replay => "GP_REPLAY",
        }
    }
}

/// `struct rcu_sync`.
#[derive(Debug)]
pub struct RcuSync {
    gp_state: AtomicU8,
    /// `gp_count`, under `rss_lock`.
    rss_lock: RawLock<u32>,
    /// Whether `rcu_sync_enter()` takes its grace period (the safeguard).
    grace_period: bool,
}

impl RcuSync {
    /// Kernel: `rcu_sync_init()`.
    pub fn new(grace_period: bool) -> RcuSync {
        RcuSync {
            gp_state: AtomicU8::new(GpState::Idle as u8),
            rss_lock: RawLock::new(0),
            grace_period,
        }
    }

    /// `READ_ONCE(rsp->gp_state)`.
    pub fn state(&self) -> GpState {
        GpState::from_u8(self.gp_state.load(Ordering::Acquire))
    }

    fn set(&self, s: GpState) {
        self.gp_state.store(s as u8, Ordering::Release);
    }
}

/// Where an `rcu_sync` lives, so that its callback (which outlives any
/// borrow) can find it again.
pub type RcuSyncOf = fn(&Cpu) -> &RcuSync;

/// Kernel: `rcu_sync_enter()`.
pub fn rcu_sync_enter(cpu: &Cpu, rsp: &RcuSync, of: RcuSyncOf) {
    cpu.point(point!("rcu_sync_enter", "read gp_state"));
    let gp_state = {
        let mut count = rsp.rss_lock.lock();
        let s = rsp.state();
        if s == GpState::Idle {
            rsp.set(GpState::Enter);
        }
        *count += 1;
        s
    };
    cpu.sched.note(
        point!("rcu_sync_enter", "found"),
        mmsim_facade::sched::Event::Step,
        None,
        Some(gp_state.name().to_string()),
    );
    if gp_state == GpState::Idle {
        // The synchronous equivalent of call_rcu(rcu_sync_func).
        if rsp.grace_period {
            synchronize_rcu(cpu);
        }
        rcu_sync_func(cpu, of);
        return;
    }
    // wait_event(gp_wait, gp_state >= GP_PASSED): GP_EXIT and GP_REPLAY
    // satisfy it at once.
    cpu.sched.wait(
        point!("rcu_sync_enter", "wait for GP_PASSED"),
        chan(rsp),
        None,
        || rsp.state() >= GpState::Passed,
    );
}

/// Kernel: `rcu_sync_func()`: a grace period after the last transition.
pub fn rcu_sync_func(cpu: &Cpu, of: RcuSyncOf) {
    let rsp = of(cpu);
    {
        let count = rsp.rss_lock.lock();
        if *count > 0 {
            rsp.set(GpState::Passed);
        } else if rsp.state() == GpState::Replay {
            // Another rcu_sync_exit() came meanwhile: wait one more GP.
            rsp.set(GpState::Exit);
            call_rcu(cpu, "rcu_sync_func", move |cpu| rcu_sync_func(cpu, of));
        } else {
            rsp.set(GpState::Idle);
        }
    }
    cpu.sched.wake(chan(rsp));
}

/// Kernel: `rcu_sync_exit()`.
pub fn rcu_sync_exit(cpu: &Cpu, rsp: &RcuSync, of: RcuSyncOf) {
    cpu.point(point!("rcu_sync_exit", "gp_count--"));
    let mut count = rsp.rss_lock.lock();
    *count = count.saturating_sub(1);
    if *count == 0 {
        match rsp.state() {
            GpState::Passed => {
                rsp.set(GpState::Exit);
                drop(count);
                call_rcu(cpu, "rcu_sync_func", move |cpu| rcu_sync_func(cpu, of));
            }
            GpState::Exit => rsp.set(GpState::Replay),
            _ => {}
        }
    }
}
