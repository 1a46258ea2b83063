//! Whole reads of large blocks with their CRC32C taken on a second thread while the
//! rest of the block is still being read.
//!
//! A checked 4 MiB read costs the copy out of the page cache plus a CRC32C pass over
//! the copy; one after the other, the check adds 40–50 % to the read on a CPU whose
//! CRC is slower than its copy. Blocks of 1 MiB and more are read in parts instead
//! (512 KiB, then halving to 64 KiB towards the end: [`part_lens`]): each part is
//! offered to a helper thread as soon as it is read, and the helper takes its CRC
//! while the caller reads the next, so that only the last 64 KiB's check follows the
//! reading. The checking costs the same CPU time; the hand-overs add some (see
//! [`AWAKE`]).
//!
//! The helper is one thread per process, started on first use (again in a forked
//! child, which inherits no threads). It is never waited for long: when the reading
//! is done the caller claims every part the helper has not started and checks it
//! itself, and if the helper is still on a part a check's time later (it lost its
//! CPU), the caller leaves it that part's buffer and returns a copy ([`Late`]). It is
//! offered nothing while as many large reads as the process has CPUs are in
//! progress, or when the reading thread may run on one CPU only (asked at each read:
//! affinity can change), and where no thread can be started the caller checks every
//! part.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::{Condvar, Mutex};
use rustix::io::Errno;

use crate::crc::{crc32c, join, Appender};

/// The longest part: bytes read per call in the body of a large read.
const PART: usize = 1 << 19;

/// Blocks this large and larger (two parts) are read in parts.
pub(super) const FROM: u64 = 2 * PART as u64;

/// The last two parts of a read are this long.
const LAST: usize = 1 << 16;

/// The lengths of the parts of a read of `want` bytes, last first, and how many: two
/// of [`LAST`], then each twice the one after it up to [`PART`], the first taking
/// what is left (less than twice the one after it, so never a sliver).
const fn plan(want: usize) -> ([usize; 32], usize) {
    let mut lens = [0; 32];
    let mut count = 0;
    let mut left = want;
    let mut next = LAST;
    while left > 0 {
        let take = if left < 2 * next || count + 1 == lens.len() {
            left
        } else {
            next
        };
        lens[count] = take;
        count += 1;
        left -= take;
        if count > 1 && next < PART {
            next *= 2;
        }
    }
    (lens, count)
}

/// The most parts a block has.
const MOST: usize = plan(crate::BLOCK_SIZE).1;

/// The lengths of the parts of a read of `want` bytes (at most a block's), in order.
///
/// The helper checks a part in about half the time its reading takes (here, 512 KiB
/// in 10 µs against 20 µs), so with each of the last parts half the one before it,
/// it finishes each as the reader finishes the next: what is left after the reading
/// is the last 64 KiB's check (1.3 µs). A 4 MiB block is 11 reads: seven of 512 KiB,
/// then 256, 128, 64 and 64 KiB (measured against seven and four quarters of
/// 512 KiB: 0.81 of an unchecked read for both, the check after the reading 1.3 µs
/// against 2.5 µs).
fn part_lens(want: usize) -> impl ExactSizeIterator<Item = usize> {
    let (lens, count) = plan(want);
    lens.into_iter().take(count).rev()
}

/// A part's state: offered, being checked by the helper, or checked.
const OFFERED: u8 = 0;
const TAKEN: u8 = 1;
const DONE: u8 = 2;

/// The parts of one read, shared with the helper.
struct Parts {
    /// Where each offered part starts and how long it is; set before it is offered.
    start: [AtomicUsize; MOST],
    len: [AtomicUsize; MOST],
    state: [AtomicU8; MOST],
    crc: [AtomicU32; MOST],
    /// Signalled when the helper finishes a part.
    done: Mutex<()>,
    /// The reader's buffer, when it left the helper checking a part of it.
    kept: Mutex<Option<Vec<u8>>>,
    finished: Condvar,
}

impl Parts {
    /// Part `index`'s bytes.
    ///
    /// # Safety
    /// Only while the part is claimed (by the helper, `TAKEN`, or by the caller) and
    /// its buffer is alive: [`Claim`] makes the caller wait for every part the helper
    /// claimed before it gives its buffer back, or leave the buffer in `kept`.
    unsafe fn bytes(&self, index: usize) -> &[u8] {
        let start = self.start[index].load(Ordering::Acquire) as *const u8;
        let len = self.len[index].load(Ordering::Acquire);
        // SAFETY: as this function's contract says; the bytes were initialised by the
        // read before the part was offered.
        unsafe { std::slice::from_raw_parts(start, len) }
    }
}

/// A part offered to the helper: its read's parts, which one, and whether another
/// part of the same read will follow.
struct Offer(Arc<Parts>, usize, bool);

/// Reads `want` bytes from the start of `fd` into `out` (empty, with room for them)
/// and returns their CRC32C when every byte arrived; `None` when the file was shorter
/// (truncated since it was opened: `out` holds what was there) or the block is read
/// in one call (small, one CPU, no helper), so the caller's check computes it.
pub(super) fn read_whole(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    want: usize,
) -> Result<Option<u32>, Errno> {
    debug_assert!(out.is_empty() && out.capacity() >= want);
    let large = (FROM..=crate::BLOCK_SIZE as u64).contains(&(want as u64));
    let alone = (large && !Late::recently()).then(Alone::enter);
    let helper = match alone {
        Some(Alone(true)) => helper(),
        _ => None,
    };
    let Some(helper) = helper else {
        super::sys::pread_append(fd, out, want, 0)?;
        return Ok(None);
    };
    let spare = &mut out.spare_capacity_mut()[..want];
    let lens = part_lens(want);
    let count = lens.len();
    let mut claim = Claim::new(count);
    let mut read = 0;
    let mut last: &[u8] = &[];
    let mut complete = true;
    let mut rest = spare;
    for (index, len) in lens.enumerate() {
        let (part, after) = rest.split_at_mut(len);
        rest = after;
        let filled = super::sys::pread_into(fd, part, read as u64)?;
        read += filled.len();
        if filled.len() < len {
            complete = false;
            break;
        }
        // Every part but the last goes to the helper as soon as it is read.
        if index + 1 < count {
            claim.offer(&helper, filled);
        } else {
            last = filled;
        }
    }
    let own = complete.then(|| crc32c(last));
    let last_len = last.len() as u64;
    // SAFETY: `pread_into` initialised the first `read` bytes of the spare capacity,
    // part after part with no gap (the loop stops at the first short part).
    unsafe { out.set_len(read) };
    let before = claim.finish(out);
    Ok(match (own, before) {
        (None, _) => None,
        (Some(own), None) => Some(own),
        (Some(own), Some(before)) => Some(join(before, own, last_len)),
    })
}

/// The parts one read has offered. Settling them (in [`Claim::finish`], or when it is
/// dropped on any other way out, errors and panics included) waits for each part the
/// helper has started, so it never reads a buffer that has been given back.
struct Claim {
    parts: Arc<Parts>,
    total: usize,
    offered: usize,
}

impl Claim {
    /// For a read of `parts` parts (all but the last are offered).
    fn new(parts: usize) -> Claim {
        Claim {
            total: parts,
            parts: Arc::new(Parts {
                start: [const { AtomicUsize::new(0) }; MOST],
                len: [const { AtomicUsize::new(0) }; MOST],
                state: [const { AtomicU8::new(OFFERED) }; MOST],
                crc: [const { AtomicU32::new(0) }; MOST],
                done: Mutex::new(()),
                kept: Mutex::new(None),
                finished: Condvar::new(),
            }),
            offered: 0,
        }
    }

    /// Offers `part`, the next part of the block, to the helper.
    fn offer(&mut self, helper: &Sender<Offer>, part: &[u8]) {
        let index = self.offered;
        self.parts.start[index].store(part.as_ptr() as usize, Ordering::Release);
        self.parts.len[index].store(part.len(), Ordering::Release);
        self.offered += 1;
        // A helper that is gone leaves the part to `finish`.
        let more = index + 2 < self.total;
        let _ = helper.send(Offer(self.parts.clone(), index, more));
    }

    /// The CRC of every offered part, in order, joined; `out` holds the read.
    ///
    /// A part the helper is still checking after [`SETTLING`] means it lost its CPU
    /// (to another process or the hypervisor), possibly for milliseconds: rather than
    /// wait, this hands `out`'s buffer to the parts (freed when the helper is done with
    /// them), leaves a copy in `out` and checks the rest from the copy.
    fn finish(mut self, out: &mut Vec<u8>) -> Option<u32> {
        let mut whole: Option<u32> = None;
        let mut at = 0;
        let mut handed = false;
        let mut own = 0;
        for index in 0..self.offered {
            let len = self.parts.len[index].load(Ordering::Acquire);
            let crc = match (handed, self.take_back(index)) {
                (true, _) => crc32c(&out[at..at + len]),
                (false, Back::Checked(crc)) => crc,
                (false, Back::Own(crc)) => {
                    own += 1;
                    crc
                }
                (false, Back::Busy) => {
                    Late::now();
                    #[cfg(test)]
                    HANDED.fetch_add(1, Ordering::Relaxed);
                    let copy = out.clone();
                    *self.parts.kept.lock() = Some(std::mem::replace(out, copy));
                    handed = true;
                    crc32c(&out[at..at + len])
                }
            };
            at += len;
            whole = Some(match whole {
                None => crc,
                Some(before) => Appender::for_len(len as u64).join(before, crc),
            });
        }
        if 2 * own > self.offered && at >= WAKES {
            // The helper got no CPU for most of the read.
            Late::now();
        }
        // Every part is settled or the helper's parts are kept alive by `parts`.
        self.offered = 0;
        whole
    }

    /// Takes part `index` back from the helper: its CRC, the helper's or (if the
    /// helper has not started it) taken here, or `Busy` if the helper is still on it
    /// after [`SETTLING`].
    fn take_back(&self, index: usize) -> Back {
        let parts = &self.parts;
        let claimed =
            parts.state[index].compare_exchange(OFFERED, DONE, Ordering::AcqRel, Ordering::Acquire);
        if claimed.is_ok() {
            // SAFETY: claimed here, within the call whose buffer holds it.
            return Back::Own(crc32c(unsafe { parts.bytes(index) }));
        }
        // The helper is at most one part's check away: wait awake for about that long.
        let until = Instant::now() + SETTLING;
        loop {
            if parts.state[index].load(Ordering::Acquire) == DONE {
                return Back::Checked(parts.crc[index].load(Ordering::Acquire));
            }
            if Instant::now() >= until {
                return Back::Busy;
            }
            std::hint::spin_loop();
        }
    }

    /// Waits until the helper is done with part `index`, however long that takes.
    fn wait(&self, index: usize) {
        let parts = &self.parts;
        if parts.state[index]
            .compare_exchange(OFFERED, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return;
        }
        let mut guard = parts.done.lock();
        while parts.state[index].load(Ordering::Acquire) != DONE {
            parts.finished.wait(&mut guard);
        }
    }
}

/// How many reads left the helper their buffer.
#[cfg(test)]
static HANDED: AtomicUsize = AtomicUsize::new(0);

/// A part taken back from the helper.
enum Back {
    /// Checked by the helper: its CRC.
    Checked(u32),
    /// Not started by the helper, so checked here: its CRC.
    Own(u32),
    /// The helper is still on it.
    Busy,
}

impl Drop for Claim {
    fn drop(&mut self) {
        for index in 0..self.offered {
            self.wait(index);
        }
    }
}

/// When the helper was last late, and how long reads leave it alone since.
///
/// A helper still on a part when the reading is done lost its CPU mid-part, to
/// another process (which [`Alone`] does not count) or to the hypervisor, possibly
/// for milliseconds; the read hands its buffer over rather than wait (see
/// [`Claim::finish`]), at the cost of a copy. Once is chance (a few times a second
/// on a busy virtual machine); late again soon after reads resumed offering is a
/// neighbour keeping that CPU busy, where each read would pay the copy. A read whose
/// parts the helper mostly never started counts as late too (if long enough for it
/// to wake: [`WAKES`]): with a neighbour
/// spinning on the other CPU, reading in parts and checking them all costs more than
/// reading in one call (0.625 of unchecked against 0.638, measured). So after each
/// late, reads check their own parts for a while: 1 ms, doubled each time the helper
/// is late again within twice that of the last time, up to about a second (with a
/// busy neighbour: 0.646, as reading alone; on this noisy machine otherwise: 1 % of
/// reads went alone, where a second after each late sent 58 % alone).
struct Late;

/// Reads that offer the helper this much (1.5 MiB) give it time to wake from its
/// sleep (tens of microseconds on a virtual machine) and take most parts; in shorter
/// ones the reader takes most parts back anyway, which says nothing about the CPU.
const WAKES: usize = 3 * PART;

/// The longest reads leave the helper alone: 1 ms << this.
const STEPS: u64 = 10;

impl Late {
    /// The monotonic clock, in microseconds, never 0 (which stands for never).
    fn micros() -> u64 {
        monotonic_micros().max(1)
    }

    /// When it was last late (microseconds, in the high bits) and the step (low 4).
    fn state() -> &'static AtomicU64 {
        static STATE: AtomicU64 = AtomicU64::new(0);
        &STATE
    }

    /// How long reads leave the helper alone at `step`, in microseconds.
    fn stand_aside(step: u64) -> u64 {
        1000 << step
    }

    /// The state after the helper was late at `now` (microseconds) in `state`.
    fn after(state: u64, now: u64) -> u64 {
        let (at, step) = (state >> 4, state & 15);
        let soon = at != 0 && now.saturating_sub(at) < 2 * Late::stand_aside(step);
        let step = if soon { (step + 1).min(STEPS) } else { 0 };
        now << 4 | step
    }

    /// Whether reads leave the helper alone at `now` in `state`.
    fn alone(state: u64, now: u64) -> bool {
        let (at, step) = (state >> 4, state & 15);
        at != 0 && now.saturating_sub(at) < Late::stand_aside(step)
    }

    /// Notes that the helper was late now.
    fn now() {
        let now = Late::micros();
        let _ = Late::state().fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
            Some(Late::after(state, now))
        });
    }

    /// Whether reads leave the helper alone now.
    fn recently() -> bool {
        Late::alone(Late::state().load(Ordering::Acquire), Late::micros())
    }
}

/// The helper's loop: checks each offered part nobody has claimed yet. While a read
/// has more parts to offer it stays awake for [`AWAKE`] (the next part is due about
/// then); otherwise it sleeps until the next offer.
fn check(offers: Receiver<Offer>) {
    let mut more = false;
    while let Some(Offer(parts, index, next_coming)) = next(&offers, more) {
        more = next_coming;
        let claimed = parts.state[index].compare_exchange(
            OFFERED,
            TAKEN,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if claimed.is_err() {
            // The reader took it back.
            continue;
        }
        // SAFETY: claimed (`TAKEN`): the reader waits for `DONE` before returning.
        let crc = crc32c(unsafe { parts.bytes(index) });
        parts.crc[index].store(crc, Ordering::Release);
        let _guard = parts.done.lock();
        parts.state[index].store(DONE, Ordering::Release);
        parts.finished.notify_all();
    }
}

/// How long a thread stays awake waiting for the other. Waking a sleeping thread
/// costs both sides a system call and, on a virtual machine, a trip through the
/// hypervisor (tens of microseconds each, measured), so each part's hand-over would
/// cost about what checking it does.
/// Between the parts of one read the helper spins for up to this long (a 512 KiB part
/// is read in 40–70 µs here) instead of sleeping: it keeps 0.85–0.87 of an unchecked
/// 4 MiB read against 0.81–0.82 when it sleeps, and costs the wait for each part, up
/// to a quarter of a millisecond of a second CPU per 4 MiB read, only while that CPU
/// has nothing else to do (see [`READING`]).
const AWAKE: Duration = Duration::from_micros(100);

/// How long a reader spins for a part the helper is checking before it leaves the
/// helper its buffer: a 512 KiB part takes 10 µs at 50 GB/s, 25 µs at 20 GB/s.
const SETTLING: Duration = Duration::from_micros(50);

/// The next offer: polled for [`AWAKE`] when one is `due`, then waited for; `None`
/// when no reader can send any more (never, for the process's helper).
fn next(offers: &Receiver<Offer>, due: bool) -> Option<Offer> {
    let until = Instant::now() + if due { AWAKE } else { Duration::ZERO };
    loop {
        match offers.try_recv() {
            Ok(offer) => return Some(offer),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if Instant::now() < until => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => return offers.recv().ok(),
        }
    }
}

/// The process's helper, started on first use and again in a forked child (the pid
/// changed); `None` on one CPU, when no thread can be started, or when another thread
/// is starting it right now (that read checks its own parts).
fn helper() -> Option<Sender<Offer>> {
    static HELPER: Mutex<Option<Helper>> = parking_lot::const_mutex(None);
    let pid = std::process::id();
    // Never blocks: a child forked while another thread held this lock would wait
    // for ever.
    let mut slot = HELPER.try_lock()?;
    match slot.take() {
        Some(helper) if helper.pid == pid => {
            let offers = helper.offers.clone();
            let again = helper.tried.elapsed() >= RETRY;
            *slot = Some(helper);
            if offers.is_some() || !again {
                return offers;
            }
        }
        // A forked child's copy of its parent's helper: its thread did not come
        // along. Dropping the last sender would disconnect the channel, which takes
        // a lock the parent's helper may have held at the fork: left alone instead.
        Some(parents) => std::mem::forget(parents),
        None => {}
    }
    let (offers, taken) = crossbeam_channel::unbounded();
    let started = thread::Builder::new()
        .name("blockstore-crc".into())
        .spawn(move || check(taken))
        .is_ok();
    let offers = started.then_some(offers);
    *slot = Some(Helper {
        pid,
        offers: offers.clone(),
        tried: Instant::now(),
    });
    offers
}

/// The process's helper: whose it is, where to offer parts (`None`: it could not be
/// started, last tried at `tried`).
struct Helper {
    pid: u32,
    offers: Option<Sender<Offer>>,
    tried: Instant,
}

/// How long after a failed start (no threads left) the helper is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Whether this process may run on more than one CPU.
#[cfg(test)]
fn several_cpus() -> bool {
    cpus() > 1
}

/// The CPUs the calling thread may run on now: its affinity (one system call, asked
/// each time: a container's cpuset or a `taskset` can narrow it at any moment), within
/// what the standard library finds (the cgroup quota as well, which reads files:
/// about 85 µs, so asked again at most once every [`QUOTA_FOR`], which is also how
/// soon a process started on one CPU and widened later uses the helper).
///
/// Nothing here blocks: a child forked while another thread of its parent was
/// asking must not wait for that thread, which it does not have (a `OnceLock` did,
/// for ever).
fn cpus() -> usize {
    let now = monotonic_micros();
    let known = QUOTA.get();
    let quota = if known != 0 && now.saturating_sub(known >> 16) < QUOTA_FOR.as_micros() as u64 {
        (known & 0xffff) as usize
    } else {
        let quota = thread::available_parallelism().map_or(1, |n| n.get().min(0xffff));
        QUOTA.set(now << 16 | quota as u64);
        quota
    };
    let affinity = rustix::thread::sched_getaffinity(None).map_or(1, |set| set.count() as usize);
    quota.min(affinity)
}

thread_local! {
    /// When [`cpus`] last asked for the quota on this thread (microseconds, high bits)
    /// and what it was (low 16). Per thread: what the standard library counts is
    /// bounded by the asking thread's affinity, and one pinned thread must not make
    /// the others count one CPU.
    static QUOTA: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How long [`cpus`] trusts the quota it found.
const QUOTA_FOR: Duration = Duration::from_secs(1);

/// `CLOCK_MONOTONIC` in microseconds (one vDSO call, no state to set up first).
fn monotonic_micros() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000
}

/// Large whole reads in progress in this process: the process id in the high 32 bits
/// (a forked child starts from nought, not from its parent's reads), the count in the
/// low. The helper only pays when a CPU is free for it: with a read in progress per
/// CPU (a pool at work), a helper descheduled while it checks a part would hold up
/// the read that waits for that part, so each read checks its own parts instead.
static READING: AtomicU64 = AtomicU64::new(0);

/// One large whole read counted in [`READING`]; `.0` when a CPU is left for the helper.
struct Alone(bool);

impl Alone {
    fn enter() -> Alone {
        let pid = u64::from(std::process::id()) << 32;
        let mut now = READING.load(Ordering::Acquire);
        loop {
            let count = if now >> 32 << 32 == pid {
                now as u32
            } else {
                0
            };
            let next = pid | u64::from(count + 1);
            match READING.compare_exchange_weak(now, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Alone((count as usize) + 1 < cpus()),
                Err(seen) => now = seen,
            }
        }
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        let pid = u64::from(std::process::id()) << 32;
        let _ = READING.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            (now >> 32 << 32 == pid && now as u32 > 0).then(|| now - 1)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    fn file_with(data: &[u8]) -> std::fs::File {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(data).expect("write");
        file
    }

    fn block(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + seed + i / 4099) as u8).collect()
    }

    /// Parts of 512 KiB, then halving to two of 64 KiB, covering the read exactly,
    /// the first never shorter than the second, never more parts than a read tracks.
    #[test]
    fn the_last_parts_halve_down_to_64_kib() {
        const K: usize = 1024;
        for (want, expected) in [
            (FROM as usize, vec![PART, 256 * K, 128 * K, LAST, LAST]),
            (PART + 5, vec![256 * K + 5, 128 * K, LAST, LAST]),
            (2 * PART + 1, vec![PART + 1, 256 * K, 128 * K, LAST, LAST]),
            (
                crate::BLOCK_SIZE,
                [vec![PART; 7], vec![256 * K, 128 * K, LAST, LAST]].concat(),
            ),
            (100, vec![100]),
            (LAST + 1, vec![LAST + 1]),
        ] {
            assert_eq!(part_lens(want).collect::<Vec<_>>(), expected, "{want}");
        }
        for want in (1..=crate::BLOCK_SIZE)
            .step_by(4093)
            .chain([crate::BLOCK_SIZE])
        {
            let lens: Vec<usize> = part_lens(want).collect();
            assert_eq!(lens.iter().sum::<usize>(), want);
            assert!(lens.len() <= MOST, "{want}: {} parts", lens.len());
            assert!(lens.len() < 2 || lens[0] >= lens[1], "{want}: {lens:?}");
            assert!(lens.iter().all(|&len| len > 0 && len < 2 * PART), "{want}");
        }
        assert_eq!(part_lens(crate::BLOCK_SIZE).count(), MOST);
    }

    /// A helper still on a part when the reading is done is left that part's buffer;
    /// the caller returns a copy and checks the rest itself, and the buffer is freed
    /// once the helper lets go of the parts.
    #[test]
    fn a_busy_helper_is_left_the_buffer_and_the_caller_gets_a_copy() {
        let data = block(3 * PART, 4);
        let mut out = data.clone();
        let (offers, taken) = crossbeam_channel::unbounded();
        let mut claim = Claim::new(4);
        for part in out.chunks(PART) {
            claim.offer(&offers, part);
        }
        let parts = claim.parts.clone();
        // The helper checked the first part and started the second, then lost its CPU.
        let first = taken.recv().expect("first offer");
        first.0.crc[0].store(crc32c(&data[..PART]), Ordering::Release);
        first.0.state[0].store(DONE, Ordering::Release);
        let second = taken.recv().expect("second offer");
        second.0.state[1].store(TAKEN, Ordering::Release);
        let given = out.as_ptr();
        let crc = claim.finish(&mut out);
        assert_eq!(crc, Some(crc32c(&data)));
        assert!(out == data, "the copy differs");
        assert_ne!(
            out.as_ptr(),
            given,
            "the caller kept the buffer the helper reads"
        );
        let kept = parts.kept.lock().as_ref().map(|kept| kept.as_ptr());
        assert_eq!(kept, Some(given), "the helper's buffer was not kept");
        // The third part was the caller's: the helper finds it taken back.
        assert_eq!(parts.state[2].load(Ordering::Acquire), DONE);
        // The helper finishing and letting go of its offers frees the buffer.
        second.0.state[1].store(DONE, Ordering::Release);
        drop((first, second, taken, offers));
        assert_eq!(
            Arc::strong_count(&parts),
            1,
            "something else holds the parts"
        );
    }

    /// Real reads while another thread keeps the helper's CPU busy: the helper is
    /// preempted mid-part, reads hand it their buffers or check alone, and every
    /// read is whole and right.
    #[test]
    fn reads_stay_right_while_the_helper_loses_its_cpu() {
        let Some(helper_cpu) = (|| {
            let mine = rustix::thread::sched_getaffinity(None).ok()?;
            let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
                .filter(|&cpu| mine.is_set(cpu))
                .collect();
            (cpus.len() > 1).then(|| cpus[cpus.len() - 1])
        })() else {
            return; // one CPU: no helper to take it from
        };
        let data = block(crate::BLOCK_SIZE, 6);
        let file = file_with(&data);
        let mut out = Vec::with_capacity(data.len());
        read_whole(file.as_fd(), &mut out, data.len()).expect("start the helper");
        let Some(tid) = helper_tid() else {
            return; // no helper thread (a forked child's test run, no threads left)
        };
        let mut one = rustix::thread::CpuSet::new();
        one.set(helper_cpu);
        let pinned = rustix::thread::sched_setaffinity(Some(tid), &one).is_ok();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let _late = LATE_TESTS.lock();
        let handed = HANDED.load(Ordering::Relaxed);
        thread::scope(|scope| {
            // A neighbour on the helper's CPU, spinning in bursts.
            scope.spawn(|| {
                let _ = rustix::thread::sched_setaffinity(None, &one);
                while !stop.load(Ordering::Relaxed) {
                    let burst = Instant::now();
                    while burst.elapsed() < Duration::from_millis(3) {
                        std::hint::spin_loop();
                    }
                    thread::sleep(Duration::from_micros(700));
                }
            });
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(1)
                || (pinned
                    && HANDED.load(Ordering::Relaxed) == handed
                    && started.elapsed() < Duration::from_secs(20))
            {
                // Every read offers its parts (the stand-aside is what another test shows).
                Late::state().store(0, Ordering::Release);
                let mut out = Vec::with_capacity(data.len());
                let crc = read_whole(file.as_fd(), &mut out, data.len()).expect("read");
                assert!(out == data, "a read came back wrong");
                if let Some(crc) = crc {
                    assert_eq!(crc, crc32c(&data));
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        if pinned {
            let all = rustix::thread::sched_getaffinity(None).expect("affinity");
            let _ = rustix::thread::sched_setaffinity(Some(tid), &all);
        }
        assert!(
            !pinned || HANDED.load(Ordering::Relaxed) > handed,
            "the helper was never caught mid-part: the test did not test the hand-over"
        );
    }

    /// A process that starts on one CPU (`taskset -c 0`, a one-CPU cpuset) and is
    /// given more later uses them, and the helper, within a second or so: what it
    /// found at first is not kept for life. Run in a forked child, a process of its
    /// own that starts with nothing known.
    #[test]
    fn a_process_started_on_one_cpu_and_widened_later_sees_its_cpus() {
        let all = rustix::thread::sched_getaffinity(None).expect("affinity");
        if all.count() < 2 || thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return; // nothing to widen to
        }
        // SAFETY: the child only sets its affinity, asks, sleeps and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: as above; the alarm turns a hang into a failure.
            unsafe { libc::alarm(20) };
            QUOTA.set(0);
            let Some(first) = (0..rustix::thread::CpuSet::MAX_CPU).find(|&c| all.is_set(c)) else {
                unsafe { libc::_exit(3) };
            };
            let mut one = rustix::thread::CpuSet::new();
            one.set(first);
            let narrowed = rustix::thread::sched_setaffinity(None, &one).is_ok() && cpus() == 1;
            let widened = rustix::thread::sched_setaffinity(None, &all).is_ok();
            thread::sleep(QUOTA_FOR + Duration::from_millis(100));
            let seen = cpus();
            // SAFETY: leaves the child without running the parent's exit handlers.
            unsafe {
                libc::_exit(if narrowed && widened && seen >= 2 {
                    0
                } else {
                    1
                })
            };
        }
        let status = exit_status(pid);
        assert!(
            status == Some(0),
            "a process widened from one CPU still counted one (exit {status:?})"
        );
    }

    /// A thread pinned to one CPU counts one; another thread of the same process,
    /// asking right after, still counts all of its own.
    #[test]
    fn one_pinned_thread_does_not_narrow_the_others() {
        let all = rustix::thread::sched_getaffinity(None).expect("affinity");
        if all.count() < 2 || thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return; // nothing to narrow
        }
        let first = (0..rustix::thread::CpuSet::MAX_CPU)
            .find(|&c| all.is_set(c))
            .expect("a CPU");
        let pinned = thread::spawn(move || {
            let mut one = rustix::thread::CpuSet::new();
            one.set(first);
            rustix::thread::sched_setaffinity(None, &one).expect("pin");
            QUOTA.set(0);
            cpus()
        })
        .join()
        .expect("pinned thread");
        assert_eq!(pinned, 1);
        let free = thread::spawn(cpus).join().expect("free thread");
        assert!(
            free >= 2,
            "a thread with {} CPUs counted {free}",
            all.count()
        );
    }

    /// Waits for the forked child `pid`: its exit code, `None` if a signal (its
    /// alarm, a crash) ended it.
    fn exit_status(pid: libc::pid_t) -> Option<i32> {
        let mut status = 0;
        // SAFETY: waits for a child this process forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
    }

    /// Held by tests that set or rely on the process's [`Late`] state.
    static LATE_TESTS: Mutex<()> = parking_lot::const_mutex(());

    /// The helper thread's id, from its name in `/proc/self/task`.
    fn helper_tid() -> Option<rustix::thread::Pid> {
        std::fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .find_map(|task| {
                let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
                let tid: i32 = task.file_name().to_str()?.parse().ok()?;
                (comm.trim() == "blockstore-crc").then(|| rustix::thread::Pid::from_raw(tid))?
            })
    }

    /// Late once: reads leave the helper alone for 1 ms. Late again within twice the
    /// stand-aside: twice as long, up to about a second. Late after a quiet spell:
    /// back to 1 ms.
    #[test]
    fn lateness_soon_after_lateness_leaves_the_helper_alone_longer() {
        let t = 1_000_000;
        let once = Late::after(0, t);
        assert!(Late::alone(once, t + 999));
        assert!(!Late::alone(once, t + 1000));
        let twice = Late::after(once, t + 1500);
        assert!(Late::alone(twice, t + 1500 + 1999));
        assert!(!Late::alone(twice, t + 1500 + 2000));
        let mut state = twice;
        let mut at = t + 1500;
        for _ in 0..20 {
            at += Late::stand_aside(state & 15) + 10;
            state = Late::after(state, at);
        }
        assert!(
            Late::alone(state, at + 1_000_000),
            "never climbed to a second"
        );
        assert!(!Late::alone(state, at + 1_030_000), "climbed past a second");
        let quiet = Late::after(state, at + 10_000_000);
        assert!(!Late::alone(quiet, at + 10_000_000 + 1000));
    }

    #[test]
    fn a_large_block_is_read_whole_with_its_crc() {
        for len in [
            FROM as usize,
            3 * PART + 5,
            4 * PART + LAST + 3,
            crate::BLOCK_SIZE,
        ] {
            let data = block(len, 1);
            let file = file_with(&data);
            let mut out = Vec::with_capacity(len);
            let crc = read_whole(file.as_fd(), &mut out, len).expect("read");
            assert!(out == data, "{len} bytes read back differ");
            if let Some(crc) = crc {
                assert_eq!(crc, crc32c(&data), "{len}");
            }
        }
        // Reads go alone while the helper is left alone or other tests' reads take
        // the CPUs: with the helper free, one soon takes its CRC as it reads.
        if !several_cpus() {
            return;
        }
        let _late = LATE_TESTS.lock();
        let data = block(crate::BLOCK_SIZE, 2);
        let file = file_with(&data);
        let started = Instant::now();
        loop {
            Late::state().store(0, Ordering::Release);
            let mut out = Vec::with_capacity(data.len());
            let crc = read_whole(file.as_fd(), &mut out, data.len()).expect("read");
            assert!(out == data);
            if let Some(crc) = crc {
                assert_eq!(crc, crc32c(&data));
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no read used the helper"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// After the helper was late again and again, reads check their own parts for a
    /// while, and read the same bytes.
    #[test]
    fn a_late_helper_is_left_alone_for_a_while() {
        let _late = LATE_TESTS.lock();
        let data = block(4 * PART, 3);
        let file = file_with(&data);
        for _ in 0..=STEPS {
            Late::now();
        }
        assert!(Late::recently());
        let mut out = Vec::with_capacity(data.len());
        let crc = read_whole(file.as_fd(), &mut out, data.len()).expect("read");
        assert!(out == data);
        assert_eq!(crc, None, "read alone: the caller's check takes the CRC");
    }

    #[test]
    fn a_file_shorter_than_asked_gives_what_is_there_and_no_crc() {
        let data = vec![9u8; PART + 100];
        let file = file_with(&data);
        let mut out = Vec::with_capacity(4 * PART);
        let crc = read_whole(file.as_fd(), &mut out, 4 * PART).expect("read");
        assert_eq!(out.len(), data.len());
        assert_eq!(crc, None);
    }

    #[test]
    fn a_thread_narrowed_to_one_cpu_checks_its_own_parts() {
        // Affinity narrowed after the first read (a cpuset shrunk, a `taskset -p`): a
        // helper that cannot run beside the reader would only make it wait.
        let data = block(4 * PART, 5);
        let file = file_with(&data);
        let read = || {
            let mut out = Vec::with_capacity(data.len());
            let crc = read_whole(file.as_fd(), &mut out, data.len()).expect("read");
            assert!(out == data);
            crc
        };
        read();
        let before = rustix::thread::sched_getaffinity(None).expect("affinity");
        let Some(one) = (0..rustix::thread::CpuSet::MAX_CPU).find(|&cpu| before.is_set(cpu)) else {
            panic!("no CPU in this thread's affinity");
        };
        let mut narrow = rustix::thread::CpuSet::new();
        narrow.set(one);
        rustix::thread::sched_setaffinity(None, &narrow).expect("narrow the affinity");
        let narrowed = read();
        rustix::thread::sched_setaffinity(None, &before).expect("restore the affinity");
        assert_eq!(
            narrowed, None,
            "a read on one CPU offered parts to the helper"
        );
    }

    #[test]
    fn a_forked_child_reads_without_its_parents_helper() {
        // The parent's helper is running; the child inherits its channel but not the
        // thread. A read in the child must neither hang nor take a wrong CRC. (It
        // starts a helper of its own, unless another thread of this test binary held
        // the helper's lock at the fork: then it checks every part itself.)
        let data = block(4 * PART, 3);
        let file = file_with(&data);
        let mut out = Vec::with_capacity(data.len());
        read_whole(file.as_fd(), &mut out, data.len()).expect("read in the parent");
        // SAFETY: the child only reads, checks and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: as above; the alarm turns a hang into a failure.
            unsafe { libc::alarm(20) };
            let mut right = true;
            for _ in 0..10 {
                let mut out = Vec::with_capacity(data.len());
                let crc = read_whole(file.as_fd(), &mut out, data.len());
                right &= match crc {
                    Ok(Some(crc)) => crc == crc32c(&data),
                    Ok(None) => true,
                    Err(_) => false,
                } && out == data;
            }
            // SAFETY: leaves the child without running the parent's exit handlers.
            unsafe { libc::_exit(if right { 0 } else { 1 }) };
        }
        let status = exit_status(pid);
        assert!(
            status == Some(0),
            "the child's reads hung or were wrong (exit {status:?})"
        );
    }

    #[test]
    fn many_readers_share_the_helper_and_each_gets_its_own_crc() {
        // Eight threads at once: most find the helper busy with another read's parts
        // and check theirs themselves; every answer must still be its own block's.
        let blocks: Vec<Vec<u8>> = (0..8).map(|seed| block(4 * PART, seed)).collect();
        thread::scope(|scope| {
            for data in &blocks {
                scope.spawn(move || {
                    let file = file_with(data);
                    for _ in 0..20 {
                        let mut out = Vec::with_capacity(data.len());
                        let crc = read_whole(file.as_fd(), &mut out, data.len()).expect("read");
                        assert!(out == *data);
                        if let Some(crc) = crc {
                            assert_eq!(crc, crc32c(data));
                        }
                    }
                });
            }
        });
    }
}
