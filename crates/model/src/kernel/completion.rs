//! Completions. Kernel: `kernel/sched/completion.c`.

use crate::kernel::cpu::Cpu;
use mmsim_facade::sched::{Point, chan};
use mmsim_facade::{AtomicBool, Ordering};

/// `struct completion`.
#[derive(Debug, Default)]
pub struct Completion {
    done: AtomicBool,
}

impl Completion {
    /// Kernel: `init_completion()`.
    pub fn new() -> Completion {
        Completion::default()
    }

    /// Kernel: `completion_done()`.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Kernel: `complete()`. Release pairs with the Acquire in the waiter.
pub fn complete(cpu: &Cpu, c: &Completion) {
    c.done.store(true, Ordering::Release);
    cpu.sched.wake(chan(c));
}

/// Kernel: `wait_for_completion()`.
pub fn wait_for_completion(cpu: &Cpu, c: &Completion, at: &'static Point) {
    cpu.point(at);
    // Softirq work runs while the waiter sleeps: the RCU callback that
    // completes it may be due on this very CPU.
    cpu.sched.wait(at, chan(c), None, || {
        crate::kernel::rcupdate::rcu_core(cpu);
        c.is_done()
    });
}
