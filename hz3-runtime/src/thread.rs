//! Thread and process life cycle of one generated type.
//!
//! Owns: creating a thread's cache on first use (shard assignment — the
//! freed block's shard for a thread whose first call is a free, if no thread
//! holds it — adopting the cache parked with the shard, pthread key
//! registration), tearing it down at thread exit (publish remote frees, then
//! park the cache with the shard, or flush it and release the shard), the
//! `fork()` handlers, the exit stats line, and "direct mode" — the
//! lock-protected path that serves threads with no cache (during libc
//! registration, after their own teardown). Must never: allocate through the
//! engine while holding a lock, or leave a shard id taken by an exited thread.

use core::sync::atomic::{fence, Ordering};

use crate::remote;
use crate::shard::{self, Chain};
use crate::stats::{Ctr, StatsSnapshot, NCTR};
use crate::tcache::{self, ThreadCache};
use crate::{Config, State};

/// TLS value of a thread whose cache was torn down (serve it in direct mode).
pub const TORN: usize = 1;

/// This thread's cache pointer as stored (null, `TORN`, or a live cache).
#[inline(always)]
pub fn raw<C: Config>() -> *mut ThreadCache {
    C::tls_get() as *mut ThreadCache
}

/// Whether a raw TLS value is a live cache.
#[inline(always)]
pub fn is_live(tc: *mut ThreadCache) -> bool {
    tc as usize > TORN
}

/// This thread's cache, created on first use; null when the thread must be
/// served in direct mode (torn down, registering, or no memory).
#[cold]
#[inline(never)]
pub fn cache<C: Config>() -> *mut ThreadCache {
    cache_preferring::<C>(usize::MAX)
}

/// [`cache`] for a thread whose first call frees a block of shard `owner`:
/// a new cache takes that shard when no thread holds it (the block's thread
/// has exited), adopting what it parked there. A thread that inherits an
/// exited thread's blocks (thread pools, waves of threads) then frees them
/// locally, into the cache that holds that thread's other free blocks,
/// instead of sending each one to the inbox of a shard nobody holds.
#[cold]
#[inline(never)]
pub fn cache_preferring<C: Config>(owner: usize) -> *mut ThreadCache {
    let tc = raw::<C>();
    if is_live(tc) {
        return tc;
    }
    let st = C::state();
    if tc as usize == TORN || !st.ensure_init() || !register::<C>(st) {
        return core::ptr::null_mut();
    }
    create::<C>(st, owner)
}

/// Register the thread-exit key, fork handlers and exit line once. False while
/// the registration is running (a re-entrant call from libc is served directly).
fn register<C: Config>(st: &State<C>) -> bool {
    match st.registered.compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {}
        Err(2) => return true,
        Err(_) => return false,
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor is an `extern "C" fn`
    // that accepts any pointer we stored with pthread_setspecific.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit::<C>)) } == 0 {
        st.key.store(key + 1, Ordering::Relaxed);
    }
    // SAFETY: getpid has no preconditions.
    st.pid.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    // SAFETY: the handlers are `extern "C" fn()`s valid for the whole process.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare::<C>), Some(fork_parent::<C>), Some(fork_child::<C>));
    }
    if crate::options::exit_lines_wanted(C::STATS) {
        // SAFETY: as above; the handler only reads counters and writes one file.
        unsafe { libc::atexit(print_at_exit::<C>) };
    }
    // Release: the key is visible to threads that see the registration done.
    st.registered.store(2, Ordering::Release);
    true
}

/// A cache for this thread, on shard `hint` if no thread holds it (any
/// value otherwise: see [`acquire_shard`]).
fn create<C: Config>(st: &State<C>, hint: usize) -> *mut ThreadCache {
    if st.creates.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
        sweep_dead::<C>(st);
    }
    let si = acquire_shard::<C>(st, hint);
    // The cache the shard's last thread parked with it, warm: its bins,
    // stash and fresh runs hold that thread's free blocks, which this thread
    // allocates without a refill (and no flush or release at that exit).
    let mut tc = shard::take_parked_cache(st, si) as *mut ThreadCache;
    let adopted = !tc.is_null();
    if !adopted {
        tc = pooled_cache::<C>(st);
        if tc.is_null() {
            // No memory for a cache: give the shard back (served directly).
            // SAFETY: `si` was taken above and holds nothing of this thread.
            unsafe { release_shard::<C>(st, si) };
            return tc;
        }
    }
    // SAFETY: `tc` is ours alone until published to TLS below (a pool cache,
    // or a parked one taken off its shard); `tid` is written under the pool
    // lock (the sweep reads it there).
    unsafe {
        if !adopted {
            (*tc).reset(si);
        }
        if C::HARDEN {
            (*tc).keys = crate::harden::CacheKeys::of::<C>();
        }
        let held = st.pool.lock();
        (*tc).tid = libc::gettid();
        drop(held);
    }
    // Publish to TLS before pthread_setspecific: that call may allocate, and the
    // re-entrant allocation must find this cache instead of creating another.
    C::tls_set(tc as *mut u8);
    let key = st.key.load(Ordering::Relaxed);
    if key != 0 {
        // SAFETY: the key was created by `register`.
        unsafe { libc::pthread_setspecific(key - 1, tc as *const libc::c_void) };
    }
    tc
}

/// An unused cache from the pool, or a new mapping (null when out of memory).
fn pooled_cache<C: Config>(st: &State<C>) -> *mut ThreadCache {
    let mut pool = st.pool.lock();
    let tc = pool.free as *mut ThreadCache;
    if !tc.is_null() {
        // SAFETY: pool members are caches mapped below and not in use.
        pool.free = unsafe { (*tc).pool_next } as usize;
        return tc;
    }
    drop(pool);
    let bytes = (core::mem::size_of::<ThreadCache>() + crate::os::PAGE_SIZE - 1) & !(crate::os::PAGE_SIZE - 1);
    let tc = crate::os::map_rw(bytes) as *mut ThreadCache;
    if tc.is_null() {
        return tc;
    }
    let held = st.pool.lock();
    // SAFETY: `tc` is a fresh zeroed mapping of a whole ThreadCache (all-zero
    // is a valid value: null pointers, zero counters).
    unsafe { (*tc).all_next = st.pool_all.load(Ordering::Relaxed) as *mut ThreadCache };
    st.pool_all.store(tc as usize, Ordering::Relaxed);
    drop(held);
    tc
}

/// Put an unused cache on the pool's free list.
///
/// # Safety
/// No thread uses `tc`; it holds no blocks.
unsafe fn pool_push<C: Config>(st: &State<C>, tc: *mut ThreadCache) {
    let mut pool = st.pool.lock();
    // SAFETY: `tc` is a cache nobody uses (contract); caches are never unmapped.
    unsafe { (*tc).pool_next = pool.free as *mut ThreadCache };
    pool.free = tc as usize;
    drop(pool);
}

/// A cache [`shard::purge_parked`] took off a shard whose delay passed:
/// empty it into the central and put it back in the pool.
///
/// # Safety
/// `tc` was parked by `shard::leave` and taken off its shard by the caller:
/// no thread uses it.
pub unsafe fn recycle_parked<C: Config>(st: &State<C>, tc: *mut ThreadCache) {
    // SAFETY: no thread uses `tc` (contract); its blocks are its shard's.
    unsafe {
        tcache::drain_all::<C>(tc);
        pool_push::<C>(st, tc);
    }
}

/// Take shard `hint` if it is a shard no thread holds, else the lowest free
/// shard with a parked cache, else the lowest free shard id, or share the
/// least loaded one when all are taken. (Shards held
/// by threads that died without teardown come back through the periodic
/// sweep in `create`; sweeping here, on every creation while all shards are
/// busy, would cost a system call per live thread each time.)
fn acquire_shard<C: Config>(st: &State<C>, hint: usize) -> usize {
    // Take shard `i` if no thread holds it (AcqRel: the taker sees what the
    // last holder left in it, and the shard's `live` count is its claim).
    let take_free = |i: usize| shard::shard(st, i).live.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_ok();
    if hint < C::SHARDS && take_free(hint) {
        return hint;
    }
    // A shard whose last thread parked its cache there first: the cache's
    // blocks and the shard's free pages are warm, and adopting the cache
    // gives its warm park back for the next exit. (Left beside a lower free
    // shard, a parked cache kept its park for the whole purge delay while
    // the exits after it flushed their caches and purged.)
    // Parked caches are warm parks: none reserved, none to look for.
    if shard::warm_parks(st) != 0 {
        if let Some(i) = (0..C::SHARDS).find(|&i| shard::has_parked_cache(shard::shard(st, i)) && take_free(i)) {
            return i;
        }
    }
    if let Some(i) = (0..C::SHARDS).find(|&i| take_free(i)) {
        return i;
    }
    let mut best = 0;
    let mut best_live = u32::MAX;
    for i in 0..C::SHARDS {
        let l = shard::shard(st, i).live.load(Ordering::Relaxed);
        if l < best_live {
            best = i;
            best_live = l;
        }
    }
    shard::shard(st, best).live.fetch_add(1, Ordering::AcqRel);
    best
}

/// Give up shard `si` taken by `acquire_shard` for a thread that has no cache.
///
/// # Safety
/// The caller counted itself in shard `si`'s `live` and holds none of its blocks.
unsafe fn release_shard<C: Config>(st: &State<C>, si: usize) {
    if shard::shard(st, si).live.fetch_sub(1, Ordering::SeqCst) == 1 {
        // The shard's last holder: what was pushed to its inbox meanwhile
        // goes to the central (see `retire`).
        // SAFETY: `si` is one of this state's shards.
        unsafe { tcache::drain_inbox::<C>(st, si) };
    }
}

/// pthread key destructor: publish remote frees, leave the shard (parking
/// the cache with it, or emptying it).
extern "C" fn thread_exit<C: Config>(arg: *mut libc::c_void) {
    let tc = arg as *mut ThreadCache;
    if !is_live(tc) {
        return;
    }
    // Later allocations of this thread (other destructors) go to direct mode.
    C::tls_set(TORN as *mut u8);
    let st = C::state();
    // SAFETY: `tc` is this thread's cache and no longer reachable through TLS.
    unsafe {
        let held = st.pool.lock();
        (*tc).tid = 0;
        drop(held);
        retire::<C>(st, tc);
    }
    // The last thread of the type returns every freed page at once; others
    // leave what the next threads may reuse for the purge delay.
    if shard::purge_at_exit::<C>(st) {
        crate::large::purge_at_exit(st);
    } else {
        crate::large::purge_tick(st);
    }
}

/// Retire a cache whose thread is gone: publish its remote frees and give up
/// its shard. The shard's only holder parks the cache with the shard when
/// one of the warm parks is free (`shard::leave`), its blocks still in it;
/// otherwise the cache is emptied into the central and goes back to the
/// pool, and the shard's last holder also gives the shard's inbox to the
/// central and trims it.
///
/// # Safety
/// No thread uses `tc` any more.
unsafe fn retire<C: Config>(st: &State<C>, tc: *mut ThreadCache) {
    // SAFETY: no thread uses `tc` any more (contract): it is ours to drain;
    // its buffer holds only blocks its thread freed.
    let si = unsafe {
        remote::publish_all::<C>(st, &mut (*tc).remote, &(*tc).ctr);
        (*tc).shard as usize
    };
    let warm = shard::reserve_warm(st);
    if warm {
        // SAFETY: as above.
        unsafe { tcache::shed_for_park::<C>(tc, tcache::PARK_BIN_BYTES) };
    }
    let left = shard::leave(st, si, tc as usize, warm);
    if left.parked {
        return;
    }
    // SAFETY: as above (the cache stays mapped: caches are never unmapped).
    unsafe {
        tcache::drain_all::<C>(tc);
        pool_push::<C>(st, tc);
    }
    if left.last {
        // SeqCst decrement (in `leave`), then the drain's SeqCst inbox loads
        // — against the publisher's SeqCst push, then SeqCst load of `live`
        // (see `publish_to_inbox`): either this drain sees the push, or the
        // publisher sees `live == 0` and drains it itself. Nothing is left
        // behind. (The fence is redundant with that; it is on a rare path.)
        fence(Ordering::SeqCst);
        // SAFETY: `si` is the cache's shard, which exists.
        unsafe { tcache::drain_inbox::<C>(st, si) };
    }
}

/// Publish a chain of shard `owner`'s blocks to its inbox, for a publisher
/// that saw the shard held. The shard's last thread may have left between
/// that check and the push (its exit drains the inbox once): re-checked
/// after the push, and a publisher that finds the shard unheld takes the bin
/// back out and gives it to the central itself. Returns the blocks now counted
/// in the inbox bin (a hint, 0 when the publisher drained it).
///
/// Ordering: push (SeqCst CAS of the inbox head), then SeqCst load of
/// `live` — against the owner's SeqCst `live` decrement, then its drain's
/// SeqCst loads of the inbox heads (in `retire`). All four are in one total
/// order consistent with program order (a store-buffering pattern, which
/// SeqCst forbids to end with both loads reading the old values): if the
/// publisher's load comes after the decrement it reads `live == 0` (or a
/// later holder's increment, and that holder then owns the inbox); else the
/// push precedes the drain's load, which sees it (or a later push or take
/// that includes it). On x86 a SeqCst CAS is the same locked instruction as
/// a release one and a SeqCst load a plain load: no fence instruction per
/// publish (there was one).
///
/// # Safety
/// The chain is a sealed carrier list (`remote::unpack`) of free blocks of
/// `bin` owned by shard `owner`, the caller's alone.
pub unsafe fn publish_to_inbox<C: Config>(st: &State<C>, owner: usize, bin: usize, chain: Chain) -> u32 {
    let sh = shard::shard(st, owner);
    // SAFETY: the chain holds free blocks of `bin` owned by `owner` (contract).
    let n = unsafe { sh.inbox.push::<C>(bin, chain) };
    if sh.live.load(Ordering::SeqCst) == 0 {
        // SAFETY: `owner` is one of this state's shards (the chain's blocks are its).
        unsafe { shard::give_inbox::<C>(st, owner, bin) };
        return 0;
    }
    n
}

/// Creations between two sweeps for dead threads.
const SWEEP_EVERY: usize = 64;

/// Reclaim the caches of threads that exited without running the thread-exit
/// key destructor (a thread whose first allocation came in glibc's last
/// destructor round). A cache is reclaimed only when the kernel says its
/// thread id no longer exists in this process; a reused id only delays it.
///
/// A process made by a raw `fork`/`clone` system call (no `pthread_atfork`
/// handlers ran) inherits caches stamped with its parent's thread ids, which
/// do not exist in it: one of them is the live cache of the thread that made
/// the copy. A changed process id says so; the inherited caches are then
/// marked never reclaimable (as the fork handler does) before any is probed.
///
/// `errno` is saved and restored: the probe's `ESRCH` must not leak out of the
/// `malloc` or `free` that ran the sweep.
#[cold]
fn sweep_dead<C: Config>(st: &State<C>) {
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if pid != st.pid.load(Ordering::Relaxed) {
        forget_inherited::<C>(st, pid);
    }
    sweep_dead_of::<C>(st, pid);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// In a process copied without the fork handlers: mark every cache never
/// reclaimable and record the new process id.
#[cold]
fn forget_inherited<C: Config>(st: &State<C>, pid: libc::pid_t) {
    let held = st.pool.lock();
    let mut tc = st.pool_all.load(Ordering::Relaxed) as *mut ThreadCache;
    while !tc.is_null() {
        // SAFETY: caches are never unmapped; `tid` is written under the pool lock.
        unsafe {
            (*tc).tid = 0;
            tc = (*tc).all_next;
        }
    }
    st.pid.store(pid, Ordering::Relaxed);
    drop(held);
}

fn sweep_dead_of<C: Config>(st: &State<C>, pid: libc::pid_t) {
    let mut tc = st.pool_all.load(Ordering::Relaxed) as *mut ThreadCache;
    while !tc.is_null() {
        // SAFETY: caches are never unmapped; `tid` is read and cleared under
        // the pool lock, so one sweeper at most claims a dead cache.
        let dead = unsafe {
            let held = st.pool.lock();
            let tid = (*tc).tid;
            let dead = tid != 0
                && libc::syscall(libc::SYS_tgkill, pid, tid, 0) == -1
                && *libc::__errno_location() == libc::ESRCH;
            if dead {
                (*tc).tid = 0;
            }
            drop(held);
            dead
        };
        if dead {
            // SAFETY: the thread that used `tc` no longer exists.
            unsafe { retire::<C>(st, tc) };
        }
        // SAFETY: as above.
        tc = unsafe { (*tc).all_next };
    }
}

/// Direct mode allocation of one block of `bin` (from shard 0's central).
pub fn direct_alloc<C: Config>(st: &State<C>, bin: usize) -> *mut u8 {
    if C::STATS {
        st.shared_ctr.bump_shared(Ctr::Allocs);
    }
    // SAFETY: the guard is shard 0's locked central.
    let chain = unsafe { shard::take(st, 0, &mut shard::shard(st, 0).lock(), bin, 1) };
    if C::HARDEN && !chain.head.is_null() {
        // SAFETY: a free block of at least 16 bytes, about to be handed out.
        unsafe { crate::harden::clear_mark(chain.head) };
    }
    chain.head
}

/// Direct mode free of block `p` of `bin` owned by `owner`.
///
/// # Safety
/// `p` is a live block of `bin` owned by shard `owner`.
pub unsafe fn direct_free<C: Config>(st: &State<C>, p: *mut u8, bin: usize, owner: usize) {
    let mut c = Chain::EMPTY;
    // SAFETY: `p` is a block of `bin` being freed (contract): free now, and
    // referenced by nothing else.
    unsafe { c.push_back::<C>(p) };
    // SAFETY: the chain holds one free block of `bin` owned by `owner`.
    unsafe { shard::give_chain::<C>(st, owner, bin, c) };
}

extern "C" fn fork_prepare<C: Config>() {
    let st = C::state();
    if !st.ready() {
        return;
    }
    st.pool.raw_lock().lock();
    for i in 0..C::SHARDS {
        shard::shard(st, i).raw_lock().lock();
    }
    st.arena.lock.raw_lock().lock();
    st.huge.raw_lock().lock();
}

extern "C" fn fork_parent<C: Config>() {
    let st = C::state();
    if !st.ready() {
        return;
    }
    st.huge.raw_lock().unlock();
    st.arena.lock.raw_lock().unlock();
    for i in (0..C::SHARDS).rev() {
        shard::shard(st, i).raw_lock().unlock();
    }
    st.pool.raw_lock().unlock();
}

extern "C" fn fork_child<C: Config>() {
    let st = C::state();
    // SAFETY: getpid has no preconditions.
    st.pid.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    if st.ready() {
        st.reset_locks_after_fork();
        // The other threads' caches may have been mid-operation at the fork:
        // never reclaim them (they are simply lost to the child).
        let me = raw::<C>();
        let mut tc = st.pool_all.load(Ordering::Relaxed) as *mut ThreadCache;
        while !tc.is_null() {
            // SAFETY: only this thread exists in the child; caches are never unmapped.
            unsafe {
                if tc != me {
                    (*tc).tid = 0;
                } else {
                    (*tc).tid = libc::gettid();
                }
                tc = (*tc).all_next;
            }
        }
    }
}

extern "C" fn print_at_exit<C: Config>() {
    crate::stats::print_at_exit(C::NAME, C::STATS, &snapshot::<C>());
}

/// Sum of every cache's counters and the shared set.
pub fn snapshot<C: Config>() -> StatsSnapshot {
    let st = C::state();
    let mut sums = [0u64; NCTR];
    let mut cached = 0;
    st.shared_ctr.add_to(&mut sums);
    let held = st.pool.lock();
    let mut tc = st.pool_all.load(Ordering::Relaxed) as *mut ThreadCache;
    while !tc.is_null() {
        // SAFETY: caches are never unmapped; counters are atomics.
        unsafe {
            (*tc).ctr.add_to(&mut sums);
            cached += (*tc).cached_blocks();
            tc = (*tc).all_next;
        }
    }
    drop(held);
    StatsSnapshot::from_sums(&sums, C::PTAG == crate::Ptag::Late, cached)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{Ptag, State};

    std::thread_local! {
        static SLOT: core::cell::Cell<*mut u8> = const { core::cell::Cell::new(core::ptr::null_mut()) };
    }
    struct Race;
    impl Config for Race {
        const NAME: &'static str = "Race";
        const S110_META: bool = true;
        const FREE_FAST: bool = false;
        const PTAG: Ptag = Ptag::Late;
        const STATS: bool = false;
        const FAILFAST: bool = false;
        const SHARDS: usize = 4;
        const ARENA_SIZE: usize = 1 << 30;
        const PURGE: bool = true;
        fn state() -> &'static State<Self> {
            static S: State<Race> = State::new();
            &S
        }
        fn tls_get() -> *mut u8 {
            SLOT.with(|c| c.get())
        }
        fn tls_set(p: *mut u8) {
            SLOT.with(|c| c.set(p))
        }
    }

    /// A remote free whose publisher saw the owner shard held, while the
    /// shard's last thread left before the push (and drained its inbox):
    /// the push step must not leave the chain in an inbox nobody holds.
    /// (Run with the old push step — `Inbox::push` alone — the block stays
    /// in the inbox and this test fails.)
    #[test]
    fn push_after_the_owner_left_leaves_nothing_in_the_inbox() {
        let (p, si) = std::thread::spawn(|| {
            // SAFETY: a valid size and alignment.
            let p = unsafe { crate::api::alloc::<Race>(64, 16) };
            assert!(!p.is_null());
            // SAFETY: the thread's cache is live after its first allocation.
            (p as usize, unsafe { (*raw::<Race>()).shard } as usize)
        })
        .join()
        .unwrap();
        let st = Race::state();
        assert_eq!(shard::shard(st, si).live.load(Ordering::Relaxed), 0, "the owner has left");
        let bin = crate::size_class::bin_of(64);
        // SAFETY: `p` is a block of the exited thread's shard, freed here once.
        unsafe {
            let c = crate::remote::carrier_of_one::<Race>(p as *mut u8);
            publish_to_inbox::<Race>(st, si, bin, c);
        }
        assert!(shard::shard(st, si).inbox.take(bin).is_null(), "the freed block was left in an unheld shard's inbox");
    }

    macro_rules! stats_config {
        ($t:ident, $slot:ident) => {
            std::thread_local! {
                static $slot: core::cell::Cell<*mut u8> = const { core::cell::Cell::new(core::ptr::null_mut()) };
            }
            struct $t;
            impl Config for $t {
                const NAME: &'static str = stringify!($t);
                const S110_META: bool = true;
                const FREE_FAST: bool = false;
                const PTAG: Ptag = Ptag::Late;
                const STATS: bool = true;
                const FAILFAST: bool = false;
                const SHARDS: usize = 4;
                const ARENA_SIZE: usize = 1 << 30;
                const PURGE: bool = true;
                fn state() -> &'static State<Self> {
                    static S: State<$t> = State::new();
                    &S
                }
                fn tls_get() -> *mut u8 {
                    $slot.with(|c| c.get())
                }
                fn tls_set(p: *mut u8) {
                    $slot.with(|c| c.set(p))
                }
            }
        };
    }

    /// A thread of type `C` that allocates and frees one block, then holds
    /// its shard until the returned sender is dropped.
    fn holder<C: Config>() -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            // SAFETY: a valid size and alignment; the block is freed at once.
            unsafe { crate::api::free::<C>(crate::api::alloc::<C>(32, 16)) };
            ready_tx.send(()).unwrap();
            let _ = done_rx.recv();
        });
        ready_rx.recv().unwrap();
        (done_tx, h)
    }

    fn alloc_n<C: Config>(n: usize, size: usize) -> std::vec::Vec<usize> {
        (0..n)
            .map(|_| {
                // SAFETY: a valid size and alignment.
                let p = unsafe { crate::api::alloc::<C>(size, 16) };
                assert!(!p.is_null());
                p as usize
            })
            .collect()
    }

    fn free_all<C: Config>(ps: &[usize]) {
        for &p in ps {
            // SAFETY: each block is live and freed once.
            unsafe { crate::api::free::<C>(p as *mut u8) };
        }
    }

    stats_config!(Adopt, ADOPT_SLOT);

    /// The last thread of a shard parks its cache with it; the next thread
    /// on the shard adopts it and allocates the blocks the first one freed
    /// without a single refill. (Before parking, a thread's exit gave every
    /// cached block back to the central and the next thread refilled each
    /// class it used: this test counted 2 refills.)
    #[test]
    fn the_next_thread_on_a_shard_allocates_from_the_parked_cache() {
        let (hold, h) = holder::<Adopt>();
        std::thread::spawn(|| free_all::<Adopt>(&alloc_n::<Adopt>(64, 64))).join().unwrap();
        let before = snapshot::<Adopt>();
        std::thread::spawn(|| free_all::<Adopt>(&alloc_n::<Adopt>(64, 64))).join().unwrap();
        let after = snapshot::<Adopt>();
        drop(hold);
        h.join().unwrap();
        assert_eq!(after.allocs - before.allocs, 64);
        assert_eq!(after.refills - before.refills, 0, "the second thread refilled: it did not adopt the parked cache");
    }

    stats_config!(Shed, SHED_SLOT);

    /// A parked cache keeps `PARK_BIN_BYTES` of each bin, the most recently
    /// freed blocks, and gives the older ones back: the next thread allocates
    /// exactly the kept blocks (distinct, usable) without a refill, then refills.
    #[test]
    fn a_parked_cache_keeps_its_newest_blocks_within_the_bin_budget() {
        let (hold, h) = holder::<Shed>();
        // 128-byte blocks: after its flushes a bin holds at least half of its
        // cap (`max_limit`, 256 blocks), so 16 KiB of them are there to keep.
        let size = 128;
        let kept = (crate::tcache::PARK_BIN_BYTES as usize) / size;
        std::thread::spawn(move || free_all::<Shed>(&alloc_n::<Shed>(8 * kept, size))).join().unwrap();
        let before = snapshot::<Shed>();
        let (ps, between, more) = std::thread::spawn(move || {
            let ps = alloc_n::<Shed>(kept, size);
            let between = snapshot::<Shed>();
            let more = alloc_n::<Shed>(1, size);
            for &p in &ps {
                // SAFETY: each block is a live block of `size` bytes.
                unsafe { (p as *mut u8).write_bytes(0x5a, size) };
            }
            free_all::<Shed>(&more);
            free_all::<Shed>(&ps);
            (ps, between, more)
        })
        .join()
        .unwrap();
        drop(hold);
        h.join().unwrap();
        let mut sorted = ps.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), kept, "a kept block was handed out twice");
        assert!(!ps.contains(&more[0]));
        assert_eq!(between.refills - before.refills, 0, "the kept blocks were not all in the parked cache");
        assert!(snapshot::<Shed>().refills > between.refills, "more than the bin budget was kept");
    }

    stats_config!(BigKeep, BIG_KEEP_SLOT);

    /// A parked cache keeps one block of each class above its bin budget
    /// (16 KiB a bin: none of the classes above 16 KiB before): the next
    /// thread on the shard gets the 64 KiB block the last one freed without
    /// a refill. (Given back, the block's run was released and its pages
    /// purged at the exit, and the next thread faulted them in again: this
    /// test counted 1 refill.)
    #[test]
    fn a_parked_cache_keeps_a_block_of_each_class_above_the_bin_budget() {
        let (hold, h) = holder::<BigKeep>();
        let size = 64 << 10;
        assert!(size as u32 > crate::tcache::PARK_BIN_BYTES);
        let freed = std::thread::spawn(move || {
            let ps = alloc_n::<BigKeep>(2, size);
            free_all::<BigKeep>(&ps);
            ps
        })
        .join()
        .unwrap();
        let before = snapshot::<BigKeep>();
        let (got, between) = std::thread::spawn(move || {
            let got = alloc_n::<BigKeep>(1, size);
            let between = snapshot::<BigKeep>();
            free_all::<BigKeep>(&got);
            (got[0], between)
        })
        .join()
        .unwrap();
        drop(hold);
        h.join().unwrap();
        assert_eq!(between.refills - before.refills, 0, "the next thread refilled: the parked cache kept no 64 KiB block");
        assert!(freed.contains(&got), "the block came from elsewhere than the parked cache");
    }

    /// A thread of type `C` that frees `n` blocks of `size` bytes it
    /// allocated, reports its shard, and exits when the returned sender is
    /// dropped.
    fn parker<C: Config>(n: usize, size: usize) -> (u32, std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            free_all::<C>(&alloc_n::<C>(n, size));
            // SAFETY: the thread's cache is live after its first allocation.
            ready_tx.send(unsafe { (*raw::<C>()).shard }).unwrap();
            let _ = done_rx.recv();
        });
        (ready_rx.recv().unwrap(), done_tx, h)
    }

    stats_config!(PreferParked, PREFER_PARKED_SLOT);

    /// A new thread takes a free shard with a parked cache before a lower
    /// free shard without one, and adopts the cache: no refill. (Before, it
    /// took the lowest free shard, whose last thread had found both warm
    /// parks taken and flushed its cache: 1 refill, and the parked cache
    /// kept its warm park while later exits flushed and purged.)
    #[test]
    fn a_new_thread_takes_a_shard_with_a_parked_cache_first() {
        assert_eq!(shard::PARK_WARM_SHARDS, 2, "the test parks two caches, then exits a third thread cold");
        let (hold, h) = holder::<PreferParked>();
        let (s1, e1, t1) = parker::<PreferParked>(64, 64);
        let (s2, e2, t2) = parker::<PreferParked>(64, 64);
        let (s3, e3, t3) = parker::<PreferParked>(64, 64);
        assert!(s1 < s2 && s2 < s3, "shards {s1} {s2} {s3}: each new thread took the lowest free one");
        for (e, t) in [(e2, t2), (e3, t3), (e1, t1)] {
            drop(e);
            t.join().unwrap();
        }
        let st = PreferParked::state();
        assert!(!shard::has_parked_cache(shard::shard(st, s1 as usize)), "the third exit found both warm parks taken");
        assert!(shard::has_parked_cache(shard::shard(st, s2 as usize)));
        let before = snapshot::<PreferParked>();
        let (si, after) = std::thread::spawn(|| {
            let ps = alloc_n::<PreferParked>(1, 64);
            let after = snapshot::<PreferParked>();
            free_all::<PreferParked>(&ps);
            // SAFETY: the thread's cache is live after its first allocation.
            (unsafe { (*raw::<PreferParked>()).shard }, after)
        })
        .join()
        .unwrap();
        drop(hold);
        h.join().unwrap();
        assert_eq!(si, s2, "the new thread took shard {si}, not the lowest one with a parked cache ({s2})");
        assert_eq!(after.refills - before.refills, 0, "the new thread did not adopt the parked cache");
    }

    stats_config!(Hint, HINT_SLOT);

    /// A thread whose first call frees a block of a shard no thread holds
    /// takes that shard: its frees of the exited thread's blocks are local.
    /// The shard is not the lowest free one (which the thread would take
    /// otherwise, and its frees were then all remote: 100 of 100).
    #[test]
    fn a_first_free_takes_the_freed_blocks_shard() {
        let (hold, h) = holder::<Hint>();
        // `a` takes the second shard while `x` holds the first free one.
        let (x_hold, x) = holder::<Hint>();
        let (ps, a_shard) = std::thread::spawn(|| {
            let ps = alloc_n::<Hint>(100, 48);
            // SAFETY: the thread's cache is live after its first allocation.
            (ps, unsafe { (*raw::<Hint>()).shard })
        })
        .join()
        .unwrap();
        drop(x_hold);
        x.join().unwrap();
        let st = Hint::state();
        let lowest_free = (0..Hint::SHARDS).find(|&i| shard::shard(st, i).live.load(Ordering::Relaxed) == 0).unwrap();
        assert_ne!(lowest_free, a_shard as usize, "the test needs the freed blocks' shard not to be the lowest free one");
        let before = snapshot::<Hint>();
        std::thread::spawn(move || free_all::<Hint>(&ps)).join().unwrap();
        let after = snapshot::<Hint>();
        drop(hold);
        h.join().unwrap();
        assert_eq!(after.local - before.local, 100, "the exited thread's blocks were not freed locally");
        assert_eq!(after.remote - before.remote, 0);
    }
}
