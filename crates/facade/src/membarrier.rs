//! Asymmetric fences, as in liburcu's "memb" flavour.
//!
//! The RCU read side must be nearly free, so a reader must not execute a full
//! fence when it enters or leaves a critical section. Instead the reader uses a
//! [`light`] fence (a compiler barrier) and the rare writer a [`heavy`] one:
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every other
//! running thread of this process execute a full barrier before the call
//! returns (a thread that is not running passes one when it is switched
//! back in). Together, `light()` on one side and `heavy()` on the other order
//! memory as two `smp_mb()` would.
//!
//! Where the system call is missing (an old kernel, a seccomp filter), the
//! fences fall back to `fence(SeqCst)` on both sides: correct, slower readers.
//! Under `--cfg loom` both are `fence(SeqCst)`, which is what loom can check.

#[cfg(not(loom))]
mod imp {
    use std::sync::atomic::{AtomicU8, Ordering, compiler_fence, fence};

    const UNKNOWN: u8 = 0;
    const EXPEDITED: u8 = 1;
    const FALLBACK: u8 = 2;

    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// Registers the process for expedited private membarriers; idempotent.
    /// Every model machine calls it before its CPUs start, so the state is
    /// settled before any reader looks at it.
    pub fn init() {
        if STATE.load(Ordering::Acquire) != UNKNOWN {
            return;
        }
        // SAFETY: membarrier(2) takes two integer arguments (and a cpu id that
        // REGISTER ignores); it touches no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
                0,
            )
        };
        let s = if r == 0 { EXPEDITED } else { FALLBACK };
        // Release pairs with the Acquire above and in `light`/`heavy`: whoever
        // sees EXPEDITED also sees that registration completed.
        let _ = STATE.compare_exchange(UNKNOWN, s, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether readers get away with a compiler barrier.
    pub fn expedited() -> bool {
        STATE.load(Ordering::Acquire) == EXPEDITED
    }

    /// The reader's half: a compiler barrier, paired with [`heavy`].
    #[inline(always)]
    pub fn light() {
        compiler_fence(Ordering::SeqCst);
        // READ_ONCE of a value written once at start-up: the branch is always
        // predicted.
        if STATE.load(Ordering::Relaxed) != EXPEDITED {
            fence(Ordering::SeqCst);
        }
    }

    /// The writer's half where every reader it pairs with runs on this
    /// OS thread (the explorer runs all of a machine's CPUs as tasks of
    /// one thread): program order already orders them, so a compiler
    /// barrier, without the system call that would interrupt every other
    /// running thread of the process.
    #[inline(always)]
    pub fn heavy_one_thread() {
        compiler_fence(Ordering::SeqCst);
    }

    /// The writer's half: a full barrier on every running thread of the
    /// process, paired with every [`light`].
    pub fn heavy() {
        if STATE.load(Ordering::Acquire) == EXPEDITED {
            // SAFETY: as in `init`; PRIVATE_EXPEDITED after registration
            // cannot fail except with EINTR-free errors we treat as fallback.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED,
                    0,
                    0,
                )
            };
            if r == 0 {
                return;
            }
        }
        fence(Ordering::SeqCst);
    }
}

#[cfg(loom)]
mod imp {
    use loom::sync::atomic::{Ordering, fence};

    pub fn init() {}

    pub fn expedited() -> bool {
        false
    }

    pub fn light() {
        fence(Ordering::SeqCst);
    }

    pub fn heavy() {
        fence(Ordering::SeqCst);
    }

    pub fn heavy_one_thread() {
        fence(Ordering::SeqCst);
    }
}

pub use imp::{expedited, heavy, heavy_one_thread, init, light};
