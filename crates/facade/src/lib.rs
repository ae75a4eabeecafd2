//! The one door through which the model reaches shared memory.
//!
//! Every atomic, fence, lock and scheduling point that the kernel model uses
//! comes from this crate, never from `std::sync` directly (a `clippy.toml`
//! `disallowed-types` entry holds that line). That is what lets one model run
//! three ways:
//!
//! * **native**: real OS threads, one per model CPU, std atomics. A scheduling
//!   point costs a store to a `Cell` and one predictable branch.
//! * **explored**: every model CPU is a [shuttle] task, all on one OS thread.
//!   Atomics are still std atomics (there is only one OS thread, so any
//!   interleaving of whole steps is sequentially consistent), wrapped so
//!   that the DPOR scheduler can record what each step touches ([`dpor`];
//!   elsewhere a never-taken branch per access); a scheduling
//!   point hands the choice of the next CPU to shuttle's scheduler, and every
//!   wait (a contended lock, a grace period, a TLB-flush IPI) blocks the shuttle
//!   task on a *wait channel* until another CPU wakes that channel.
//! * **loom** (`--cfg loom`): atomics, fences and locks are loom's, so small
//!   protocol kernels can be checked under the C11 memory model; scheduling
//!   points do nothing (loom switches at every atomic access).
//!
//! The modes are picked per machine at run time (see [`sched::Mode`]); the
//! `loom` facade is picked at compile time.
//!
//! Kernel barrier vocabulary maps as follows: `smp_mb()` is [`smp_mb`]
//! (`fence(SeqCst)`); `READ_ONCE`/`WRITE_ONCE` are `Relaxed` loads and stores;
//! `smp_load_acquire`/`smp_store_release` are `Acquire`/`Release`. The
//! asymmetric fences of liburcu's "memb" flavour, which keep the RCU read side
//! nearly free, are in [`membarrier`].
//!
//! The explorer restores a snapshot of the booted machine for each execution
//! instead of booting it again: the model's heap blocks come from a
//! per-thread arena copied after set-up and copied back ([`snapshot`]).

#![allow(clippy::disallowed_types)] // This crate is where the disallowed types are wrapped.

#[cfg(not(loom))]
mod atomic;
pub mod dpor;
pub mod membarrier;
mod owned;
pub mod sched;
pub mod snapshot;

#[cfg(not(loom))]
pub use atomic::{
    AtomicBool, AtomicI32, AtomicI64, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize,
};
#[cfg(not(loom))]
pub use std::sync::Arc;
#[cfg(not(loom))]
pub use std::sync::atomic::{Ordering, compiler_fence, fence};

#[cfg(loom)]
pub use loom::sync::Arc;
#[cfg(loom)]
pub use loom::sync::atomic::{
    AtomicBool, AtomicI32, AtomicI64, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize,
    Ordering, fence,
};
#[cfg(loom)]
pub use std::sync::atomic::compiler_fence;

/// Kernel: `smp_mb()`. A full barrier.
#[inline]
pub fn smp_mb() {
    fence(Ordering::SeqCst);
}

/// Kernel: `smp_mb__after_atomic()`: makes the atomic read-modify-write just
/// before it a full barrier. On x86 every locked RMW already is one, so, as
/// in the kernel (`arch/x86/include/asm/barrier.h`), it is only a compiler
/// barrier there: an `mfence` would cost more than the whole GUP-fast step it
/// orders. Elsewhere, and under loom (which must see the ordering), it is
/// `fence(SeqCst)`.
#[inline(always)]
#[allow(non_snake_case)] // The kernel's name.
pub fn smp_mb__after_atomic() {
    #[cfg(all(not(loom), any(target_arch = "x86", target_arch = "x86_64")))]
    compiler_fence(Ordering::SeqCst);
    #[cfg(not(all(not(loom), any(target_arch = "x86", target_arch = "x86_64"))))]
    fence(Ordering::SeqCst);
}

mod lock;
pub use lock::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A counter that is only a *hint*: its value decides whether to wake or
/// poll someone, never what the model does (whoever must be woken is woken
/// by name too), so the DPOR scheduler does not record its accesses. Under
/// loom it is loom's atomic, explored like any other.
#[derive(Debug, Default)]
pub struct HintUsize(
    #[cfg(not(loom))] std::sync::atomic::AtomicUsize,
    #[cfg(loom)] loom::sync::atomic::AtomicUsize,
);

impl HintUsize {
    /// A counter holding `v`.
    pub fn new(v: usize) -> Self {
        #[cfg(not(loom))]
        return HintUsize(std::sync::atomic::AtomicUsize::new(v));
        #[cfg(loom)]
        return HintUsize(loom::sync::atomic::AtomicUsize::new(v));
    }

    /// Loads the value.
    #[inline(always)]
    pub fn load(&self, o: Ordering) -> usize {
        self.0.load(o)
    }

    /// Stores `v`.
    #[inline(always)]
    pub fn store(&self, v: usize, o: Ordering) {
        self.0.store(v, o)
    }
}

/// The guard of a [`RawLock`].
#[cfg(not(loom))]
pub type RawGuard<'a, T> = std::sync::MutexGuard<'a, T>;
/// The guard of a [`RawLock`].
#[cfg(loom)]
pub type RawGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

/// A lock for the model's own bookkeeping (callback queues, free lists of
/// quarantine slots): never held across a scheduling point, so never
/// contended under the explorer, and not a step of any protocol.
#[derive(Debug)]
pub struct RawLock<T>(
    #[cfg(not(loom))] std::sync::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

#[cfg(not(loom))]
impl<T> RawLock<T> {
    /// A new lock.
    pub fn new(v: T) -> Self {
        RawLock(std::sync::Mutex::new(v))
    }

    /// Takes the lock to look only (the DPOR scheduler records a read of
    /// the lock: two looks commute). The caller must not change what it
    /// protects.
    pub fn peek(&self) -> std::sync::MutexGuard<'_, T> {
        dpor::read(self as *const Self as usize);
        sched::lock_ignoring_poison(&self.0)
    }

    /// Takes the lock, ignoring poison (see [`sched::lock_ignoring_poison`]).
    /// For the DPOR scheduler, a write of the lock.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        dpor::write(self as *const Self as usize);
        sched::lock_ignoring_poison(&self.0)
    }

    /// Takes the lock without recording it: the caller records, with
    /// [`dpor::read`] and [`dpor::write`], finer objects of what the lock
    /// protects (the RCU callback queue's head and tail), so that
    /// operations on different parts of it commute.
    pub fn lock_untracked(&self) -> std::sync::MutexGuard<'_, T> {
        sched::lock_ignoring_poison(&self.0)
    }
}

#[cfg(loom)]
impl<T> RawLock<T> {
    /// A new lock.
    pub fn new(v: T) -> Self {
        RawLock(loom::sync::Mutex::new(v))
    }

    /// Takes the lock to look only.
    pub fn peek(&self) -> loom::sync::MutexGuard<'_, T> {
        self.lock()
    }

    /// Takes the lock.
    pub fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the lock (nothing is recorded under loom).
    pub fn lock_untracked(&self) -> loom::sync::MutexGuard<'_, T> {
        self.lock()
    }
}
