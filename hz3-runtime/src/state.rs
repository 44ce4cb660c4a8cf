//! The per-type engine state and its one-time initialisation.
//!
//! Owns: `State<C>` (the arena, the shard array, the thread-cache pool, the
//! huge-mapping registry, shared counters) and `ensure_init`. Must never:
//! allocate through anything but `os`; initialisation makes no call that could
//! come back into this allocator (registration with libc happens later, in
//! `thread`, where a re-entrant call is served without a cache).

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::arena::Arena;
use crate::large::HugeRegistry;
use crate::shard::Shard;
use crate::stats::Counters;
use crate::sync::SpinLock;
use crate::Config;

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

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
    /// Guards the cache pool.
    pub pool_lock: SpinLock,
    /// Unused thread caches (`*mut ThreadCache`).
    pub pool_free: AtomicUsize,
    /// Every thread cache ever created (`*mut ThreadCache`), for snapshots.
    pub pool_all: AtomicUsize,
    /// Caches handed to threads so far (paces the sweep for dead threads).
    pub creates: AtomicUsize,
    /// Direct mappings (huge blocks, over-aligned blocks, arena exhaustion).
    pub huge: HugeRegistry,
    /// Counters of threads without a cache.
    pub shared_ctr: Counters,
    /// Shards (bit `i % 64`) with an inbox bin holding more than
    /// `remote::INBOX_LONG_BYTES`: any thread's slow path gives such bins,
    /// once old, to their central (`remote::collect_long`).
    pub long_inboxes: AtomicU64,
    /// When `collect_long` last ran (ms, `os::now_ms`).
    pub last_collect: AtomicU32,
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
            pool_lock: SpinLock::new(),
            pool_free: AtomicUsize::new(0),
            pool_all: AtomicUsize::new(0),
            creates: AtomicUsize::new(0),
            huge: HugeRegistry::new(),
            shared_ctr: Counters::new(),
            long_inboxes: AtomicU64::new(0),
            last_collect: AtomicU32::new(0),
            _c: PhantomData,
        }
    }

    /// Whether the arena and shards exist (false until first use, or when the
    /// OS gave no memory at all).
    #[inline(always)]
    pub fn ready(&self) -> bool {
        self.init.load(Ordering::Acquire) == READY && self.shards.load(Ordering::Relaxed) != 0
    }

    /// Initialise once; returns whether shards exist. Another thread arriving
    /// meanwhile waits (initialisation makes only `mmap` calls).
    #[cold]
    #[inline(never)]
    pub fn ensure_init(&self) -> bool {
        loop {
            match self.init.compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => {
                    self.do_init();
                    // Release: everything set up above is visible to acquirers.
                    self.init.store(READY, Ordering::Release);
                    break;
                }
                Err(READY) => break,
                Err(_) => crate::os::yield_now(),
            }
        }
        self.shards.load(Ordering::Relaxed) != 0
    }

    fn do_init(&self) {
        let shard_bytes = C::SHARDS * core::mem::size_of::<Shard>();
        let shards = crate::os::map_rw(shard_bytes);
        if shards.is_null() {
            return;
        }
        if self.arena.init(C::ARENA_SIZE) && C::FAILFAST {
            let bits = crate::os::map_rw(self.arena.len.load(Ordering::Relaxed) / 128);
            self.live_bits.store(bits as usize, Ordering::Relaxed);
        }
        // Zeroed memory is a valid array of empty shards.
        self.shards.store(shards as usize, Ordering::Release);
    }

    /// Re-initialise the locks in a `fork()` child.
    pub fn reset_locks_after_fork(&self) {
        self.arena.lock.reset();
        self.pool_lock.reset();
        self.huge.lock.reset();
        for i in 0..C::SHARDS {
            crate::shard::shard(self, i).lock.reset();
        }
    }
}
