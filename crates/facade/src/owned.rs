//! A value one OS thread owns: the explorer's per-step bookkeeping.
//!
//! Under the explorer every model CPU is a shuttle task on the one OS
//! thread that explores, and the trace and the wait channels' waiters are
//! touched at every step. A lock there costs a locked instruction or two
//! per step, and on this project's machine those were 15% of an explored
//! execution's time (`std`'s mutex), then 8% (a spin lock): an
//! uncontended `lock cmpxchg` still costs tens of cycles. [`ThreadOwned`]
//! takes none: the first thread that reaches the value owns it, and every
//! later access checks, with a plain load and a thread-local read, that it
//! comes from that thread. An access from another thread is a defect of
//! the caller and panics, as does a reentrant one.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicU64, Ordering};

/// Tokens for threads (0: none yet).
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static TOKEN: Cell<u64> = const { Cell::new(0) };
}

/// This thread's token, taken at its first use.
#[inline]
fn token() -> u64 {
    TOKEN.with(|t| {
        let v = t.get();
        if v != 0 {
            return v;
        }
        let v = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        t.set(v);
        v
    })
}

/// A value that only the thread that first reaches it may reach again.
pub(crate) struct ThreadOwned<T> {
    /// The owning thread's token (0: not reached yet).
    owner: AtomicU64,
    /// A borrow of `v` is live (reached only by the owner).
    busy: Cell<bool>,
    v: UnsafeCell<T>,
}

// SAFETY: `busy` and `v` are reached only through `with`, which first
// checks that the calling thread is the owner (claiming the value if it
// has none), so they are never reached from two threads; `T: Send`
// because the value may be made on one thread and owned by another, and
// dropped on any (dropping takes it by `&mut`, exclusively).
unsafe impl<T: Send> Sync for ThreadOwned<T> {}

impl<T> ThreadOwned<T> {
    pub(crate) const fn new(v: T) -> Self {
        ThreadOwned {
            owner: AtomicU64::new(0),
            busy: Cell::new(false),
            v: UnsafeCell::new(v),
        }
    }

    /// Runs `f` on the value. Panics when called from a thread other than
    /// the one that first called it, or from within `f`.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let me = token();
        let o = self.owner.load(Ordering::Relaxed);
        if o != me {
            self.claim(o, me);
        }
        assert!(!self.busy.replace(true), "ThreadOwned: reentrant use");
        struct Done<'a>(&'a Cell<bool>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _done = Done(&self.busy);
        // SAFETY: this thread owns the value (checked above) and holds its
        // only borrow (`busy` was clear, and is set until `f` returns or
        // unwinds).
        f(unsafe { &mut *self.v.get() })
    }

    #[cold]
    fn claim(&self, o: u64, me: u64) {
        // Relaxed: what the making thread wrote into the value reaches this
        // one by however the value itself was handed over (an `Arc` sent
        // to it, a thread spawned with it), not through `owner`.
        let claimed = o == 0
            && self
                .owner
                .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        assert!(claimed, "ThreadOwned: reached from a second OS thread");
    }
}

#[cfg(test)]
mod tests {
    use super::ThreadOwned;
    use std::sync::Arc;

    #[test]
    fn the_first_thread_owns_it() {
        let v = Arc::new(ThreadOwned::new(Vec::<u32>::new()));
        v.with(|x| x.push(1));
        v.with(|x| x.push(2));
        assert_eq!(v.with(|x| x.clone()), [1, 2]);
        let w = v.clone();
        let other = std::thread::spawn(move || w.with(|x| x.len()));
        assert!(other.join().is_err(), "a second thread reached the value");
    }

    #[test]
    fn a_value_made_on_one_thread_is_owned_by_the_first_to_use_it() {
        let v = Arc::new(ThreadOwned::new(7u32));
        let w = v.clone();
        assert_eq!(
            std::thread::spawn(move || w.with(|x| *x)).join().unwrap(),
            7
        );
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.with(|x| *x)));
        assert!(r.is_err());
    }

    #[test]
    fn reentrant_use_panics() {
        let v = ThreadOwned::new(0u32);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            v.with(|_| v.with(|x| *x));
        }));
        assert!(r.is_err());
        // The outer borrow ended as it unwound.
        assert_eq!(v.with(|x| *x), 0);
    }
}
