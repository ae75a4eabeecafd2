//! Static keys.
//!
//! Kernel: `include/linux/jump_label.h`, `kernel/jump_label.c`.
//!
//! A static key is a branch patched into the kernel text: reading it costs
//! nothing, and flipping it rewrites every site. `static_branch_inc()`
//! returns after the new text is visible to every CPU (x86 synchronises
//! all cores with an IPI after the patch), so a CPU that tests the key
//! *after* the increment returned sees it on; a CPU that tested it before
//! has already taken the old branch and goes on with it. That is exactly
//! why `hugetlb_vmemmap_optimize_folio()` takes a grace period after the
//! increment: the patch orders later tests, not earlier ones.
//!
//! The model keeps the key as a counter: on while it is non-zero. SeqCst on
//! both sides stands for the text-patching synchronisation (every CPU that
//! tests the key after the increment returned sees it).

use mmsim_facade::{AtomicU32, Ordering};

/// `struct static_key_false` (`DEFINE_STATIC_KEY_FALSE`): off until the
/// first `static_branch_inc()`.
pub struct StaticKeyFalse {
    enabled: AtomicU32,
}

impl Default for StaticKeyFalse {
    fn default() -> Self {
        StaticKeyFalse::new()
    }
}

impl std::fmt::Debug for StaticKeyFalse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "static_key({})", self.count())
    }
}

impl StaticKeyFalse {
    /// `DEFINE_STATIC_KEY_FALSE()`.
    pub fn new() -> Self {
        StaticKeyFalse {
            enabled: AtomicU32::new(0),
        }
    }

    /// Kernel: `static_branch_unlikely()`: whether the key is on.
    #[inline(always)]
    pub fn unlikely(&self) -> bool {
        // SeqCst pairs with the SeqCst increment: the patched text is seen
        // by every test that starts after static_branch_inc() returned.
        self.enabled.load(Ordering::SeqCst) != 0
    }

    /// Kernel: `static_branch_inc()`.
    pub fn inc(&self) {
        self.enabled.fetch_add(1, Ordering::SeqCst);
    }

    /// Kernel: `static_branch_dec()`.
    pub fn dec(&self) {
        self.enabled.fetch_sub(1, Ordering::SeqCst);
    }

    /// `static_key_count()`.
    pub fn count(&self) -> u32 {
        self.enabled.load(Ordering::SeqCst)
    }
}
