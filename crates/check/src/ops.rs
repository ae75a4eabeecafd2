//! Running a CPU's operations against the model.
//!
//! Each operation is one [`Cpu::run`]: a fatal violation oopses the CPU and
//! ends its list (as `do_exit()` after an oops would), and an explorer stop
//! unwinds it. An operation that fails with an errno is not a violation: the
//! CPU goes on with the next, as a program that ignores the error would.
//!
//! The start and the result of each operation are notes in the trace (the
//! point `op: start` / `op: result`), so a timeline shows which operation
//! each kernel step belongs to.

use crate::scenario::{GupFn, MRange, Op, OpKind, Prot, Scenario, URange};
use crate::setup::{Child, ChildSlot, Plan, map_vma, pgmap_type, zone_type};
use mmsim_facade::sched::{Event, Point, chan};
use mmsim_facade::{AtomicU64, point};
use mmsim_model::fs::proc_page::kpageflags_read;
use mmsim_model::kernel::cpu::Died;
use mmsim_model::kernel::fork::dup_mm;
use mmsim_model::mm::compaction::compact_memory_range;
use mmsim_model::mm::filemap::{AddressSpace, find_get_page};
use mmsim_model::mm::gup::{
    get_user_pages, get_user_pages_fast, pin_user_pages, pin_user_pages_fast, put_user_pages,
    unpin_user_pages,
};
use mmsim_model::mm::huge_memory::split_huge_pages_pid;
use mmsim_model::mm::hugetlb::alloc_hugetlb_folio;
use mmsim_model::mm::khugepaged::madvise_collapse;
use mmsim_model::mm::ksm::{ksm_merge, ksm_scan_thread_once};
use mmsim_model::mm::memory::{access_user, do_user_addr_fault};
use mmsim_model::mm::memory_hotplug::{
    add_memory, offline_and_remove_memory, offline_memory_block, online_memory_block, remove_memory,
};
use mmsim_model::mm::memremap::{
    kill_dev_dax, memremap_pages, memunmap_pages, unmap_mapping_range,
};
use mmsim_model::mm::migrate::migrate_user_range;
use mmsim_model::mm::mm_types::page_folio;
use mmsim_model::mm::mmap::{self, MmStruct, do_mprotect, do_munmap, madvise_dontneed};
use mmsim_model::mm::page_ref::{folio_put, folio_try_get};
use mmsim_model::mm::sparse::{pfn_to_online_page, pfn_valid};
use mmsim_model::mm::truncate::truncate_inode_pages_range;
use mmsim_model::mm::vmscan::reclaim_file_range;
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Cpu, Errno, Pfn, VirtAddr};
use std::sync::Arc;

/// The trace point of an operation's start (the note names it).
pub static OP_START: &Point = point!("op", "start");
/// The trace point of an operation's result.
pub static OP_RESULT: &Point = point!("op", "result");
/// The trace point of teardown: its start, and each violation it finds.
pub static TEARDOWN: &Point = point!("teardown", "exit_mmap");

/// Why an operation cannot run in this build, if it cannot. The set-up
/// refuses such scenarios before exploring.
pub fn unsupported(op: &Op) -> Option<String> {
    // Every operation of the format runs in this build.
    let _ = op;
    None
}

/// What an operation needs besides its CPU.
pub struct Env<'a> {
    /// The plan (scenario and settings).
    pub plan: &'a Plan,
    /// Every declared process's mm.
    pub mms: &'a [Arc<MmStruct>],
    /// Every forked process's mm, once its fork has made it.
    pub children: &'a [ChildSlot],
    /// Every process's VMA addresses.
    pub vmas: &'a [Vec<AtomicU64>],
}

/// Runs CPU `idx`'s operations in order, then [`Cpu::finish`]. Returns how
/// the CPU ended if it died.
pub fn run_cpu(cpu: &Cpu, env: &Env<'_>, idx: usize) -> Option<Died> {
    let spec = &env.plan.scenario.cpus[idx];
    let mut refs: Vec<Vec<Pfn>> = vec![Vec::new(); spec.refs.len()];
    let tracing = cpu.sched.exploring();
    let mut died = None;
    // A CPU that runs a forked process starts when the fork has made it.
    let mut ops = spec.ops.as_slice();
    if let Some(slot) = spec.process.and_then(|p| env.child_slot(p)) {
        cpu.sched.wait(
            point!("fork", "wait for the child to exist"),
            chan(slot),
            None,
            || !matches!(*slot.0.lock(), Child::NotYet),
        );
        match &*slot.0.lock() {
            Child::Forked(mm) => mmsim_model::mm::mmap::use_mm(cpu, mm),
            _ => ops = &[],
        }
    }
    for (i, op) in ops.iter().enumerate() {
        if tracing {
            let what = env.plan.descriptions[idx][i].clone();
            cpu.sched.note(OP_START, Event::Step, None, Some(what));
        }
        match cpu.run(|| exec(cpu, env, idx, op, &mut refs)) {
            Ok(r) => {
                if tracing {
                    let text = match r {
                        Ok(s) => format!("{} -> {s}", op.name),
                        Err(e) => format!("{} -> {e}", op.name),
                    };
                    cpu.sched.note(OP_RESULT, Event::Step, None, Some(text));
                }
            }
            Err(d) => {
                died = Some(d);
                break;
            }
        }
    }
    // Children this CPU was to fork and did not will never exist.
    for op in &spec.ops {
        if let OpKind::Fork { child } = op.kind
            && let Some(slot) = env.child_slot(child)
        {
            let mut c = slot.0.lock();
            if matches!(*c, Child::NotYet) {
                *c = Child::Never;
                drop(c);
                cpu.sched.wake(chan(slot));
            }
        }
    }
    // The explorer wakes the rcuo kthread after the last CPU
    // (rcupdate::cpu_finished).
    cpu.finish_but_rcuo();
    died
}

impl Env<'_> {
    /// The slot of process `p` if it is a forked one.
    fn child_slot(&self, p: usize) -> Option<&ChildSlot> {
        p.checked_sub(self.mms.len())
            .and_then(|i| self.children.get(i))
    }

    /// Process `p`'s mm, if it exists (yet).
    fn mm(&self, p: usize) -> Option<Arc<MmStruct>> {
        if let Some(mm) = self.mms.get(p) {
            return Some(mm.clone());
        }
        match &*self.child_slot(p)?.0.lock() {
            Child::Forked(mm) => Some(mm.clone()),
            _ => None,
        }
    }
}

/// One line naming an operation and its arguments (the plan keeps them).
pub fn describe(sc: &Scenario, idx: usize, op: &Op) -> String {
    let spec = &sc.cpus[idx];
    let vma_name = |v: usize| {
        spec.process
            .map_or("?", |p| sc.processes[p].vmas[v].name.as_str())
    };
    let ur = |r: &URange| format!("{} pages {}..{}", vma_name(r.vma), r.page, r.page + r.pages);
    let mr = |r: &MRange| match r.block {
        Some(b) => format!("{} block {b}", sc.memory[r.memory].name),
        None => sc.memory[r.memory].name.clone(),
    };
    let args = match &op.kind {
        OpKind::Gup {
            range, flags, as_, ..
        } => {
            let mut f = Vec::new();
            for (bit, n) in [
                (mmsim_model::mm::gup::FOLL_WRITE, "write"),
                (mmsim_model::mm::gup::FOLL_LONGTERM, "longterm"),
                (mmsim_model::mm::gup::FOLL_FAST_ONLY, "fast_only"),
                (mmsim_model::mm::gup::FOLL_FORCE, "force"),
            ] {
                if flags & bit != 0 {
                    f.push(n);
                }
            }
            let mut s = ur(range);
            if !f.is_empty() {
                s += &format!(" [{}]", f.join(", "));
            }
            if let Some(a) = as_ {
                s += &format!(" as {}", spec.refs[*a]);
            }
            s
        }
        OpKind::PutPages { ref_ } | OpKind::UnpinUserPages { ref_ } => spec.refs[*ref_].clone(),
        OpKind::Read { vma, page } => format!("{} page {page}", vma_name(*vma)),
        OpKind::Write { vma, page, value } => {
            format!("{} page {page} = {value:#x}", vma_name(*vma))
        }
        OpKind::Fault { vma, page, write } => format!(
            "{} page {page}{}",
            vma_name(*vma),
            if *write { " (write)" } else { "" }
        ),
        OpKind::Mmap { vma } => {
            let v = spec.process.map(|p| &sc.processes[p].vmas[*vma]);
            match v {
                Some(v) => format!("{} ({} pages, {})", v.name, v.pages, v.backing.name()),
                None => "?".into(),
            }
        }
        OpKind::Madvise { range, advice } => {
            format!("{} ({})", ur(range), format!("{advice:?}").to_lowercase())
        }
        OpKind::Munmap { range }
        | OpKind::MadviseDontneed { range }
        | OpKind::MigratePages { range }
        | OpKind::KsmMerge { range } => ur(range),
        OpKind::KsmScan => String::new(),
        OpKind::AllocHugetlb { range, as_ } => match as_ {
            Some(a) => format!("{} as {}", mr(range), spec.refs[*a]),
            None => mr(range),
        },
        OpKind::Mprotect { range, prot } => format!(
            "{} to {}",
            ur(range),
            match prot {
                Prot::None => "none",
                Prot::Read => "r",
                Prot::ReadWrite => "rw",
            }
        ),
        OpKind::AddMemory(r)
        | OpKind::OfflinePages(r)
        | OpKind::RemoveMemory(r)
        | OpKind::OfflineAndRemoveMemory(r)
        | OpKind::MemremapPages(r)
        | OpKind::MemunmapPages(r)
        | OpKind::UnmapMappingRange(r)
        | OpKind::PfnValid(r)
        | OpKind::PfnWalk(r)
        | OpKind::Compact(r)
        | OpKind::Kpageflags(r) => mr(r),
        OpKind::OnlinePages(r, z) => format!("{} to {z:?}", mr(r)).to_lowercase(),
        OpKind::Fork { child } => format!("as {}", sc.processes[*child].name),
        OpKind::SplitFolio { vma, page } | OpKind::Collapse { vma, page } => {
            format!("{} page {page}", vma_name(*vma))
        }
        OpKind::FindGetPage(r) => format!("{} page {}", sc.files[r.file].name, r.page),
        OpKind::Evict(r) | OpKind::Truncate(r) => format!(
            "{} pages {}..{}",
            sc.files[r.file].name,
            r.page,
            r.page + r.pages
        ),
    };
    format!("{} {args}", op.name)
}

/// The address space of `[[file]]` `f` (set-up registered it with the
/// machine under the file's name).
fn file_of(cpu: &Cpu, env: &Env<'_>, f: usize) -> Result<Arc<AddressSpace>, String> {
    file_by_name(cpu, &env.plan.scenario.files[f].name)
        .ok_or_else(|| "the file does not exist".to_string())
}

/// The machine's file named `name`.
pub fn file_by_name(cpu: &Cpu, name: &str) -> Option<Arc<AddressSpace>> {
    cpu.m
        .address_spaces
        .lock()
        .iter()
        .find(|a| a.name == name)
        .cloned()
}

fn user_addr(env: &Env<'_>, p: usize, vma: usize, page: u64) -> Result<VirtAddr, Errno> {
    match env.vmas[p][vma].load(mmsim_facade::Ordering::Acquire) {
        0 => Err(Errno::EFAULT),
        a => Ok(VirtAddr::new(a + page * PAGE_SIZE)),
    }
}

fn pfns(env: &Env<'_>, cpu: &Cpu, r: &MRange) -> (u64, u64) {
    let (s, e) = env.plan.block_pfns(&cpu.m, r.memory, r.block);
    (s.as_u64(), e.as_u64())
}

/// Runs one operation. `Ok` carries a short description of the result.
fn exec(
    cpu: &Cpu,
    env: &Env<'_>,
    idx: usize,
    op: &Op,
    refs: &mut [Vec<Pfn>],
) -> Result<String, String> {
    let spec = &env.plan.scenario.cpus[idx];
    let proc = spec.process;
    let this_mm = proc.and_then(|p| env.mm(p));
    let mm = || -> Result<(usize, &MmStruct), String> {
        let p = proc.ok_or("this CPU runs no process")?;
        let mm = this_mm
            .as_deref()
            .ok_or("this CPU's process does not exist")?;
        Ok((p, mm))
    };
    let range = |r: &URange| -> Result<(&MmStruct, VirtAddr, u64), String> {
        let (p, mm) = mm()?;
        let a = user_addr(env, p, r.vma, r.page).map_err(|e| format!("{e} (not mapped yet)"))?;
        Ok((mm, a, r.pages))
    };
    let errno = |e: Errno| e.to_string();
    match &op.kind {
        OpKind::Gup {
            func,
            range: r,
            flags,
            as_,
        } => {
            let (mm, a, n) = range(r)?;
            let mut pages = Vec::new();
            let got = match func {
                GupFn::GetUserPagesFast => get_user_pages_fast(cpu, mm, a, n, *flags, &mut pages),
                GupFn::PinUserPagesFast => pin_user_pages_fast(cpu, mm, a, n, *flags, &mut pages),
                GupFn::GetUserPages => get_user_pages(cpu, mm, a, n, *flags, &mut pages),
                GupFn::PinUserPages => pin_user_pages(cpu, mm, a, n, *flags, &mut pages),
            }
            .map_err(errno)?;
            let list: Vec<String> = pages.iter().map(|p| format!("{:#x}", p.as_u64())).collect();
            if let Some(i) = as_ {
                refs[*i].extend(pages);
            }
            Ok(format!(
                "{got} page{}{}",
                if got == 1 { "" } else { "s" },
                if list.is_empty() {
                    String::new()
                } else {
                    format!(" (pfn {})", list.join(", "))
                }
            ))
        }
        OpKind::PutPages { ref_ } => {
            let pages = std::mem::take(&mut refs[*ref_]);
            put_user_pages(cpu, &pages);
            Ok(format!("{} dropped", pages.len()))
        }
        OpKind::UnpinUserPages { ref_ } => {
            let pages = std::mem::take(&mut refs[*ref_]);
            unpin_user_pages(cpu, &pages);
            Ok(format!("{} unpinned", pages.len()))
        }
        OpKind::Read { vma, page } => {
            let (p, mm) = mm()?;
            let a = user_addr(env, p, *vma, *page).map_err(errno)?;
            access_user(cpu, mm, a, None)
                .map(|v| format!("{v:#x}"))
                .map_err(errno)
        }
        OpKind::Write { vma, page, value } => {
            let (p, mm) = mm()?;
            let a = user_addr(env, p, *vma, *page).map_err(errno)?;
            access_user(cpu, mm, a, Some(*value))
                .map(|_| "ok".into())
                .map_err(errno)
        }
        OpKind::Fault { vma, page, write } => {
            let (p, mm) = mm()?;
            let a = user_addr(env, p, *vma, *page).map_err(errno)?;
            let g = mm.mmap_lock.read(&cpu.sched);
            let v = g.find(a).cloned().ok_or_else(|| errno(Errno::EFAULT))?;
            do_user_addr_fault(cpu, mm, &v, a, *write).map_err(errno)?;
            Ok("ok".into())
        }
        OpKind::Mmap { vma } => {
            let (p, mm) = mm()?;
            map_vma(cpu, &env.plan.scenario, mm, env.vmas, p, *vma)
                .map(|a| format!("{:#x}", a.as_u64()))
        }
        OpKind::Munmap { range: r } => {
            let (mm, a, n) = range(r)?;
            do_munmap(cpu, mm, a, n * PAGE_SIZE).map_err(errno)?;
            Ok("ok".into())
        }
        OpKind::MadviseDontneed { range: r } => {
            let (mm, a, n) = range(r)?;
            madvise_dontneed(cpu, mm, a, n * PAGE_SIZE).map_err(errno)?;
            Ok("ok".into())
        }
        OpKind::Madvise { range: r, advice } => {
            let (mm, a, n) = range(r)?;
            mmap::madvise_folios(cpu, mm, a, n * PAGE_SIZE, *advice).map_err(errno)?;
            Ok("ok".into())
        }
        OpKind::Mprotect { range: r, prot } => {
            let (mm, a, n) = range(r)?;
            let prot = match prot {
                Prot::None => mmap::Prot::None,
                Prot::Read => mmap::Prot::Read,
                Prot::ReadWrite => mmap::Prot::ReadWrite,
            };
            do_mprotect(cpu, mm, a, n * PAGE_SIZE, prot).map_err(errno)?;
            Ok("ok".into())
        }
        OpKind::PfnValid(r) => {
            let (s, e) = pfns(env, cpu, r);
            let valid = (s..e).filter(|&p| pfn_valid(cpu, Pfn::new(p))).count();
            Ok(format!("{valid} of {} valid", e - s))
        }
        OpKind::PfnWalk(r) => {
            // Kernel: the shape of compaction's isolate_migratepages_block()
            // and of memory offlining's scan: pfn_to_online_page(), then a
            // speculative reference on the folio.
            let (s, e) = pfns(env, cpu, r);
            let mut got = 0;
            for p in s..e {
                let Some(page) = pfn_to_online_page(cpu, Pfn::new(p)) else {
                    continue;
                };
                let folio = page_folio(cpu, page);
                if folio_try_get(cpu, folio) {
                    got += 1;
                    folio_put(cpu, folio);
                }
            }
            Ok(format!("{got} folios referenced"))
        }
        OpKind::Compact(r) => {
            let (s, e) = pfns(env, cpu, r);
            let c = compact_memory_range(cpu, Pfn::new(s), Pfn::new(e));
            Ok(format!(
                "{} scanned, {} isolated, {} migrated",
                c.scanned, c.isolated, c.migrated
            ))
        }
        OpKind::Kpageflags(r) => {
            let (s, e) = pfns(env, cpu, r);
            let flags = kpageflags_read(cpu, Pfn::new(s), e - s);
            let online = flags.iter().filter(|&&f| f != 0).count();
            Ok(format!("{online} of {} with flags", flags.len()))
        }
        OpKind::MigratePages { range: r } => {
            let (mm, a, n) = range(r)?;
            let moved = migrate_user_range(cpu, mm, a, n).map_err(errno)?;
            Ok(format!("{moved} migrated"))
        }
        OpKind::AddMemory(r) => {
            let (s, e) = pfns(env, cpu, r);
            add_memory(cpu, Pfn::new(s), e - s).map_err(errno)?;
            Ok("ok".into())
        }
        OpKind::OnlinePages(r, z) => {
            let (s, e) = pfns(env, cpu, r);
            for b in (s..e).step_by(cpu.m.block_pages() as usize) {
                online_memory_block(cpu, Pfn::new(b), zone_type(*z)).map_err(errno)?;
            }
            Ok("ok".into())
        }
        OpKind::OfflinePages(r) => {
            let (s, e) = pfns(env, cpu, r);
            for b in (s..e).step_by(cpu.m.block_pages() as usize) {
                offline_memory_block(cpu, Pfn::new(b)).map_err(errno)?;
            }
            Ok("ok".into())
        }
        OpKind::RemoveMemory(r) => {
            let (s, e) = pfns(env, cpu, r);
            remove_memory(cpu, Pfn::new(s), e - s).map_err(errno)?;
            Ok("ok".into())
        }
        OpKind::OfflineAndRemoveMemory(r) => {
            let (s, e) = pfns(env, cpu, r);
            offline_and_remove_memory(cpu, Pfn::new(s), e - s).map_err(errno)?;
            Ok("ok".into())
        }
        OpKind::MemremapPages(r) => {
            let (s, e) = pfns(env, cpu, r);
            let t = pgmap_type(env.plan.scenario.memory[r.memory].dev_type);
            memremap_pages(cpu, Pfn::new(s), e - s, t).map_err(errno)?;
            Ok("ok".into())
        }
        OpKind::MemunmapPages(r) => {
            let (s, _) = pfns(env, cpu, r);
            let pgmap = cpu
                .m
                .pgmap_of(Pfn::new(s))
                .ok_or_else(|| errno(Errno::EINVAL))?;
            memunmap_pages(cpu, &pgmap);
            Ok("ok".into())
        }
        OpKind::SplitFolio { vma, page } => {
            let (p, mm) = mm()?;
            let a = user_addr(env, p, *vma, *page).map_err(errno)?;
            let end = VirtAddr::new(a.as_u64() + PAGE_SIZE);
            match split_huge_pages_pid(cpu, mm, a, end) {
                Ok(0) => Err(errno(Errno::EINVAL)),
                Ok(_) => Ok("ok".into()),
                Err(e) => Err(errno(e)),
            }
        }
        OpKind::Collapse { vma, page } => {
            let (p, mm) = mm()?;
            let a = user_addr(env, p, *vma, *page).map_err(errno)?;
            madvise_collapse(cpu, mm, a).map_err(errno)?;
            Ok("ok".into())
        }
        OpKind::Fork { child } => {
            let (p, parent) = mm()?;
            let slot = env
                .child_slot(*child)
                .ok_or("fork: the child has no slot")?;
            let mm = dup_mm(cpu, parent).map_err(|e| {
                *slot.0.lock() = Child::Never;
                cpu.sched.wake(chan(slot));
                errno(e)
            })?;
            // The child's VMAs start where the parent's are (the names the
            // child inherits come first in its list).
            for (vid, a) in env.vmas[p].iter().enumerate() {
                if let Some(c) = env.vmas[*child].get(vid) {
                    c.store(
                        a.load(mmsim_facade::Ordering::Acquire),
                        mmsim_facade::Ordering::Release,
                    );
                }
            }
            let id = mm.id;
            *slot.0.lock() = Child::Forked(mm);
            cpu.sched.wake(chan(slot));
            Ok(format!("child mm{id}"))
        }
        OpKind::FindGetPage(r) => {
            let a = file_of(cpu, env, r.file)?;
            Ok(match find_get_page(cpu, &a, r.page) {
                Some(p) => format!("pfn {:#x}", p.as_u64()),
                None => "not cached".into(),
            })
        }
        OpKind::Evict(r) => {
            let a = file_of(cpu, env, r.file)?;
            let n = reclaim_file_range(cpu, &a, r.page, r.pages);
            Ok(format!("{n} evicted"))
        }
        OpKind::Truncate(r) => {
            let a = file_of(cpu, env, r.file)?;
            let n = truncate_inode_pages_range(cpu, &a, r.page, r.page + r.pages);
            Ok(format!("{n} truncated"))
        }
        OpKind::KsmMerge { range: r } => {
            let (p, _) = mm()?;
            let mm = env.mm(p).ok_or("this CPU's process does not exist")?;
            let a =
                user_addr(env, p, r.vma, r.page).map_err(|e| format!("{e} (not mapped yet)"))?;
            let n = ksm_merge(cpu, &mm, a, r.pages * PAGE_SIZE).map_err(errno)?;
            Ok(format!("{n} merged"))
        }
        OpKind::KsmScan => {
            let n = ksm_scan_thread_once(cpu);
            Ok(format!("{n} merged"))
        }
        OpKind::AllocHugetlb { range: r, as_ } => {
            let (s, e) = pfns(env, cpu, r);
            let folio = alloc_hugetlb_folio(cpu, Pfn::new(s), Pfn::new(e)).map_err(errno)?;
            if let Some(i) = as_ {
                refs[*i].push(folio.pfn());
            }
            Ok(format!("folio {:#x}", folio.pfn().as_u64()))
        }
        OpKind::UnmapMappingRange(r) => {
            let (s, e) = pfns(env, cpu, r);
            // A driver about to tear its device down marks it dead first
            // (kill_dev_dax()), so no fault maps it again.
            match cpu.m.pgmap_of(Pfn::new(s)) {
                Some(pgmap) => kill_dev_dax(cpu, &pgmap),
                None => unmap_mapping_range(cpu, Pfn::new(s), e - s),
            }
            Ok("ok".into())
        }
    }
}
