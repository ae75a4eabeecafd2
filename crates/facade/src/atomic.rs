//! std's atomics, each access recorded for the DPOR scheduler.
//!
//! Each type is a transparent wrapper around std's and has the part of its
//! interface the model uses. A load is a read of the atomic's address; a
//! store, a swap and a read-modify-write are writes; a compare-exchange is a
//! write when it succeeds and a read when it fails. Recording costs nothing
//! but one never-taken branch unless a DPOR exploration runs
//! ([`crate::dpor`]).

#![allow(clippy::disallowed_types)] // This is where std's atomics are wrapped.

use crate::dpor;
use std::sync::atomic::{self as sa, Ordering};

macro_rules! atomic {
    ($(#[$m:meta])* $name:ident, $t:ty) => {
        $(#[$m])*
        #[repr(transparent)]
        #[derive(Default)]
        pub struct $name(sa::$name);

        impl $name {
            /// A new atomic holding `v`.
            #[inline(always)]
            pub const fn new(v: $t) -> Self {
                $name(sa::$name::new(v))
            }

            #[inline(always)]
            fn addr(&self) -> usize {
                self as *const Self as usize
            }

            /// Loads the value (a read).
            #[inline(always)]
            pub fn load(&self, o: Ordering) -> $t {
                let r = self.0.load(o);
                dpor::read(self.addr());
                r
            }

            /// Stores `v` (a write).
            #[inline(always)]
            pub fn store(&self, v: $t, o: Ordering) {
                dpor::write(self.addr());
                self.0.store(v, o)
            }

            /// Swaps in `v` (a write).
            #[inline(always)]
            pub fn swap(&self, v: $t, o: Ordering) -> $t {
                let r = self.0.swap(v, o);
                dpor::write(self.addr());
                r
            }

            /// Compare-and-exchange: a write if it succeeds, a read if not.
            #[inline(always)]
            pub fn compare_exchange(
                &self,
                current: $t,
                new: $t,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$t, $t> {
                let r = self.0.compare_exchange(current, new, success, failure);
                dpor::access(self.addr(), if r.is_ok() { dpor::WRITE } else { dpor::READ });
                r
            }

            /// Weak compare-and-exchange: as [`Self::compare_exchange`].
            #[inline(always)]
            pub fn compare_exchange_weak(
                &self,
                current: $t,
                new: $t,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$t, $t> {
                let r = self.0.compare_exchange_weak(current, new, success, failure);
                dpor::access(self.addr(), if r.is_ok() { dpor::WRITE } else { dpor::READ });
                r
            }

            /// Bitwise and (a write).
            #[inline(always)]
            pub fn fetch_and(&self, v: $t, o: Ordering) -> $t {
                let r = self.0.fetch_and(v, o);
                dpor::write(self.addr());
                r
            }

            /// Bitwise or (a write).
            #[inline(always)]
            pub fn fetch_or(&self, v: $t, o: Ordering) -> $t {
                let r = self.0.fetch_or(v, o);
                dpor::write(self.addr());
                r
            }

            /// Bitwise xor (a write).
            #[inline(always)]
            pub fn fetch_xor(&self, v: $t, o: Ordering) -> $t {
                let r = self.0.fetch_xor(v, o);
                dpor::write(self.addr());
                r
            }

            /// The value, through exclusive access (no other task can see it).
            #[inline(always)]
            pub fn get_mut(&mut self) -> &mut $t {
                self.0.get_mut()
            }

            /// The value, consuming the atomic.
            #[inline(always)]
            pub fn into_inner(self) -> $t {
                self.0.into_inner()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl From<$t> for $name {
            fn from(v: $t) -> Self {
                $name::new(v)
            }
        }
    };
}

macro_rules! atomic_int {
    ($(#[$m:meta])* $name:ident, $t:ty) => {
        atomic!($(#[$m])* $name, $t);

        impl $name {
            /// Adds (a write).
            #[inline(always)]
            pub fn fetch_add(&self, v: $t, o: Ordering) -> $t {
                let r = self.0.fetch_add(v, o);
                dpor::write(self.addr());
                r
            }

            /// Subtracts (a write).
            #[inline(always)]
            pub fn fetch_sub(&self, v: $t, o: Ordering) -> $t {
                let r = self.0.fetch_sub(v, o);
                dpor::write(self.addr());
                r
            }

            /// Maximum (a write).
            #[inline(always)]
            pub fn fetch_max(&self, v: $t, o: Ordering) -> $t {
                let r = self.0.fetch_max(v, o);
                dpor::write(self.addr());
                r
            }

            /// Minimum (a write).
            #[inline(always)]
            pub fn fetch_min(&self, v: $t, o: Ordering) -> $t {
                let r = self.0.fetch_min(v, o);
                dpor::write(self.addr());
                r
            }
        }
    };
}

atomic!(
    /// `std::sync::atomic::AtomicBool`, recorded.
    AtomicBool,
    bool
);
atomic_int!(
    /// `std::sync::atomic::AtomicI32`, recorded.
    AtomicI32,
    i32
);
atomic_int!(
    /// `std::sync::atomic::AtomicI64`, recorded.
    AtomicI64,
    i64
);
atomic_int!(
    /// `std::sync::atomic::AtomicU8`, recorded.
    AtomicU8,
    u8
);
atomic_int!(
    /// `std::sync::atomic::AtomicU16`, recorded.
    AtomicU16,
    u16
);
atomic_int!(
    /// `std::sync::atomic::AtomicU32`, recorded.
    AtomicU32,
    u32
);
atomic_int!(
    /// `std::sync::atomic::AtomicU64`, recorded.
    AtomicU64,
    u64
);
atomic_int!(
    /// `std::sync::atomic::AtomicUsize`, recorded.
    AtomicUsize,
    usize
);
