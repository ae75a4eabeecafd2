//! The non-mm parts of the kernel the model needs: model CPUs, RCU,
//! `rcu_sync`, per-CPU rw-semaphores and reference counts, completions.
//!
//! `kernel/rcu/`, `kernel/locking/percpu-rwsem.c`, `lib/percpu-refcount.c`
//! in Linux; `include/linux/rcupdate.h` for the API.

pub mod completion;
pub mod cpu;
pub mod fork;
pub mod jump_label;
pub mod percpu_ref;
pub mod percpu_rwsem;
pub mod rcu_sync;
pub mod rcupdate;
