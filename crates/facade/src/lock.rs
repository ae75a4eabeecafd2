//! Sleeping locks that cooperate with the explorer.
//!
//! A lock acquisition is a scheduling point. Natively the locks are std's.
//! Under the explorer all CPUs share one OS thread, so blocking in std's lock
//! would hang the process: instead a contended acquisition waits on the lock's
//! wait channel and the unlock wakes it (see [`crate::sched`]). Under loom
//! they are loom's.
//!
//! Poisoning is ignored: a CPU that oopses while holding a lock unwinds, and
//! the run reports the oops; what it protected is the model's problem, as in
//! the kernel.

#![allow(clippy::disallowed_types)]

use crate::dpor;
use crate::sched::{Point, Sched, chan};
use std::ops::{Deref, DerefMut};

#[cfg(not(loom))]
use std::sync::{
    Mutex as Inner, MutexGuard as InnerGuard, RwLock as InnerRw, RwLockReadGuard as InnerReadGuard,
    RwLockWriteGuard as InnerWriteGuard, TryLockError,
};

#[cfg(loom)]
use loom::sync::{
    Mutex as Inner, MutexGuard as InnerGuard, RwLock as InnerRw, RwLockReadGuard as InnerReadGuard,
    RwLockWriteGuard as InnerWriteGuard,
};

/// A mutex whose acquisition is the scheduling point `point`.
pub struct Mutex<T> {
    point: &'static Point,
    /// A spinlock ([`Mutex::new_spin`]).
    spin: bool,
    inner: Inner<T>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mutex({})", self.point)
    }
}

/// Held [`Mutex`].
pub struct MutexGuard<'a, T> {
    sched: &'a Sched,
    chan: usize,
    spin: bool,
    inner: InnerGuard<'a, T>,
}

impl<T> Mutex<T> {
    /// A mutex named by `point` (its function is the lock's name).
    pub fn new(point: &'static Point, v: T) -> Self {
        Mutex {
            point,
            spin: false,
            inner: Inner::new(v),
        }
    }

    /// A spinlock named by `point`: a lock whose holder never waits for
    /// anything but another spinlock, and whose nesting has a fixed order
    /// (the kernel's rule for spinlocks, which lockdep checks), so that
    /// it takes part in no deadlock. For the DPOR scheduler its
    /// acquisitions and releases order nothing: two critical sections are
    /// ordered by the data they touch, not by the lock
    /// ([`crate::dpor::LOCK`]). Otherwise it is a [`Mutex`].
    pub fn new_spin(point: &'static Point, v: T) -> Self {
        Mutex {
            point,
            spin: true,
            inner: Inner::new(v),
        }
    }

    /// Kernel: `mutex_lock()` (`spin_lock()` for a spinlock).
    pub fn lock<'a>(&'a self, s: &'a Sched) -> MutexGuard<'a, T> {
        s.point(self.point);
        MutexGuard {
            sched: s,
            chan: chan(self),
            spin: self.spin,
            inner: self.acquire(s),
        }
    }

    #[cfg(not(loom))]
    fn acquire<'a>(&'a self, s: &'a Sched) -> InnerGuard<'a, T> {
        if !s.exploring() {
            return self.inner.lock().unwrap_or_else(|e| e.into_inner());
        }
        loop {
            // For the DPOR scheduler every attempt, taken or not, and every
            // release is a write of the lock; a spinlock's taking is noted
            // instead (see `new_spin`).
            if self.spin {
                dpor::access(chan(self), dpor::LOCK);
            } else {
                dpor::write(chan(self));
            }
            match self.inner.try_lock() {
                Ok(g) => {
                    if self.spin {
                        dpor::note_lock(chan(self), true);
                        s.spin_taken(self.point);
                    }
                    return g;
                }
                Err(TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    // Under the explorer the holder is another task on this OS
                    // thread; it wakes the channel when it unlocks.
                    // A woken waiter can find the lock taken again by a
                    // third task: each look reads the lock.
                    if self.spin {
                        s.wait_spin(self.point, chan(self), || !self.is_locked());
                    } else {
                        s.wait_unstable(self.point, chan(self), None, || {
                            dpor::read(chan(self));
                            !self.is_locked()
                        });
                    }
                }
            }
        }
    }

    #[cfg(loom)]
    fn acquire<'a>(&'a self, _s: &'a Sched) -> InnerGuard<'a, T> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(not(loom))]
    fn is_locked(&self) -> bool {
        matches!(self.inner.try_lock(), Err(TryLockError::WouldBlock))
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // The woken CPU runs no sooner than this CPU's next point, by which
        // time `inner` has been dropped and the lock is free.
        if self.spin {
            dpor::access(self.chan, dpor::LOCK);
            dpor::note_lock(self.chan, false);
            self.sched.spin_released();
        } else {
            dpor::write(self.chan);
        }
        self.sched.wake(self.chan);
    }
}

/// A reader-writer semaphore (`struct rw_semaphore`) whose acquisitions are
/// scheduling points.
pub struct RwLock<T> {
    point: &'static Point,
    inner: InnerRw<T>,
}

impl<T> std::fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RwLock({})", self.point)
    }
}

/// Shared hold on a [`RwLock`].
pub struct RwLockReadGuard<'a, T> {
    sched: &'a Sched,
    chan: usize,
    inner: InnerReadGuard<'a, T>,
}

/// Exclusive hold on a [`RwLock`].
pub struct RwLockWriteGuard<'a, T> {
    sched: &'a Sched,
    chan: usize,
    inner: InnerWriteGuard<'a, T>,
}

impl<T> RwLock<T> {
    /// A lock named by `point`.
    pub fn new(point: &'static Point, v: T) -> Self {
        RwLock {
            point,
            inner: InnerRw::new(v),
        }
    }

    /// Kernel: `down_read()`.
    pub fn read<'a>(&'a self, s: &'a Sched) -> RwLockReadGuard<'a, T> {
        s.point(self.point);
        RwLockReadGuard {
            sched: s,
            chan: chan(self),
            inner: self.acquire_read(s),
        }
    }

    /// Kernel: `down_write()`.
    pub fn write<'a>(&'a self, s: &'a Sched) -> RwLockWriteGuard<'a, T> {
        s.point(self.point);
        RwLockWriteGuard {
            sched: s,
            chan: chan(self),
            inner: self.acquire_write(s),
        }
    }

    /// Kernel: `down_read_trylock()`.
    #[cfg(not(loom))]
    pub fn try_read<'a>(&'a self, s: &'a Sched) -> Option<RwLockReadGuard<'a, T>> {
        s.point(self.point);
        let inner = match self.inner.try_read() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                dpor::write(chan(self));
                return None;
            }
        };
        dpor::read(chan(self));
        Some(RwLockReadGuard {
            sched: s,
            chan: chan(self),
            inner,
        })
    }

    #[cfg(not(loom))]
    fn acquire_read<'a>(&'a self, s: &'a Sched) -> InnerReadGuard<'a, T> {
        if !s.exploring() {
            return self.inner.read().unwrap_or_else(|e| e.into_inner());
        }
        // For the DPOR scheduler readers taking and releasing the lock read
        // it (they commute); a writer's acquisition and release, and a
        // failed attempt of either, write it.
        loop {
            match self.inner.try_read() {
                Ok(g) => {
                    dpor::read(chan(self));
                    return g;
                }
                Err(TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    dpor::write(chan(self));
                    s.wait_unstable(self.point, chan(self), None, || {
                        dpor::read(chan(self));
                        !matches!(self.inner.try_read(), Err(TryLockError::WouldBlock))
                    });
                }
            }
        }
    }

    #[cfg(not(loom))]
    fn acquire_write<'a>(&'a self, s: &'a Sched) -> InnerWriteGuard<'a, T> {
        if !s.exploring() {
            return self.inner.write().unwrap_or_else(|e| e.into_inner());
        }
        loop {
            dpor::write(chan(self));
            match self.inner.try_write() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    s.wait_unstable(self.point, chan(self), None, || {
                        dpor::read(chan(self));
                        !matches!(self.inner.try_write(), Err(TryLockError::WouldBlock))
                    });
                }
            }
        }
    }

    #[cfg(loom)]
    fn acquire_read<'a>(&'a self, _s: &'a Sched) -> InnerReadGuard<'a, T> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(loom)]
    fn acquire_write<'a>(&'a self, _s: &'a Sched) -> InnerWriteGuard<'a, T> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        dpor::read(self.chan);
        self.sched.wake_after_read(self.chan);
    }
}

impl<T> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        dpor::write(self.chan);
        self.sched.wake(self.chan);
    }
}
