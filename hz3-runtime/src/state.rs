//! The per-type engine state and its one-time initialisation.
//!
//! Owns: `State<C>` (the arena, the shard array, the thread-cache pool, the
//! huge-mapping registry, shared counters) and `ensure_init`. Must never:
//! allocate through anything but `os`; initialisation makes no call that could
//! come back into this allocator (registration with libc happens later, in
//! `thread`, where a re-entrant call is served without a cache).

use core::marker::PhantomData;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::arena::Arena;
use crate::large::HugeRegistry;
use crate::shard::Shard;
use crate::stats::Counters;
use crate::sync::SpinMutex;
use crate::Config;

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

/// What the pool lock protects: the unused thread caches.
pub struct Pool {
    /// First unused cache (a `*mut ThreadCache`, linked by `pool_next`; 0 = none).
    pub free: usize,
}

/// Per-type engine state; the macro emits one `static` of it per generated type.
pub struct State<C: Config> {
    /// The arena (and tag map).
    pub arena: Arena,
    /// `C::SHARDS` shards, mapped at init.
    pub shards: AtomicUsize,
    /// Failfast: one live bit per 16 arena bytes (0 unless `C::FAILFAST`).
    pub live_bits: AtomicUsize,
    init: AtomicU8,
    /// Registration with libc (thread key, fork handlers, exit line): 0/1/2.
    pub registered: AtomicU8,
    /// `pthread_key_t` + 1 of the thread-exit key (0 = none).
    pub key: AtomicU32,
    /// The cache pool: its list of unused caches, behind the pool lock,
    /// which also serialises the writes of each cache's `tid` (the sweep
    /// reads it under the lock) and `pool_next`.
    pub pool: SpinMutex<Pool>,
    /// Every thread cache ever created (`*mut ThreadCache`), for snapshots.
    pub pool_all: AtomicUsize,
    /// Caches handed to threads so far (paces the sweep for dead threads).
    pub creates: AtomicUsize,
    /// Process id the thread ids in the caches belong to (set at
    /// registration and in the fork child handler; a process copied without
    /// the handlers sees another one).
    pub pid: AtomicI32,
    /// Direct mappings made while the arena is missing (paces the retries).
    arena_misses: AtomicUsize,
    /// Direct mappings (huge blocks, over-aligned blocks, arena exhaustion).
    pub huge: HugeRegistry,
    /// Counters of threads without a cache.
    pub shared_ctr: Counters,
    /// `harden`: the free-list link key (zero otherwise, and until init).
    pub link_key: crate::harden::LinkKey,
    /// Shards (bit `i % 64`) with an inbox bin holding more than
    /// `remote::INBOX_LONG_BYTES`: any thread's slow path gives such bins,
    /// once old, to their central (`remote::collect_long`).
    pub long_inboxes: AtomicU64,
    /// When `collect_long` last ran (ms, `os::now_ms`).
    pub last_collect: AtomicU64,
    /// Shards parked warm now (`shard::leave`, at most `shard::PARK_WARM_SHARDS`).
    pub parked_warm: AtomicUsize,
    _c: PhantomData<fn() -> C>,
}

impl<C: Config> State<C> {
    /// The initial state: nothing mapped.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        State {
            arena: Arena::new(),
            shards: AtomicUsize::new(0),
            live_bits: AtomicUsize::new(0),
            init: AtomicU8::new(UNINIT),
            registered: AtomicU8::new(0),
            key: AtomicU32::new(0),
            pool: SpinMutex::new(Pool { free: 0 }),
            pool_all: AtomicUsize::new(0),
            creates: AtomicUsize::new(0),
            pid: AtomicI32::new(0),
            arena_misses: AtomicUsize::new(0),
            huge: HugeRegistry::new(),
            shared_ctr: Counters::new(),
            link_key: crate::harden::LinkKey::new(),
            long_inboxes: AtomicU64::new(0),
            last_collect: AtomicU64::new(0),
            parked_warm: AtomicUsize::new(0),
            _c: PhantomData,
        }
    }

    /// Whether the arena and shards exist (false until first use, or when the
    /// OS gave no memory at all).
    #[inline(always)]
    pub fn ready(&self) -> bool {
        self.init.load(Ordering::Acquire) == READY && self.shards.load(Ordering::Relaxed) != 0
    }

    /// Initialise; returns whether shards exist. Another thread arriving
    /// meanwhile waits (initialisation makes only `mmap` calls). A failed
    /// initialisation (no memory for the shards) is not kept: the next call
    /// tries again, so a program whose memory limit is raised recovers.
    #[cold]
    #[inline(never)]
    pub fn ensure_init(&self) -> bool {
        loop {
            match self.init.compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => {
                    let ok = self.do_init();
                    // Release: everything set up above is visible to acquirers.
                    self.init.store(if ok { READY } else { UNINIT }, Ordering::Release);
                    return ok;
                }
                Err(READY) => break,
                Err(_) => crate::os::yield_now(),
            }
        }
        self.shards.load(Ordering::Relaxed) != 0
    }

    fn do_init(&self) -> bool {
        let shard_bytes = C::SHARDS * core::mem::size_of::<Shard>();
        let shards = crate::os::map_rw(shard_bytes);
        if shards.is_null() {
            return false;
        }
        if C::HARDEN {
            crate::harden::init_key(self);
        }
        if self.arena.init(C::ARENA_SIZE) && C::FAILFAST {
            let bits = crate::os::map_rw(self.arena.len.load(Ordering::Relaxed) / 128);
            self.live_bits.store(bits as usize, Ordering::Relaxed);
        }
        crate::options::at_type_init(C::NAME, self.arena.len.load(Ordering::Relaxed), C::SHARDS, C::STATS);
        // Zeroed memory is a valid array of empty shards.
        self.shards.store(shards as usize, Ordering::Release);
        true
    }

    /// The arena could not be reserved at initialisation and a block is being
    /// mapped directly instead: try to reserve it again, on the 1st, 2nd,
    /// 4th, ... such mapping and then every 1024th (a few `mmap` calls per
    /// retry against one per direct mapping), so a program whose address
    /// space limit is raised gets the arena back.
    ///
    /// The arena appears under the arena lock: every block carved from it is
    /// taken under that lock after the arena's fields were written, so a
    /// thread that later frees such a block sees them (it received the block
    /// through some ordering from the thread that took it). Failfast's
    /// live-block map is not made for a late arena (its double-free test is
    /// then off; a map made while blocks are live would report them).
    #[cold]
    pub fn retry_arena(&self) {
        if self.arena.len.load(Ordering::Relaxed) != 0 || self.shards.load(Ordering::Relaxed) == 0 {
            return;
        }
        let n = self.arena_misses.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_power_of_two() && !n.is_multiple_of(1024) {
            return;
        }
        let held = self.arena.lock.lock();
        if self.arena.len.load(Ordering::Relaxed) == 0 {
            self.arena.init(C::ARENA_SIZE);
        }
        drop(held);
    }

    /// Re-initialise the locks in a `fork()` child.
    pub fn reset_locks_after_fork(&self) {
        self.arena.lock.raw_lock().reset();
        self.pool.raw_lock().reset();
        self.huge.raw_lock().reset();
        for i in 0..C::SHARDS {
            crate::shard::shard(self, i).raw_lock().reset();
        }
    }
}
