//! The real kernel's `pin_user_pages_fast()`, reached from user space.
//!
//! `io_uring_register(IORING_REGISTER_BUFFERS)` pins a fixed buffer with
//! `pin_user_pages_fast(FOLL_WRITE | FOLL_LONGTERM)` (`io_sqe_buffer_register`
//! → `io_pin_pages`), and `IORING_UNREGISTER_BUFFERS` unpins it. Timing the
//! two calls on a buffer of `n` pages gives the kernel's cost per page of a
//! long-term GUP-fast pin and of its unpin, with io_uring's own bookkeeping
//! (a `bio_vec` per page, the accounting of the pinned folios) on top, so the
//! figure is an upper bound of `pin_user_pages_fast()` alone.
//!
//! The ring is set up with the raw system calls (no ring is mapped: only
//! the register calls are used). A 4 KiB buffer is `MADV_NOHUGEPAGE`; a
//! 2 MiB one is 2 MiB-aligned and `MADV_HUGEPAGE`, and is used only if the
//! kernel actually backed it with huge pages (`AnonHugePages` in
//! `/proc/self/smaps_rollup`).
//!
//! This is the only module of the binary with `unsafe` code: the system
//! calls, and the buffer, which is memory the kernel pins and so must stay
//! mapped until it is unregistered.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// `IORING_REGISTER_BUFFERS`.
const IORING_REGISTER_BUFFERS: libc::c_uint = 0;
/// `IORING_UNREGISTER_BUFFERS`.
const IORING_UNREGISTER_BUFFERS: libc::c_uint = 1;
/// 2 MiB.
const HUGE: usize = 2 << 20;

/// An io_uring instance, used only to register buffers.
#[derive(Debug)]
pub struct Ring {
    fd: OwnedFd,
}

fn errno_text(what: &str) -> String {
    let e = std::io::Error::last_os_error();
    let hint = match e.raw_os_error() {
        Some(libc::ENOSYS) => " (the kernel has no io_uring)",
        Some(libc::EPERM) => " (io_uring is disabled: sysctl kernel.io_uring_disabled)",
        Some(libc::ENOMEM) => " (RLIMIT_MEMLOCK too small for the pinned buffer)",
        _ => "",
    };
    format!("{what}: {e}{hint}")
}

/// Raises `RLIMIT_MEMLOCK`'s soft limit to its hard limit (io_uring charges
/// registered buffers to it unless the caller has `CAP_IPC_LOCK`), and as
/// far as `bytes` if it may (as root). Returns the soft limit in force.
pub fn raise_memlock(bytes: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through the pointer, which is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return 0;
    }
    if r.rlim_cur >= bytes {
        return r.rlim_cur;
    }
    let want = libc::rlimit {
        rlim_cur: bytes.max(r.rlim_max),
        rlim_max: bytes.max(r.rlim_max),
    };
    // SAFETY: setrlimit reads one `rlimit` through the pointer, which is valid.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &want) } == 0 {
        return want.rlim_cur;
    }
    let soft = libc::rlimit {
        rlim_cur: r.rlim_max,
        rlim_max: r.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &soft) } == 0 {
        return soft.rlim_cur;
    }
    r.rlim_cur
}

impl Ring {
    /// `io_uring_setup(4, &params)`.
    pub fn new() -> Result<Ring, String> {
        // struct io_uring_params is 120 bytes; all zero asks for defaults.
        let mut params = [0u32; 30];
        // SAFETY: io_uring_setup reads and writes the 120-byte params
        // struct through the pointer, which covers it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_io_uring_setup,
                4 as libc::c_uint,
                params.as_mut_ptr(),
            )
        };
        if fd < 0 {
            return Err(errno_text("io_uring_setup"));
        }
        // SAFETY: the kernel just returned this descriptor to us; nothing
        // else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        Ok(Ring { fd })
    }

    /// Registers `buf` as the ring's one fixed buffer (pins it) and
    /// unregisters it (unpins it); returns how long each call took.
    pub fn pin_unpin(&self, buf: &Buffer) -> Result<(Duration, Duration), String> {
        let iov = libc::iovec {
            iov_base: buf.ptr.cast(),
            iov_len: buf.len,
        };
        let t0 = Instant::now();
        // SAFETY: io_uring_register reads one iovec through the pointer; the
        // memory it names is our mapping, which stays mapped until `buf` is
        // dropped, after the unregister below (Buffer's invariant).
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.fd.as_raw_fd(),
                IORING_REGISTER_BUFFERS,
                &iov as *const libc::iovec,
                1 as libc::c_uint,
            )
        };
        let reg = t0.elapsed();
        if r < 0 {
            return Err(errno_text("IORING_REGISTER_BUFFERS"));
        }
        let t1 = Instant::now();
        // SAFETY: no argument memory.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.fd.as_raw_fd(),
                IORING_UNREGISTER_BUFFERS,
                std::ptr::null::<libc::c_void>(),
                0 as libc::c_uint,
            )
        };
        let unreg = t1.elapsed();
        if r < 0 {
            return Err(errno_text("IORING_UNREGISTER_BUFFERS"));
        }
        Ok((reg, unreg))
    }
}

/// An anonymous private mapping, faulted in, to be pinned.
///
/// # Invariants
/// `ptr..ptr + len` lies inside the mapping `map..map + map_len`, which this
/// value owns and unmaps on drop; nothing registered with a ring outlives it
/// (every [`Ring::pin_unpin`] unregisters before returning).
#[derive(Debug)]
pub struct Buffer {
    map: *mut libc::c_void,
    map_len: usize,
    ptr: *mut u8,
    len: usize,
}

fn anon_huge_kib() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("AnonHugePages:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

impl Buffer {
    /// `len` bytes (a multiple of 2 MiB), 2 MiB-aligned, faulted in; with
    /// `huge`, backed by transparent huge pages (or an error saying why not),
    /// without, by 4 KiB pages only.
    pub fn new(len: usize, huge: bool) -> Result<Buffer, String> {
        let map_len = len + HUGE;
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(errno_text("mmap"));
        }
        let off = (HUGE - (map as usize) % HUGE) % HUGE;
        // SAFETY: off < HUGE and len + HUGE = map_len: inside the mapping.
        let ptr = unsafe { map.cast::<u8>().add(off) };
        // INVARIANT: ptr..ptr + len is inside the mapping we own.
        let buf = Buffer {
            map,
            map_len,
            ptr,
            len,
        };
        let advice = if huge {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        let before = anon_huge_kib();
        // SAFETY: advice on our own mapping.
        if unsafe { libc::madvise(ptr.cast(), len, advice) } != 0 && huge {
            return Err(errno_text("madvise(MADV_HUGEPAGE)"));
        }
        // SAFETY: the range is ours, mapped read-write, and nothing else
        // refers to it yet.
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        for chunk in bytes.chunks_mut(4096) {
            chunk[0] = 1;
        }
        if huge {
            let got = anon_huge_kib().saturating_sub(before);
            if got * 1024 < len as u64 / 2 {
                let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
                    .unwrap_or_default();
                return Err(format!(
                    "THP did not back the buffer (AnonHugePages +{got} KiB; transparent_hugepage/enabled: {})",
                    mode.trim()
                ));
            }
        }
        Ok(buf)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours (invariant) and no ring holds it.
        unsafe {
            libc::munmap(self.map, self.map_len);
        }
    }
}
