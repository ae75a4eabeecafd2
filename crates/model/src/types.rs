//! Typed addresses: page frame numbers, physical and virtual addresses.
//!
//! As in rust-osdev's `x86_64`: newtypes with hex `Debug`, `new` that
//! panics on a value that cannot be an address and `try_new` that returns
//! `None`; arithmetic is checked (`checked_*` returns `None` on overflow) and
//! the few wrapping operations say so in their names.

use std::fmt;

/// `PAGE_SHIFT`: 4 KiB pages.
pub const PAGE_SHIFT: u32 = 12;
/// `PAGE_SIZE`.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// `PMD_SHIFT` for 4-level x86-64 tables: one PMD entry maps 2 MiB.
pub const PMD_SHIFT: u32 = 21;
/// `PMD_SIZE`.
pub const PMD_SIZE: u64 = 1 << PMD_SHIFT;
/// `HPAGE_PMD_ORDER`: the order of a PMD-mapped THP.
pub const HPAGE_PMD_ORDER: u32 = PMD_SHIFT - PAGE_SHIFT;
/// `MAX_PAGE_ORDER`: the buddy allocator's largest order (4 MiB blocks).
pub const MAX_PAGE_ORDER: u32 = 10;
/// Physical addresses are 46 bits wide (x86-64 with 4-level tables).
pub const PHYS_BITS: u32 = 46;
/// User virtual addresses are below 2^47 (`TASK_SIZE_MAX`).
pub const TASK_SIZE_MAX: u64 = (1 << 47) - PAGE_SIZE;

/// The ceiling page-table freeing works up to when nothing maps above
/// (x86-64's `USER_PGTABLES_CEILING` is 0, "no ceiling": the top of the
/// user half, where the last PGD entry's span ends).
pub const USER_PGTABLES_CEILING: u64 = 1 << 47;

/// A page frame number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(u64);

impl Pfn {
    /// The largest pfn a physical address of [`PHYS_BITS`] can name.
    pub const MAX: u64 = (1 << (PHYS_BITS - PAGE_SHIFT)) - 1;

    /// A pfn; panics if it cannot name a physical page.
    pub const fn new(v: u64) -> Pfn {
        assert!(v <= Pfn::MAX, "pfn beyond the physical address width");
        Pfn(v)
    }

    /// A pfn, or `None` if it cannot name a physical page.
    pub const fn try_new(v: u64) -> Option<Pfn> {
        if v <= Pfn::MAX { Some(Pfn(v)) } else { None }
    }

    /// The raw number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// As an index (pfns fit in `usize` on every 64-bit host).
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }

    /// `self + n`, `None` past [`Pfn::MAX`].
    pub fn checked_add(self, n: u64) -> Option<Pfn> {
        self.0.checked_add(n).and_then(Pfn::try_new)
    }

    /// `self - n`, `None` below zero.
    pub fn checked_sub(self, n: u64) -> Option<Pfn> {
        self.0.checked_sub(n).map(Pfn)
    }

    /// `self + n`, panicking on overflow (for ranges already validated).
    #[allow(clippy::should_implement_trait)] // Not `Add`: it panics, and says so by name.
    pub fn add(self, n: u64) -> Pfn {
        self.checked_add(n).expect("pfn overflow")
    }

    /// Kernel: `PFN_PHYS()`.
    pub const fn phys(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn({:#x})", self.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A physical address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// A physical address; panics beyond [`PHYS_BITS`].
    pub const fn new(v: u64) -> PhysAddr {
        assert!(v < (1 << PHYS_BITS), "physical address too wide");
        PhysAddr(v)
    }

    /// A physical address, or `None` beyond [`PHYS_BITS`].
    pub const fn try_new(v: u64) -> Option<PhysAddr> {
        if v < (1 << PHYS_BITS) {
            Some(PhysAddr(v))
        } else {
            None
        }
    }

    /// The raw address.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Kernel: `PHYS_PFN()`.
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

/// A user virtual address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtAddr(u64);

impl VirtAddr {
    /// A user address; panics at or above 2^47.
    pub const fn new(v: u64) -> VirtAddr {
        assert!(v < (1 << 47), "not a user virtual address");
        VirtAddr(v)
    }

    /// A user address, or `None` at or above 2^47.
    pub const fn try_new(v: u64) -> Option<VirtAddr> {
        if v < (1 << 47) {
            Some(VirtAddr(v))
        } else {
            None
        }
    }

    /// The raw address.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `self + n`, `None` past the user address space.
    pub fn checked_add(self, n: u64) -> Option<VirtAddr> {
        self.0.checked_add(n).and_then(VirtAddr::try_new)
    }

    /// `self - n`, `None` below zero.
    pub fn checked_sub(self, n: u64) -> Option<VirtAddr> {
        self.0.checked_sub(n).map(VirtAddr)
    }

    /// Kernel: `addr & PAGE_MASK`.
    pub const fn page_align_down(self) -> VirtAddr {
        VirtAddr(self.0 & !(PAGE_SIZE - 1))
    }

    /// Rounds down to a multiple of `1 << shift`.
    pub const fn align_down(self, shift: u32) -> VirtAddr {
        VirtAddr(self.0 & !((1u64 << shift) - 1))
    }

    /// Whether the address is a multiple of `1 << shift`.
    pub const fn is_aligned(self, shift: u32) -> bool {
        self.0 & ((1u64 << shift) - 1) == 0
    }

    /// The page number (`addr >> PAGE_SHIFT`).
    pub const fn vpn(self) -> u64 {
        self.0 >> PAGE_SHIFT
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}

impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pfn_arithmetic_is_checked() {
        assert_eq!(Pfn::new(5).checked_add(3), Some(Pfn::new(8)));
        assert_eq!(Pfn::new(Pfn::MAX).checked_add(1), None);
        assert_eq!(Pfn::new(0).checked_sub(1), None);
        assert_eq!(Pfn::new(0x48000).phys().pfn(), Pfn::new(0x48000));
        assert_eq!(format!("{:?}", Pfn::new(0x48000)), "Pfn(0x48000)");
    }

    #[test]
    fn virt_addr_bounds() {
        assert!(VirtAddr::try_new(1 << 47).is_none());
        assert_eq!(
            VirtAddr::new(0x1234).page_align_down(),
            VirtAddr::new(0x1000)
        );
        assert!(VirtAddr::new(0x20_0000).is_aligned(PMD_SHIFT));
        assert_eq!(VirtAddr::new((1 << 47) - 1).checked_add(1), None);
    }
}
