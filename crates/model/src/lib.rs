//! mmsim-model: Linux v6.18's lockless memory-management paths, executable.
//!
//! The layers, bottom up, each a folder:
//!
//! * [`kernel`]: model CPUs ([`kernel::cpu`]) and RCU ([`kernel::rcupdate`]).
//! * [`mm`]: the memory-management code, one module per kernel file.
//! * [`fs`]: what of `fs/` reads memory-management state (`/proc/kpageflags`).
//! * [`detect`]: the detectors that record violations;
//!   [`safeguards`]: the named protective steps a run can switch off.
//! * [`machine`]: the machine that owns all of it and hands out CPUs.
//!
//! Everything shared between CPUs goes through `mmsim-facade` (atomics,
//! locks, scheduling points), so the same code runs on real threads, under
//! the deterministic explorer, and (the small protocol kernels) under loom.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod detect;
pub mod errno;
pub mod fs;
pub mod kernel;
pub mod machine;
pub mod mm;
pub mod safeguards;
pub mod types;

pub use config::KernelConfig;
pub use errno::Errno;
pub use kernel::cpu::Cpu;
pub use machine::{Arch, Machine, MachineConfig, RangeConfig, RangeKind};
pub use types::{Pfn, PhysAddr, VirtAddr};
