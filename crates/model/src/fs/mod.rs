//! File systems: the parts of `fs/` that reach memory-management state.
//!
//! [`proc_page`]: `/proc/kpageflags`, a pfn walker that reads struct pages
//! with no reference and no lock.

pub mod proc_page;
