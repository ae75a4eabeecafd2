//! A booted machine kept for the executions of one worker: set-up once,
//! then a restore per execution instead of a boot.
//!
//! Before its first execution, a worker thread boots the plan's machine
//! once, inside its own snapshot arena ([`mmsim_facade::snapshot`]), in a
//! shuttle run of its own (set-up's scheduling points need one), and saves
//! the arena. Each execution ([`super::execute`]) then restores the arena
//! and takes the saved [`World`] (a handful of pointers into it); at its
//! end it abandons the machine (the next restore overwrites it) instead of
//! dropping it. Teardown still runs in every execution (`exit_mmap`, the
//! leak check): what it finds is a result of the schedule.
//!
//! For `--scheduler dpor` set-up is part of each execution as DPOR sees
//! it: what set-up touched numbers the objects (see `end_step` in the
//! `dpor` module), and it names lazily allocated storage. The snapshot's
//! boot records both and each restore hands them to the recorder again
//! ([`mmsim_facade::dpor::replay_setup`]), at the same addresses, so a
//! DPOR tree explored from snapshots is the tree explored from fresh boots
//! (`tests/dpor_catalog.rs` compares counts).
//!
//! [`Boot::Checked`] drops each execution's machine instead and checks
//! that the arena then holds as many blocks as dropping the snapshot's own
//! machine left: one more is an object of the execution that something
//! outside the arena still holds, which a restore would pull from under
//! it. The tests run the catalog that way.

use super::Slot;
use crate::setup::{Plan, SetupError, World};
use mmsim_facade::RawLock;
use mmsim_facade::dpor::Named;
use mmsim_facade::sched::Mode;
use mmsim_facade::snapshot::{Arena, DEFAULT_SIZE};
use shuttle::Runner;
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::Arc;

/// How each execution gets its machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Boot {
    /// Restored from a snapshot taken after set-up, when the process's
    /// allocator can serve one (else as `Fresh`).
    #[default]
    Snapshot,
    /// Booted afresh (`--fresh-boot`), for comparison.
    Fresh,
    /// From a snapshot, each execution's machine dropped and the arena
    /// checked for objects that outlived it (a defect if any).
    Checked,
}

/// A worker's booted machine (see the module doc).
pub(super) struct Snapshot {
    /// The plan booted (an execution of another plan boots afresh).
    plan: Arc<Plan>,
    arena: Arena,
    world: ManuallyDrop<World>,
    /// What set-up logged for the DPOR recorder, and named.
    log: Vec<(usize, u8)>,
    names: Vec<Named>,
    /// Blocks left in the arena once the snapshot's machine is dropped.
    baseline: usize,
    checked: bool,
}

thread_local! {
    /// This thread's snapshot, while it explores.
    static CURRENT: RefCell<Option<Snapshot>> = const { RefCell::new(None) };
}

/// Why a snapshot could not be taken (the worker boots afresh then).
#[derive(Debug)]
pub enum Unavailable {
    /// The process's global allocator serves no arena, or none could be
    /// reserved.
    NoArena,
    /// Set-up allocated a block the arena could not hold.
    Spilled,
    /// Set-up failed (each execution boots afresh and reports it).
    Setup,
    /// Set-up panicked (each execution boots afresh and reports it).
    Panicked,
}

/// The snapshot of `plan`'s machine on this thread until the guard drops,
/// for the executions whose results go through `slot`; `dpor`: for a DPOR
/// exploration (set-up's accesses are recorded for it).
pub(super) fn install(
    plan: &Arc<Plan>,
    boot: Boot,
    slot: &Arc<RawLock<Slot>>,
    dpor: bool,
) -> Result<Installed, Unavailable> {
    let s = take(plan, boot == Boot::Checked, dpor)?;
    CURRENT.with(|c| *c.borrow_mut() = Some(s));
    Ok(Installed(slot.clone()))
}

/// This thread's snapshot, while it lives.
pub(super) struct Installed(Arc<RawLock<Slot>>);

impl Installed {
    /// Bytes a restore copies.
    pub(super) fn bytes(&self) -> usize {
        CURRENT.with(|c| c.borrow().as_ref().map_or(0, |s| s.arena.saved_bytes()))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        // The loop's reference to the last machine's context is the last
        // reference into the arena from outside: it goes first, however
        // the exploration ends (an unwinding one too).
        drop(self.0.lock_untracked().ctx.take());
        // Forgetting the last execution's machine: its blocks go with the
        // arena's region.
        let _ = CURRENT.try_with(|c| c.borrow_mut().take());
    }
}

fn take(plan: &Arc<Plan>, checked: bool, dpor: bool) -> Result<Snapshot, Unavailable> {
    let mut arena = Arena::new(DEFAULT_SIZE).ok_or(Unavailable::NoArena)?;
    if !arena.serves() {
        return Err(Unavailable::NoArena);
    }
    let _ = arena.spilled();
    // Set-up's accesses and names, as the DPOR recorder would see them
    // (for a DPOR exploration only: recording makes the model run
    // `dpor_like`).
    let recording =
        (dpor && mmsim_facade::dpor::ENABLED).then(mmsim_facade::dpor::Recording::start);
    let out: Arc<RawLock<Option<Result<World, SetupError>>>> = Arc::new(RawLock::new(None));
    let body_out = out.clone();
    let body_plan = plan.clone();
    let runner = Runner::new(
        shuttle::scheduler::RoundRobinScheduler::new(1),
        super::shuttle_config(),
    );
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runner.run(move || {
            let w = {
                let _on = mmsim_facade::snapshot::resume();
                body_plan.boot(Mode::Explore)
            };
            // Untracked: the explorer's mailbox, not set-up's (a tracked
            // lock would number one more object than a fresh set-up).
            *body_out.lock_untracked() = Some(w);
        })
    }));
    mmsim_facade::snapshot::off();
    if let Err(p) = ran {
        // A set-up that panics (a defect, a schedule past the step
        // bound): the payload may be in the arena, which goes now, so it
        // is forgotten, not dropped; each execution boots afresh and
        // reports the panic as the explorer does.
        std::mem::forget(p);
        return Err(Unavailable::Panicked);
    }
    let mut log = Vec::new();
    let mut names = Vec::new();
    if recording.is_some() {
        let mut scratch = Vec::new();
        mmsim_facade::dpor::take(&mut log);
        mmsim_facade::dpor::take_names(&mut names);
        // DPOR numbers set-up's objects in the order of their first
        // touches, and objects in named storage not at all (see
        // `Dpor::finish_setup`): only each unnamed address's first touch
        // counts, so only those are handed over again, the same every
        // time. Most of set-up's accesses initialize named memmaps.
        let mut seen = std::collections::HashSet::new();
        log.retain(|&(a, _)| {
            !names.iter().any(|n| a >= n.addr && a - n.addr < n.len) && seen.insert(a)
        });
        log.shrink_to_fit();
        mmsim_facade::dpor::take_allocs(&mut scratch);
        let mut woken = Vec::new();
        mmsim_facade::dpor::take_woken(&mut woken);
    }
    drop(recording);
    let world = match out.lock_untracked().take() {
        Some(Ok(w)) => w,
        Some(Err(e)) => {
            // Made in the arena: dropped while it is there. Each
            // execution boots afresh and reports it.
            drop(e);
            return Err(Unavailable::Setup);
        }
        None => return Err(Unavailable::Panicked),
    };
    if arena.spilled() {
        // Blocks of the machine outside the arena: a restore would not
        // bring them back. (The machine is abandoned with the arena.)
        std::mem::forget(world);
        return Err(Unavailable::Spilled);
    }
    arena.save();
    // The blocks that dropping a machine leaves (none, unless the model
    // leaks): the checked mode's measure.
    let mut baseline = 0;
    if checked {
        drop(world_copy(&world));
        baseline = arena.live();
        // SAFETY: the copy dropped above was the only user of the arena
        // since the save; `world` is the saved state's own.
        unsafe { arena.restore() };
    }
    Ok(Snapshot {
        plan: plan.clone(),
        arena,
        world: ManuallyDrop::new(world),
        log,
        names,
        baseline,
        checked,
    })
}

/// A bitwise copy of the saved world: valid as long as the arena holds the
/// saved state, and to be used once per restore.
fn world_copy(w: &World) -> World {
    // SAFETY: the arena holds the state `w` was saved with (the caller
    // restores it before each copy), where `w`'s references are counted
    // once: the copy takes them over, and `w` itself is never dropped.
    unsafe { std::ptr::read(w) }
}

/// The machine for the execution of `plan` beginning on this thread:
/// restored from its snapshot, if it has one of that plan.
pub(super) fn restore(plan: &Arc<Plan>, slot: &RawLock<Slot>) -> Option<World> {
    CURRENT.with(|c| {
        let c = c.borrow();
        let s = c.as_ref().filter(|s| Arc::ptr_eq(&s.plan, plan))?;
        // The last execution's reference into the arena goes first.
        drop(slot.lock_untracked().ctx.take());
        mmsim_facade::snapshot::off();
        // SAFETY: the last execution's machine is abandoned or dropped
        // (`finish`), its tasks are gone with shuttle's execution, and
        // what it reported was copied out of the arena.
        unsafe { s.arena.restore() };
        mmsim_facade::dpor::replay_setup(&s.log, &s.names);
        Some(world_copy(&s.world))
    })
}

/// The end of an execution whose machine came from [`restore`]: abandons
/// it, or drops it and checks the arena (`Boot::Checked`). `Err`: an
/// object that outlived the execution.
pub(super) fn finish(world: World, slot: &RawLock<Slot>) -> Result<(), String> {
    CURRENT.with(|c| {
        let c = c.borrow();
        let s = c.as_ref().expect("a restored machine has its snapshot");
        if !s.checked {
            std::mem::forget(world);
            return Ok(());
        }
        // The loop's reference to the machine's context is the one
        // reference from outside that an execution may keep: it goes too.
        drop(slot.lock_untracked().ctx.take());
        drop(world);
        let live = s.arena.live();
        if live == s.baseline {
            Ok(())
        } else {
            Err(format!(
                "the snapshot arena holds {live} blocks after the execution's machine was dropped, {} after the snapshot's: an object of the execution outlived it",
                s.baseline
            ))
        }
    })
}
