//! Running a workload on a team of threads in two phases: an untimed warm-up, then the timed pass.
//!
//! Threads are spawned (allocating from the process's global allocator) before the
//! warm-up and live through both phases, so the timed pass never spawns, joins or allocates on
//! the harness side. The main thread starts the clock, releases the phase, and stops the clock
//! when every worker has reported its work done; per-thread cleanup (freeing what is still
//! live) happens after that, off the clock.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The warm-up phase number.
pub const WARM: u32 = 1;
/// The timed phase number.
pub const TIMED: u32 = 2;
/// Both phases, in order.
pub const PHASES: [u32; 2] = [WARM, TIMED];

/// Spin briefly, then yield: the bench machine may have fewer cores than threads.
#[inline]
pub fn relax(spins: &mut u32) {
    if *spins < 64 {
        std::hint::spin_loop();
        *spins += 1;
    } else {
        std::thread::yield_now();
    }
}

/// Wait until `cond` holds, spinning then yielding.
#[inline]
pub fn wait_until(mut cond: impl FnMut() -> bool) {
    let mut s = 0;
    while !cond() {
        relax(&mut s);
    }
}

/// Phase control shared by the main thread and the workers.
pub struct Phases {
    go: AtomicU32,
    done: AtomicUsize,
    cleaned: AtomicUsize,
}

impl Phases {
    /// Worker: block until the main thread opens `phase`.
    pub fn start(&self, phase: u32) {
        wait_until(|| self.go.load(Ordering::Acquire) >= phase);
    }
    /// Worker: this thread's measured work for the current phase is finished.
    pub fn done(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
    }
    /// Worker: this thread's off-the-clock cleanup for the current phase is finished.
    pub fn cleaned(&self) {
        self.cleaned.fetch_add(1, Ordering::AcqRel);
    }
}

/// Run `worker(tid, &phases)` on `threads` threads. Each worker must, for each phase in
/// [`PHASES`]: `start(phase)`, do the work, `done()`, clean up, `cleaned()`.
/// `before_phase(phase)` runs on the main thread right before a phase opens (on the clock for
/// [`TIMED`]). Returns the wall time of the timed phase.
pub fn run<W, B>(threads: usize, worker: W, mut before_phase: B) -> Duration
where
    W: Fn(usize, &Phases) + Sync,
    B: FnMut(u32),
{
    let ph = Phases {
        go: AtomicU32::new(0),
        done: AtomicUsize::new(0),
        cleaned: AtomicUsize::new(0),
    };
    let mut timed = Duration::ZERO;
    std::thread::scope(|s| {
        for tid in 0..threads {
            let (ph, worker) = (&ph, &worker);
            std::thread::Builder::new()
                .name(format!("bench-{tid}"))
                .spawn_scoped(s, move || worker(tid, ph))
                .expect("spawn bench thread");
        }
        for phase in PHASES {
            let want = threads * phase as usize;
            let t0 = Instant::now();
            before_phase(phase);
            ph.go.store(phase, Ordering::Release);
            wait_until(|| ph.done.load(Ordering::Acquire) >= want);
            if phase == TIMED {
                timed = t0.elapsed();
            }
            wait_until(|| ph.cleaned.load(Ordering::Acquire) >= want);
        }
    });
    timed
}

/// A reusable counting barrier for a fixed number of threads; never resets, each caller keeps
/// its own generation count.
pub struct SpinBarrier {
    n: usize,
    count: AtomicUsize,
}

impl SpinBarrier {
    /// A barrier for `n` threads.
    pub fn new(n: usize) -> Self {
        SpinBarrier {
            n,
            count: AtomicUsize::new(0),
        }
    }
    /// Arrive and wait for the other `n - 1`; `gen` is this thread's private generation counter.
    pub fn wait(&self, gen: &mut usize) {
        *gen += 1;
        let want = *gen * self.n;
        self.count.fetch_add(1, Ordering::AcqRel);
        wait_until(|| self.count.load(Ordering::Acquire) >= want);
    }
}
