//! The snapshot arena as an allocator: blocks aligned as asked and inside
//! it while it is on, reused once freed, outside it while it is off; and a
//! save and restore that bring back every block and the allocator's state.

#![allow(clippy::disallowed_types)] // std's Box and Vec are the heap blocks under test.

use mmsim_facade::snapshot::{Arena, pause};
use std::alloc::{Layout, alloc, dealloc};

#[global_allocator]
static ALLOC: mmsim_facade::dpor::TrackingAlloc = mmsim_facade::dpor::TrackingAlloc;

#[test]
fn blocks_are_aligned_inside_the_arena_and_reused() {
    let a = Arena::new(64 << 20).expect("an arena");
    assert!(a.serves());
    let _on = a.on();
    let before = a.live();
    let mut blocks = Vec::new();
    {
        let _off = pause();
        blocks.reserve(2000);
    }
    for size in [1usize, 7, 8, 16, 24, 100, 4095, 4096, 5000, 70_000] {
        for align in [1usize, 8, 16, 64, 256, 4096] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a nonzero size.
            let p = unsafe { alloc(l) };
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            assert!(a.contains(p as usize), "size {size} align {align}");
            // SAFETY: the block holds `size` bytes.
            unsafe { std::ptr::write_bytes(p, 0xa5, size) };
            blocks.push((p, l));
        }
    }
    assert_eq!(a.live(), before + blocks.len());
    // Freed blocks are handed out again, aligned for any layout of their
    // size.
    let (p, l) = blocks[3];
    // SAFETY: allocated above with `l`.
    unsafe { dealloc(p, l) };
    // (1 byte aligned to 64: a 64-byte block, which 64 bytes aligned to 8
    // fit too.)
    assert_eq!((l.size(), l.align()), (1, 64));
    let l2 = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: a nonzero size.
    let q = unsafe { alloc(l2) };
    assert_eq!(q, p);
    blocks[3] = (q, l2);
    for (p, l) in blocks.drain(..) {
        // SAFETY: allocated above with `l`.
        unsafe { dealloc(p, l) };
    }
    assert_eq!(a.live(), before);
    assert!(!a.spilled());
}

#[test]
fn off_or_overaligned_goes_to_the_system_allocator() {
    let a = Arena::new(64 << 20).expect("an arena");
    let b = Box::new(1u64);
    assert!(!a.contains(&*b as *const u64 as usize), "off: the system's");
    let _on = a.on();
    let l = Layout::from_size_align(64, 8192).unwrap();
    // SAFETY: a nonzero size.
    let p = unsafe { alloc(l) };
    assert!(!a.contains(p as usize));
    assert!(a.spilled(), "an alignment past a page is noted");
    assert!(!a.spilled(), "and the note is cleared");
    // SAFETY: allocated above with `l`.
    unsafe { dealloc(p, l) };
    // A system block grown while on moves into the arena, and back out
    // when grown while off.
    let mut v: Vec<u64> = {
        let _off = pause();
        Vec::with_capacity(4)
    };
    assert!(!a.contains(v.as_ptr() as usize));
    v.extend(0..100);
    assert!(a.contains(v.as_ptr() as usize));
    {
        let _off = pause();
        v.extend(0..1000);
        assert!(!a.contains(v.as_ptr() as usize));
    }
    assert_eq!(v.len(), 1100);
    assert_eq!(v[150], 50);
}

#[test]
fn a_restore_brings_back_every_block_and_the_allocator() {
    let mut a = Arena::new(64 << 20).expect("an arena");
    let on = a.on();
    let v: Vec<Box<u64>> = (0..100).map(Box::new).collect();
    drop(on);
    let saved = a.live();
    a.save();
    assert!(a.saved_bytes() > 100 * 8);
    let addrs: Vec<usize> = v.iter().map(|b| &**b as *const u64 as usize).collect();
    {
        let _on = a.on();
        // Change, free and allocate after the save.
        let mut v = v;
        *v[7] = 700;
        v.truncate(50);
        v.extend((0..500).map(|i| Box::new(i * 3)));
        let _more: Vec<Box<[u8; 300]>> = (0..50).map(|_| Box::new([1; 300])).collect();
        // Abandoned, as the explorer abandons a machine.
        std::mem::forget(v);
        std::mem::forget(_more);
    }
    // SAFETY: nothing allocated since the save is used after this point
    // (the vectors above were forgotten), and `addrs` are read through the
    // saved state only.
    unsafe { a.restore() };
    assert_eq!(a.live(), saved);
    for (i, &p) in addrs.iter().enumerate() {
        // SAFETY: the block holds the u64 it held at the save.
        assert_eq!(unsafe { *(p as *const u64) }, i as u64);
    }
    // The allocator's state is the saved one: the next block is the one a
    // run right after the save would have got, twice.
    let next = || {
        let _on = a.on();
        let b = Box::new(5u64);
        let p = &*b as *const u64 as usize;
        std::mem::forget(b);
        p
    };
    let first = next();
    // SAFETY: as above.
    unsafe { a.restore() };
    assert_eq!(next(), first);
}
