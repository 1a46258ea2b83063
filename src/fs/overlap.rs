//! Whole reads of large blocks with their CRC32C taken on a second thread while the
//! rest of the block is still being read.
//!
//! A checked 4 MiB read costs the copy out of the page cache plus a CRC32C pass over
//! the copy; one after the other, the check adds 40–50 % to the read on a CPU whose
//! CRC is slower than its copy. Blocks of 1 MiB and more are read in 512 KiB parts
//! instead (the last 512 KiB in quarters): each part read is offered to a helper
//! thread, which takes its CRC while the caller reads the next, so that only the last
//! quarter part's check follows the reading.
//! The checking costs the same CPU time; the hand-overs add some (see [`AWAKE`]).
//!
//! The helper is one thread per process, started on first use (again in a forked
//! child, which inherits no threads). It is never waited for in line: when the
//! reading is done the caller claims every part the helper has not started and
//! checks it itself, so a busy helper (another read's parts, a stalled CPU) costs at
//! most the one part it is working on. It is offered nothing while as many large
//! reads as the process has CPUs are in progress, or when the reading thread may run
//! on one CPU only (asked at each read: affinity can change), and where no thread can
//! be started the caller checks every part.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::{Condvar, Mutex};
use rustix::io::Errno;

use crate::crc::{crc32c, join, Appender};

/// Bytes read per call, and checked per step.
const PART: usize = 1 << 19;

/// Blocks this large and larger (two parts) are read in parts.
pub(super) const FROM: u64 = 2 * PART as u64;

/// The last [`PART`] of a block is read in parts this large, so that the check left
/// after the reading is a quarter part's (measured on a 4 MiB read with CRC32C at
/// 57 GB/s: 10.3 µs for the last whole part, against 150 µs of reading).
const TAIL: usize = PART / 4;

/// The most parts a block has.
const MOST: usize = crate::BLOCK_SIZE.div_ceil(PART) - 1 + PART / TAIL;

/// The lengths of the parts of a read of `want` bytes: whole [`PART`]s while more than
/// one part's bytes remain, then [`TAIL`]s (the very last possibly short).
fn part_lens(want: usize) -> impl Iterator<Item = usize> {
    let whole = want.saturating_sub(1) / PART;
    let rest = want - whole * PART;
    std::iter::repeat_n(PART, whole)
        .chain((0..rest.div_ceil(TAIL)).map(move |i| TAIL.min(rest - i * TAIL)))
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
    finished: Condvar,
}

impl Parts {
    /// Part `index`'s bytes.
    ///
    /// # Safety
    /// Only while the part is claimed (by the helper, `TAKEN`, or by the caller) and
    /// the caller has not returned: [`Claim`] makes the caller wait for every part the
    /// helper claimed before it gives its buffer back.
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
    let mut claim = Claim::new(part_lens(want).count());
    let mut read = 0;
    let mut last: &[u8] = &[];
    let mut complete = true;
    let mut rest = spare;
    for len in part_lens(want) {
        let (part, after) = rest.split_at_mut(len);
        rest = after;
        let room = part.len();
        let filled = super::sys::pread_into(fd, part, read as u64)?;
        read += filled.len();
        if !last.is_empty() {
            claim.offer(&helper, last);
        }
        last = filled;
        if last.len() < room {
            complete = false;
            break;
        }
    }
    let own = complete.then(|| crc32c(last));
    let last_len = last.len() as u64;
    let before = claim.finish();
    // SAFETY: `pread_into` initialised the first `read` bytes of the spare capacity,
    // part after part with no gap (the loop stops at the first short part).
    unsafe { out.set_len(read) };
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

    /// The CRC of every offered part, in order, joined.
    fn finish(mut self) -> Option<u32> {
        let mut whole = None;
        for index in 0..self.offered {
            let crc = self.take_back(index, true);
            whole = Some(match whole {
                None => crc,
                Some(before) => {
                    let len = self.parts.len[index].load(Ordering::Acquire);
                    Appender::for_len(len as u64).join(before, crc)
                }
            });
        }
        self.offered = 0;
        whole
    }

    /// Takes part `index` back from the helper, waiting if it has started on it; its
    /// CRC when `wanted` (taken here if the helper has not started it, else 0).
    fn take_back(&self, index: usize, wanted: bool) -> u32 {
        let parts = &self.parts;
        let claimed =
            parts.state[index].compare_exchange(OFFERED, DONE, Ordering::AcqRel, Ordering::Acquire);
        if claimed.is_ok() {
            // SAFETY: claimed here, within the call whose buffer holds it.
            return if wanted {
                crc32c(unsafe { parts.bytes(index) })
            } else {
                0
            };
        }
        // The helper is at most one part's check away: wait awake for about that long.
        let waiting = Instant::now();
        let until = waiting + SETTLING;
        while parts.state[index].load(Ordering::Acquire) != DONE && Instant::now() < until {
            std::hint::spin_loop();
        }
        let mut guard = parts.done.lock();
        while parts.state[index].load(Ordering::Acquire) != DONE {
            parts.finished.wait(&mut guard);
        }
        drop(guard);
        if waiting.elapsed() > LATE {
            // Far longer than a check and a wake-up take: the helper lost its CPU.
            Late::now();
        }
        parts.crc[index].load(Ordering::Acquire)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        for index in 0..self.offered {
            self.take_back(index, false);
        }
    }
}

/// When a read last waited for the helper longer than a check takes: the helper lost
/// its CPU mid-part, to other processes (which [`Alone`] does not count) or to the
/// hypervisor. A read must then wait until the scheduler runs the helper again
/// (milliseconds, measured: with a busy neighbour, 4 MiB reads kept 0.59 of unchecked
/// with the helper, where reading alone keeps about 0.70), so for [`LATE_FOR`] after
/// that, reads check their own parts.
struct Late;

/// A wait for one part that shows the helper lost its CPU: a 512 KiB check takes
/// 25–35 µs here, waking the helper tens of microseconds, a time slice lost to
/// another process milliseconds.
const LATE: Duration = Duration::from_micros(500);

/// How long reads leave the helper alone after it was late.
const LATE_FOR: Duration = Duration::from_secs(1);

impl Late {
    /// The time since the first use, in microseconds (0 never happens: it is `None`).
    fn micros() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
    }

    fn at() -> &'static AtomicU64 {
        static AT: AtomicU64 = AtomicU64::new(0);
        &AT
    }

    /// Notes that the helper was late now.
    fn now() {
        Late::at().store(Late::micros(), Ordering::Relaxed);
    }

    /// Whether the helper was late within [`LATE_FOR`].
    fn recently() -> bool {
        let at = Late::at().load(Ordering::Relaxed);
        at != 0 && Late::micros().saturating_sub(at) < LATE_FOR.as_micros() as u64
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

/// How long a reader spins for a part the helper is checking (about 25 µs at 20 GB/s)
/// before it sleeps.
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
        .name("blockstore-check".into())
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
/// the cgroup quota found at first use (which reads files).
fn cpus() -> usize {
    static QUOTA: OnceLock<usize> = OnceLock::new();
    let quota = *QUOTA.get_or_init(|| thread::available_parallelism().map_or(1, |n| n.get()));
    let affinity = rustix::thread::sched_getaffinity(None).map_or(1, |set| set.count() as usize);
    quota.min(affinity)
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

    /// Whole parts, then quarter parts for the last part's worth, covering the read
    /// exactly, never more than the parts a read can track.
    #[test]
    fn the_last_part_is_read_in_quarters() {
        for (want, expected) in [
            (FROM as usize, vec![PART, TAIL, TAIL, TAIL, TAIL]),
            (PART + 5, vec![PART, 5]),
            (PART + TAIL + 1, vec![PART, TAIL, 1]),
            (2 * PART + 1, vec![PART, PART, 1]),
        ] {
            assert_eq!(part_lens(want).collect::<Vec<_>>(), expected, "{want}");
        }
        for want in [
            FROM as usize,
            3 * PART + 5,
            crate::BLOCK_SIZE - 1,
            crate::BLOCK_SIZE,
        ] {
            let lens: Vec<usize> = part_lens(want).collect();
            assert_eq!(lens.iter().sum::<usize>(), want);
            assert!(lens.len() <= MOST, "{want}: {} parts", lens.len());
        }
        assert_eq!(part_lens(crate::BLOCK_SIZE).count(), MOST);
    }

    #[test]
    fn a_large_block_is_read_whole_with_its_crc() {
        for len in [
            FROM as usize,
            3 * PART + 5,
            4 * PART + TAIL + 3,
            crate::BLOCK_SIZE,
        ] {
            let data = block(len, 1);
            let file = file_with(&data);
            let mut out = Vec::with_capacity(len);
            let crc = read_whole(file.as_fd(), &mut out, len).expect("read");
            assert!(out == data, "{len} bytes read back differ");
            // A helper late in this or another test leaves reads alone a while.
            if several_cpus() && !Late::recently() {
                assert_eq!(crc, Some(crc32c(&data)), "{len}");
            }
        }
    }

    /// After the helper was late (lost its CPU mid-part), reads check their own parts
    /// for a while, and read the same bytes.
    #[test]
    fn a_late_helper_is_left_alone_for_a_while() {
        let data = block(4 * PART, 3);
        let file = file_with(&data);
        Late::now();
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
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child's reads hung or were wrong (status {status:#x})"
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
