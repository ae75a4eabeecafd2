//! Snapshots of a booted machine: an arena the model allocates from,
//! copied once after set-up and copied back before each execution.
//!
//! An explored execution boots a machine, runs the scenario's CPUs, tears
//! the machine down and drops it. Set-up is the same every time, so the
//! explorer can do it once ([`Arena`]): while a thread's arena is on
//! ([`Arena::on`]), every heap block the model allocates on that thread
//! comes from one region of memory, the arena, and the allocator's own
//! state (its bump pointer and free lists) lives at the start of that
//! region. After set-up the explorer copies the used part of the region
//! aside ([`Arena::save`]); before each later execution it copies it back
//! ([`Arena::restore`]). Every object is then where it was, holding what it
//! held, pointing where it pointed, with the allocator's state to match:
//! the machine is booted again by one `memcpy`, whatever its object graph
//! (`Arc`s, boxed RCU callbacks, lazily allocated storage), and without a
//! deep copy written for each model type. The objects an execution leaves
//! behind are not dropped: the next restore overwrites them.
//!
//! That is sound only if nothing outside the arena points into it across a
//! restore, and the arena points outside only at what outlives every
//! execution. So:
//!
//! * The arena serves only the model. The facade turns it off
//!   ([`pause`]) wherever the model's thread runs somebody else's code that
//!   allocates for itself: shuttle's scheduler and its context switches
//!   (`sched`), and the DPOR recorder's logs ([`crate::dpor`]). The
//!   explorer turns it on only around model code: the tasks' bodies and
//!   teardown.
//! * What an execution reports (violations, its trace) is copied out with
//!   the arena off, before the next restore.
//! * Freeing goes by address, not by the switch: a block inside the arena
//!   goes back to it, whoever frees it and whenever.
//! * The arena is per OS thread (each exploring worker has its own), and
//!   it never moves, so restored pointers stay valid.
//!
//! [`Arena::live`] counts the arena's blocks: the explorer's checked mode
//! drops each execution's machine instead of abandoning it, and an
//! execution that leaves more blocks than dropping the snapshot's machine
//! leaves is an object that outlived its execution, reported as a defect.
//!
//! Blocks are powers of two, from 16 bytes, aligned to their size up to a
//! page; each size has a free list. A request the arena cannot serve (it
//! is full, or it asks for more than a page of alignment) goes to the
//! system allocator and is noted ([`Arena::spilled`]): a snapshot taken
//! with such a block outside it is refused. The region is reserved with
//! `MAP_NORESERVE`, so only the pages used cost memory.
//!
//! The global allocator that serves arenas is [`crate::dpor::TrackingAlloc`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Size classes: blocks of 16 bytes (class 4) up to 2^(CLASSES-1).
const CLASSES: usize = 48;
/// Class of the smallest block.
const MIN_CLASS: u32 = 4;
/// The largest alignment the arena serves (and that of larger blocks).
const MAX_ALIGN: usize = 4096;
/// Where blocks begin: the header has the first page.
const FIRST: usize = 4096;
/// The region reserved for an arena (virtual memory: only the pages used
/// are backed).
pub const DEFAULT_SIZE: usize = 1 << 30;

/// The allocator's state, at the start of the region: restored with it.
#[repr(C)]
struct Header {
    /// Offset of the first byte never handed out.
    bump: usize,
    /// Offset of the first free block of each class (0: none); a free
    /// block holds the offset of the next.
    free: [usize; CLASSES],
    /// Blocks handed out and not freed.
    live: usize,
}

thread_local! {
    /// This thread's arena: its region, or null.
    static BASE: Cell<*mut u8> = const { Cell::new(null_mut()) };
    /// Its size.
    static SIZE: Cell<usize> = const { Cell::new(0) };
    /// Whether the model's allocations on this thread go to it now.
    static ON: Cell<bool> = const { Cell::new(false) };
    /// A request it could not serve went to the system allocator.
    static SPILLED: Cell<bool> = const { Cell::new(false) };
}

/// Arenas in the process (0: the allocator need not look).
static ARENAS: AtomicUsize = AtomicUsize::new(0);

/// Slots for the regions of the process's arenas (base, size; 0 when the
/// slot is free): a block of another thread's arena freed on this one is
/// left alone, not handed to the system allocator.
const REGIONS: usize = 64;
static REGION: [(AtomicUsize, AtomicUsize); REGIONS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; REGIONS];

/// Slots of [`REGION`] ever used (a prefix): what [`in_any`] scans.
static REGIONS_USED: AtomicUsize = AtomicUsize::new(0);

/// Whether `a` is inside some thread's arena.
fn in_any(a: usize) -> bool {
    let n = REGIONS_USED.load(Ordering::Acquire);
    REGION[..n].iter().any(|(b, s)| {
        let b = b.load(Ordering::Acquire);
        b != 0 && a >= b && a < b + s.load(Ordering::Acquire)
    })
}

/// This thread's arena: the region, its use and its saved image.
///
/// Not `Send`: it belongs to the thread that made it, which allocates from
/// it. One per thread at a time.
#[derive(Debug)]
pub struct Arena {
    base: *mut u8,
    size: usize,
    /// The region's used part as [`Arena::save`] found it.
    image: Vec<u8>,
}

impl Arena {
    /// Reserves an arena of `size` bytes for this thread, off. `None` when
    /// the thread has one already or the memory cannot be reserved.
    pub fn new(size: usize) -> Option<Arena> {
        if !BASE.with(|b| b.get().is_null()) || size < 2 * FIRST {
            return None;
        }
        // SAFETY: an anonymous private mapping; no address is imposed.
        let p = unsafe {
            libc::mmap(
                null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let base = p as *mut u8;
        let Some(i) = REGION.iter().position(|(_, s)| {
            s.compare_exchange(0, size, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) else {
            // SAFETY: the mapping just made, unused.
            unsafe { libc::munmap(p, size) };
            return None;
        };
        REGION[i].0.store(base as usize, Ordering::Release);
        REGIONS_USED.fetch_max(i + 1, Ordering::AcqRel);
        // SAFETY: the mapping is fresh, zeroed, and large enough for a
        // header, which needs no alignment beyond a page's.
        unsafe {
            (*(base as *mut Header)).bump = FIRST;
        }
        BASE.with(|b| b.set(base));
        SIZE.with(|s| s.set(size));
        SPILLED.with(|s| s.set(false));
        ARENAS.fetch_add(1, Ordering::Relaxed);
        Some(Arena {
            base,
            size,
            image: Vec::new(),
        })
    }

    /// Whether an allocation on this thread now lands in the arena: the
    /// process's global allocator must be [`crate::dpor::TrackingAlloc`].
    pub fn serves(&self) -> bool {
        let _on = self.on();
        let b = Box::new(0u64);
        self.contains(&*b as *const u64 as usize)
    }

    /// Turns the arena on for this thread until the guard drops (the
    /// switch is as it was then).
    pub fn on(&self) -> Switch {
        switch(true)
    }

    /// Whether `addr` is inside the region.
    pub fn contains(&self, addr: usize) -> bool {
        addr >= self.base as usize && addr < self.base as usize + self.size
    }

    /// Copies the region's used part aside, as the state to restore.
    pub fn save(&mut self) {
        let _off = pause();
        let used = self.header().bump;
        self.image.clear();
        self.image.reserve_exact(used);
        // SAFETY: `used` bytes from the base are inside the mapping, and
        // the image has room for them; the two do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base, self.image.as_mut_ptr(), used);
            self.image.set_len(used);
        }
    }

    /// Copies the saved state back over the region: every block and the
    /// allocator's state are as [`Arena::save`] found them.
    ///
    /// # Safety
    ///
    /// Nothing may use a block of the arena across the call other than
    /// through the saved state's own pointers: every object allocated since
    /// the save, and every reference into the arena taken since (a clone of
    /// an `Arc` it holds, say), must be gone or forgotten.
    pub unsafe fn restore(&self) {
        // SAFETY: the image came from this region and fits it; the
        // caller vouches that nothing reads it meanwhile.
        unsafe {
            std::ptr::copy_nonoverlapping(self.image.as_ptr(), self.base, self.image.len());
        }
    }

    /// Bytes the saved state holds (what a restore copies).
    pub fn saved_bytes(&self) -> usize {
        self.image.len()
    }

    /// Blocks handed out and not freed.
    pub fn live(&self) -> usize {
        self.header().live
    }

    /// Whether a request went to the system allocator since the arena was
    /// made or since the last call (which clears the note).
    pub fn spilled(&self) -> bool {
        SPILLED.with(|s| s.replace(false))
    }

    fn header(&self) -> &Header {
        // SAFETY: the header is at the base of the live mapping.
        unsafe { &*(self.base as *const Header) }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        ON.with(|o| o.set(false));
        BASE.with(|b| b.set(null_mut()));
        SIZE.with(|s| s.set(0));
        ARENAS.fetch_sub(1, Ordering::Relaxed);
        if let Some(slot) = REGION
            .iter()
            .find(|(b, _)| b.load(Ordering::Acquire) == self.base as usize)
        {
            slot.0.store(0, Ordering::Release);
            slot.1.store(0, Ordering::Release);
        }
        // SAFETY: the mapping is this arena's; its blocks are abandoned
        // with it (whoever keeps one has broken `restore`'s contract).
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.size);
        }
    }
}

/// The arena switch of this thread, put back as it was when dropped.
#[derive(Debug)]
#[must_use]
pub struct Switch(bool);

impl Drop for Switch {
    fn drop(&mut self) {
        let was = self.0;
        let _ = ON.try_with(|o| o.set(was));
    }
}

fn switch(on: bool) -> Switch {
    Switch(ON.try_with(|o| o.replace(on)).unwrap_or(false))
}

/// Turns this thread's arena off until the guard drops: code that
/// allocates for itself, not for the model (a scheduler, a log).
#[inline]
pub fn pause() -> Switch {
    switch(false)
}

/// Whether a block allocated (`alloc`) or freed at `addr` on this thread
/// now is the model's, as far as the arena can tell: with an arena, every
/// block allocated while it is on and every block of it freed, whenever;
/// not what the scheduler or the recorder allocate for themselves with it
/// paused. Without one, every block. (Loom records nothing.)
#[cfg(not(loom))]
pub(crate) fn models(addr: usize, alloc: bool) -> bool {
    let none = BASE.try_with(|b| b.get().is_null()).unwrap_or(true);
    none || ON.try_with(|o| o.get()).unwrap_or(false) || !alloc && in_own(addr)
}

/// Whether `a` is inside this thread's arena (false without one).
fn in_own(a: usize) -> bool {
    BASE.try_with(|b| {
        let b = b.get() as usize;
        b != 0 && a >= b && a < b + SIZE.with(|s| s.get())
    })
    .unwrap_or(false)
}

/// Turns this thread's arena on until the guard drops, if it has one:
/// the model's own code (see the module doc).
#[inline]
pub fn resume() -> Switch {
    switch(BASE.try_with(|b| !b.get().is_null()).unwrap_or(false))
}

/// Turns this thread's arena off (an explorer's main task, between its
/// model's regions, whatever a task's unwinding left the switch at).
pub fn off() {
    let _ = ON.try_with(|o| o.set(false));
}

/// The class of a request: the power of two that holds it, aligned.
fn class_of(l: Layout) -> Option<usize> {
    if l.align() > MAX_ALIGN {
        return None;
    }
    let n = l.size().max(l.align()).max(1 << MIN_CLASS);
    let c = n.next_power_of_two().trailing_zeros() as usize;
    (c < CLASSES).then_some(c)
}

/// A block from this thread's arena, if it is on (`None`: the system
/// allocator's turn).
#[inline]
pub(crate) fn alloc(l: Layout) -> Option<*mut u8> {
    if ARENAS.load(Ordering::Relaxed) == 0 || !ON.try_with(|o| o.get()).unwrap_or(false) {
        return None;
    }
    alloc_slow(l)
}

#[cold]
fn alloc_slow(l: Layout) -> Option<*mut u8> {
    let base = BASE.with(|b| b.get());
    if base.is_null() {
        // A switch turned on again after its arena went.
        return None;
    }
    let size = SIZE.with(|s| s.get());
    let got = class_of(l).and_then(|c| {
        // SAFETY: the header is at the base of this thread's live mapping,
        // and only this thread reaches it.
        let h = unsafe { &mut *(base as *mut Header) };
        let off = if h.free[c] != 0 {
            let off = h.free[c];
            // SAFETY: a free block of this arena holds the next's offset.
            h.free[c] = unsafe { *(base.add(off) as *const usize) };
            off
        } else {
            let block = 1usize << c;
            let at = h.bump.next_multiple_of(block.min(MAX_ALIGN));
            if at.checked_add(block)? > size {
                return None;
            }
            h.bump = at + block;
            at
        };
        h.live += 1;
        // SAFETY: the block is inside the mapping.
        Some(unsafe { base.add(off) })
    });
    if got.is_none() {
        SPILLED.with(|s| s.set(true));
    }
    got
}

/// Gives `p` back to this thread's arena if it is one of its blocks.
///
/// # Safety
///
/// `p` and `l` are a block and its layout, as `GlobalAlloc::dealloc` has
/// them.
#[inline]
pub(crate) unsafe fn free(p: *mut u8, l: Layout) -> bool {
    if ARENAS.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let Ok(base) = BASE.try_with(|b| b.get()) else {
        return false;
    };
    let size = SIZE.with(|s| s.get());
    let a = p as usize;
    if base.is_null() || a < base as usize || a >= base as usize + size {
        // Another thread's block: its arena is restored or unmapped by
        // its owner; freeing it here would race with that thread.
        return in_any(a);
    }
    let c = class_of(l).expect("an arena block has a class");
    let off = a - base as usize;
    // SAFETY: the header is at the base of this thread's mapping; the block
    // is free now and at least a word long.
    unsafe {
        let h = &mut *(base as *mut Header);
        *(p as *mut usize) = h.free[c];
        h.free[c] = off;
        h.live -= 1;
    }
    true
}

/// The system allocator's `realloc`, or a move within or out of the arena.
///
/// # Safety
///
/// As `GlobalAlloc::realloc`.
pub(crate) unsafe fn realloc(p: *mut u8, l: Layout, n: usize) -> Option<*mut u8> {
    if ARENAS.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mine = in_own(p as usize);
    let on = ON.try_with(|o| o.get()).unwrap_or(false);
    let foreign = !mine && in_any(p as usize);
    if !mine && !on && !foreign {
        return None;
    }
    // SAFETY: the caller's contract: `l.align()` is a power of two and `n`
    // rounded to it does not overflow.
    let nl = unsafe { Layout::from_size_align_unchecked(n, l.align()) };
    // SAFETY: as `GlobalAlloc::alloc`, and `nl` has a nonzero size.
    let q = alloc(nl).unwrap_or_else(|| unsafe { System.alloc(nl) });
    if q.is_null() {
        return Some(q);
    }
    // SAFETY: both blocks are live and hold at least the smaller size. A
    // block of another thread's arena is copied and left there (`free`).
    unsafe {
        std::ptr::copy_nonoverlapping(p, q, l.size().min(n));
        if !free(p, l) {
            System.dealloc(p, l);
        }
    }
    Some(q)
}
