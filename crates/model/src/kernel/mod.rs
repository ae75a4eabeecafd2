//! The non-mm parts of the kernel the model needs: model CPUs, RCU.
//!
//! `kernel/rcu/` in Linux; `include/linux/rcupdate.h` for the API, and the
//! per-CPU world of `include/linux/smp.h`.

pub mod cpu;
pub mod rcupdate;
