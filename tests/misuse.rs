//! Misuse and edge cases: bad frees in the default configurations, processes
//! made without `fork()`'s handlers, initialisation that fails at first, a
//! remote free racing its owner's exit, `errno` across `free`, and (with
//! `harden: true`) corrupted free lists and double frees.
//!
//! Scenarios that abort, lower a limit or fork run in a child process (this
//! binary re-executed on the one test with `HZ3_REL_CHILD` set); the parent
//! checks how the child ended.

#[macro_use]
mod common;
mod reliability_support;

use reliability_support::*;
use std::alloc::{GlobalAlloc, Layout};

hz3::hz3_allocator! {
    pub struct BadDefault<stats: true>;
    pub struct BadFast<s110_meta: true, free_fast: true, ptag: late, stats: true>;
    pub struct BadFirst<s110_meta: false, ptag: first, stats: true>;
    pub struct BadHeader<s110_meta: false, ptag: off, stats: true>;
    pub struct LargeDefault<stats: true>;
    pub struct LargeFirst<s110_meta: false, ptag: first, stats: true>;
}
impl_hz!(BadDefault, BadFast, BadFirst, BadHeader, LargeDefault, LargeFirst);

fn lay(size: usize) -> Layout {
    Layout::from_size_align(size, 16).unwrap()
}

/// Free through the C interface's route (the sized Rust `dealloc` of a
/// header-route type trusts its layout instead of routing the pointer).
unsafe fn c_free<A: Hz + hz3::Config>(a: &A, p: *mut u8, size: usize, c_route: bool) {
    if c_route {
        // SAFETY: forwarded contract (the route accepts any pointer).
        unsafe { hz3::__private::free::<A>(p) };
    } else {
        // SAFETY: forwarded contract.
        unsafe { a.dealloc(p, lay(size)) };
    }
}

/// A free of a pointer that is not 16-byte aligned is ignored and counted:
/// later allocations never return it (before: `free(a + 1)` made the next
/// `malloc(64)` return `a + 1`).
fn misaligned_free_is_ignored<A: Hz + hz3::Config>(c_route: bool) {
    let a = A::default();
    // SAFETY: valid layouts; the misaligned free is the misuse under test,
    // which the engine must ignore.
    unsafe {
        let keep = a.alloc(lay(64));
        let p = a.alloc(lay(64));
        assert!(!p.is_null() && !keep.is_null());
        let before = A::snapshot().invalid_frees;
        c_free(&a, p.add(1), 64, c_route);
        c_free(&a, p.add(8), 64, c_route);
        assert_eq!(A::snapshot().invalid_frees - before, 2, "{}: misaligned frees not counted", A::TYPE_NAME);
        let got: Vec<*mut u8> = (0..300).map(|_| a.alloc(lay(64))).collect();
        for &q in &got {
            assert_eq!(q as usize & 15, 0, "{}: malloc(64) returned the misaligned {q:p}", A::TYPE_NAME);
            assert_ne!(q, p, "{}: the block still in use was handed out", A::TYPE_NAME);
        }
        for q in got {
            a.dealloc(q, lay(64));
        }
        a.dealloc(p, lay(64));
        a.dealloc(keep, lay(64));
    }
}

#[test]
fn misaligned_free_ignored_default() {
    misaligned_free_is_ignored::<BadDefault>(false);
}

#[test]
fn misaligned_free_ignored_free_fast() {
    misaligned_free_is_ignored::<BadFast>(false);
}

#[test]
fn misaligned_free_ignored_ptag_first() {
    misaligned_free_is_ignored::<BadFirst>(false);
}

#[test]
fn misaligned_free_ignored_header_route() {
    misaligned_free_is_ignored::<BadHeader>(true);
}

/// A free through a pointer inside a large block (not its start) is ignored
/// and counted; the block stays the program's (before: `free(L + 100000)`
/// freed `L`, and the next large allocation returned it again).
fn large_interior_free_is_ignored<A: Hz>() {
    let a = A::default();
    let size = 1200 << 10; // above the biggest class (1016 KiB)
    let l = Blk::new(&a, size, 16, 1);
    let before = A::snapshot().invalid_frees;
    // SAFETY: deliberate frees of interior pointers (one on the block's first
    // data page, one far inside it), which the engine must ignore.
    unsafe {
        a.dealloc((l.p + 100_000) as *mut u8, lay(size));
        a.dealloc((l.p + 16) as *mut u8, lay(size));
        a.dealloc((l.p + 4096) as *mut u8, lay(size));
    }
    assert_eq!(A::snapshot().invalid_frees - before, 3, "{}: interior frees not counted", A::TYPE_NAME);
    let others: Vec<Blk> = (0..4).map(|k| Blk::new(&a, size, 16, 10 + k)).collect();
    for o in &others {
        assert!(o.p + o.size <= l.p || o.p >= l.p + l.size, "{}: {:#x} handed out inside the live {:#x}", A::TYPE_NAME, o.p, l.p);
    }
    l.verify("large block after interior frees");
    for o in others {
        o.free(&a, "other large blocks");
    }
    l.free(&a, "large block");
    assert_eq!(A::snapshot().invalid_frees - before, 3, "{}: a valid free was counted invalid", A::TYPE_NAME);
}

#[test]
fn large_interior_free_ignored_default() {
    large_interior_free_is_ignored::<LargeDefault>();
}

#[test]
fn large_interior_free_ignored_ptag_first() {
    large_interior_free_is_ignored::<LargeFirst>();
}

/// The same free through a pointer far inside a block of a one-block class
/// (600 KiB, a class block since classes reach 1016 KiB): the pointer lies on
/// a page of the run where no block starts, so it is ignored and counted, and
/// the block stays the program's.
fn class_block_far_interior_free_is_ignored<A: Hz>() {
    let a = A::default();
    let size = 600 << 10;
    let l = Blk::new(&a, size, 16, 2);
    let before = A::snapshot().invalid_frees;
    // SAFETY: deliberate frees of interior pointers on pages past the block's
    // first one, which the engine must ignore.
    unsafe {
        a.dealloc((l.p + 100_000) as *mut u8, lay(size));
        a.dealloc((l.p + 4096) as *mut u8, lay(size));
    }
    assert_eq!(A::snapshot().invalid_frees - before, 2, "{}: interior frees not counted", A::TYPE_NAME);
    let others: Vec<Blk> = (0..4).map(|k| Blk::new(&a, size, 16, 20 + k)).collect();
    for o in &others {
        assert!(o.p + o.size <= l.p || o.p >= l.p + l.size, "{}: {:#x} handed out inside the live {:#x}", A::TYPE_NAME, o.p, l.p);
    }
    l.verify("class block after interior frees");
    for o in others {
        o.free(&a, "other class blocks");
    }
    l.free(&a, "class block");
    assert_eq!(A::snapshot().invalid_frees - before, 2, "{}: a valid free was counted invalid", A::TYPE_NAME);
}

#[test]
fn class_block_far_interior_free_ignored_default() {
    class_block_far_interior_free_is_ignored::<LargeDefault>();
}

#[test]
fn class_block_far_interior_free_ignored_ptag_first() {
    class_block_far_interior_free_is_ignored::<LargeFirst>();
}

// ---------------------------------------------------------------------------
// harden: true — the generic suite on every route, then the misuse scenarios
// ---------------------------------------------------------------------------

hz3::hz3_allocator! {
    /// The scale lane hardened (the `libhz3_hardened.so` flags).
    pub struct HardScale<s110_meta: true, free_fast: false, ptag: late, stats: true, harden: true>;
    /// Tag map first, with failfast.
    pub struct HardFirst<s110_meta: true, free_fast: true, ptag: first, harden: true, failfast: true, shards: 4>;
    /// Header route (no tag map, no page meta).
    pub struct HardOff<s110_meta: false, ptag: off, harden: true, shards: 2, arena_gib: 1>;
}

stamp_suite!(suite_hard_scale, HardScale);
stamp_suite!(suite_hard_first, HardFirst);
stamp_suite!(suite_hard_off, HardOff);

/// Parent: run `test` in a child and check it died of SIGABRT with a
/// `hz3 harden [Type]` (or `hz3 failfast [Type]`) line naming the pointer the
/// child announced and one of `words`. Child: run `bad`, which announces
/// (`REL_BAD_PTR=`) and misuses a pointer; returning means nothing aborted.
fn expect_abort(test: &str, ty: &str, words: &[&str], bad: impl FnOnce()) {
    let (line, _) = expect_abort_line(test, &["hz3 harden [", "hz3 failfast ["], words, bad);
    assert!(line.contains(&format!("[{ty}]")), "{test}: abort line does not name {ty}: {line}");
}

/// A global a corrupted free list could be steered to.
static mut TARGET: [u64; 8] = [0; 8];

/// Item 7, first reproduction: one 8-byte write into a freed block (use
/// after free), then mallocs. Unhardened, the 31st malloc returned the
/// address of a global variable; hardened, the corrupted link is caught when
/// the block is popped and the process aborts naming the block.
#[test]
fn use_after_free_write_aborts_under_harden() {
    expect_abort("use_after_free_write_aborts_under_harden", "HardScale", &["free list corrupted"], || {
        let a = HardScale::new();
        // SAFETY: deliberate use after free in a child expected to abort.
        unsafe {
            let live: Vec<*mut u8> = (0..40).map(|_| a.alloc(lay(64))).collect();
            let p = a.alloc(lay(64));
            a.dealloc(p, lay(64));
            announce(p as usize);
            (p as *mut usize).write(std::ptr::addr_of_mut!(TARGET) as usize);
            for _ in 0..100 {
                let q = a.alloc(lay(64));
                assert_ne!(q as usize, std::ptr::addr_of_mut!(TARGET) as usize, "malloc returned the global");
            }
            std::hint::black_box(live);
        }
    });
}

/// Item 7, second reproduction: a double free, then 100,000 `malloc(48)`.
/// Unhardened, 99,969 of them returned the same pointer; hardened, the second
/// free aborts.
#[test]
fn double_free_aborts_under_harden() {
    expect_abort("double_free_aborts_under_harden", "HardScale", &["double free"], || {
        let a = HardScale::new();
        // SAFETY: deliberate double free in a child expected to abort.
        unsafe {
            let keep = a.alloc(lay(48));
            let p = a.alloc(lay(48));
            a.dealloc(p, lay(48));
            announce(p as usize);
            a.dealloc(p, lay(48));
            let mut same = 0;
            for _ in 0..100_000 {
                if a.alloc(lay(48)) == p {
                    same += 1;
                }
            }
            eprintln!("{same} of 100000 mallocs returned the doubly freed block");
            std::hint::black_box(keep);
        }
    });
}

/// A double free with other frees in between is caught too (the mark stays
/// on the block while it is free).
#[test]
fn double_free_after_other_frees_aborts_under_harden() {
    expect_abort("double_free_after_other_frees_aborts_under_harden", "HardScale", &["double free"], || {
        let a = HardScale::new();
        // SAFETY: deliberate double free in a child expected to abort.
        unsafe {
            let v: Vec<*mut u8> = (0..8).map(|_| a.alloc(lay(96))).collect();
            a.dealloc(v[3], lay(96));
            for &q in &v[4..] {
                a.dealloc(q, lay(96));
            }
            announce(v[3] as usize);
            a.dealloc(v[3], lay(96));
        }
    });
}

/// Item 1 under harden: `free(b + 48)` on the last 64-byte block of a page
/// (16-byte aligned, inside the run) aborts instead of handing out a block
/// that runs into the next page.
#[test]
fn interior_free_aborts_under_harden() {
    expect_abort("interior_free_aborts_under_harden", "HardScale", &["interior"], || {
        let a = HardScale::new();
        // SAFETY: deliberate interior free in a child expected to abort.
        unsafe {
            let v: Vec<*mut u8> = (0..64).map(|_| a.alloc(lay(64))).collect();
            let last = v.iter().copied().find(|&q| q as usize & 4095 == 4096 - 64).expect("a last block of a page");
            announce(last as usize + 48);
            a.dealloc(last.add(48), lay(64));
        }
    });
}

/// The same through the tag route with failfast on, and on the header route.
#[test]
fn interior_free_aborts_under_harden_ptag_first() {
    expect_abort("interior_free_aborts_under_harden_ptag_first", "HardFirst", &["interior"], || {
        let a = HardFirst::new();
        // SAFETY: as above.
        unsafe {
            let p = a.alloc(lay(160));
            announce(p as usize + 32);
            a.dealloc(p.add(32), lay(160));
        }
    });
}

#[test]
fn interior_free_aborts_under_harden_header_route() {
    expect_abort("interior_free_aborts_under_harden_header_route", "HardOff", &["interior"], || {
        let a = HardOff::new();
        // SAFETY: as above (the C route; the sized Rust `dealloc` is the next test).
        unsafe {
            let p = a.alloc(lay(160));
            announce(p as usize + 32);
            hz3::__private::free::<HardOff>(p.add(32));
        }
    });
}

/// The sized Rust `dealloc` of a header-route type (`ptag: off`, no
/// `free_fast`) trusts its layout only without `harden`: with it, an interior
/// pointer aborts there too.
#[test]
fn interior_dealloc_aborts_under_harden_header_route() {
    expect_abort("interior_dealloc_aborts_under_harden_header_route", "HardOff", &["interior"], || {
        let a = HardOff::new();
        // SAFETY: deliberate interior free in a child expected to abort.
        unsafe {
            let p = a.alloc(lay(160));
            announce(p as usize + 32);
            a.dealloc(p.add(32), lay(160));
        }
    });
}

/// Runs of several pages (the block-start test takes the run's first page
/// from the page descriptor): a pointer one page into the run of a 2304-byte
/// class is 16-byte aligned and at the start of its page, but not a block
/// start; so is one page into a 20000-byte (five-page, one-block) run.
#[test]
fn interior_free_in_a_multi_page_run_aborts_under_harden() {
    expect_abort("interior_free_in_a_multi_page_run_aborts_under_harden", "HardScale", &["interior"], || {
        let a = HardScale::new();
        // SAFETY: deliberate interior free in a child expected to abort.
        unsafe {
            let v: Vec<*mut u8> = (0..8).map(|_| a.alloc(lay(2304))).collect();
            let first = v.iter().copied().find(|&q| q as usize & 4095 == 0).expect("a run's first block");
            announce(first as usize + 4096);
            a.dealloc(first.add(4096), lay(2304));
        }
    });
}

#[test]
fn interior_free_in_a_medium_run_aborts_under_harden() {
    // (Its later pages may carry no tag or descriptor bin: either message.)
    expect_abort("interior_free_in_a_medium_run_aborts_under_harden", "HardScale", &["interior", "not a block"], || {
        let a = HardScale::new();
        // SAFETY: deliberate interior free in a child expected to abort.
        unsafe {
            let p = a.alloc(lay(20000));
            announce(p as usize + 4096);
            a.dealloc(p.add(4096), lay(20000));
        }
    });
}

/// Every block start of every class is accepted under harden (the exact
/// test rejects nothing it should take): blocks of each class, freed in
/// allocation order, then allocated again.
#[test]
fn every_class_frees_cleanly_under_harden() {
    let a = HardScale::new();
    let big = [80 << 10, 96 << 10, 112 << 10, 128 << 10, 160 << 10, 192 << 10, 224 << 10, 256 << 10];
    let sizes: Vec<usize> =
        (1..=128).map(|k| k * 16).chain([2304, 2816, 3328, 3840]).chain((1..=16).map(|k| k << 12)).chain(big).collect();
    for &size in &sizes {
        let n = (64 << 10) / size + 2;
        // SAFETY: each block is freed once with its own layout.
        unsafe {
            let v: Vec<*mut u8> = (0..n).map(|_| a.alloc(lay(size))).collect();
            assert!(v.iter().all(|p| !p.is_null()), "size {size}");
            for &p in &v {
                a.dealloc(p, lay(size));
            }
            let w: Vec<*mut u8> = (0..n).map(|_| a.alloc(lay(size))).collect();
            for &p in &w {
                a.dealloc(p, lay(size));
            }
        }
    }
}

/// A large block freed through an interior pointer aborts under harden.
#[test]
fn large_interior_free_aborts_under_harden() {
    expect_abort("large_interior_free_aborts_under_harden", "HardScale", &["large"], || {
        let a = HardScale::new();
        // SAFETY: as above.
        unsafe {
            let p = a.alloc(lay(1200 << 10));
            announce(p as usize + 100_000);
            a.dealloc(p.add(100_000), lay(1200 << 10));
        }
    });
}

// ---------------------------------------------------------------------------
// A process copied by a raw fork system call (no pthread_atfork handlers)
// ---------------------------------------------------------------------------

hz3::hz3_allocator! {
    pub struct ForkRaw<shards: 8>;
    pub struct SweepErrno<shards: 8>;
    pub struct InitLate<arena_gib: 1>;
    pub struct ArenaLate<arena_gib: 1>;
}
impl_hz!(ForkRaw, SweepErrno, InitLate, ArenaLate);

/// One thread's churn: a ring of patterned 64..=256-byte blocks, each checked
/// before it is freed. False on a corrupted block.
fn churn<A: Hz>(a: &A, seed: u64, iters: usize) -> bool {
    let mut rng = Rng::new(seed);
    let mut ring: Vec<Option<Blk>> = (0..32).map(|_| None).collect();
    for i in 0..iters {
        let slot = &mut ring[i % 32];
        if let Some(b) = slot.take() {
            // SAFETY: `b` is a live patterned block of `a`.
            if unsafe { check(b.p as *const u8, b.size, b.seed) }.is_some() {
                return false;
            }
            // SAFETY: freed once, with its layout.
            unsafe { a.dealloc(b.p as *mut u8, b.layout()) };
        }
        let size = rng.range(64, 256);
        match Blk::new_in(a, size, 16, seed ^ i as u64) {
            Some(b) => *slot = Some(b),
            None => return false,
        }
    }
    ring.into_iter().flatten().all(|b| {
        // SAFETY: as above.
        let ok = unsafe { check(b.p as *const u8, b.size, b.seed) }.is_none();
        // SAFETY: as above.
        unsafe { a.dealloc(b.p as *mut u8, b.layout()) };
        ok
    })
}

/// The copy's work: its main thread keeps using the cache it inherited while
/// 100 new threads (more than one dead-thread sweep's period) churn beside
/// it. Exit 0 when every block kept its pattern.
fn raw_fork_copy_body() -> i32 {
    let a = ForkRaw::new();
    let mut handles = Vec::with_capacity(100);
    let mut ok = true;
    for t in 0..100u64 {
        handles.push(std::thread::spawn(move || churn(&ForkRaw::new(), 100 + t, 20_000)));
        ok &= churn(&a, 7 + t, 2000);
    }
    for h in handles {
        ok &= h.join().unwrap_or(false);
    }
    if ok {
        0
    } else {
        3
    }
}

/// Item 2: a child made by `syscall(SYS_fork)` (no fork handlers ran) keeps
/// its parent's thread ids in its caches. Before: the dead-thread sweep
/// found those ids gone (`ESRCH`), reclaimed the copy's live main-thread
/// cache and handed it to a new thread: two threads on one cache (crashes,
/// hangs, blocks handed out twice). Eight copies are made (each
/// caught the old behaviour in about half the runs; the test as a whole
/// failed 4 runs out of 4 on it).
#[test]
fn raw_fork_child_keeps_its_cache() {
    if child_scenario().is_none() {
        let out = run_child("raw_fork_child_keeps_its_cache", "fork", &[]);
        out.assert_ok("raw_fork_child_keeps_its_cache");
        return;
    }
    let a = ForkRaw::new();
    // The parent's main thread has a cache, and a few threads came and went.
    assert!(churn(&a, 1, 1000));
    for t in 0..5 {
        std::thread::spawn(move || assert!(churn(&ForkRaw::new(), 50 + t, 500))).join().unwrap();
    }
    for round in 0..8 {
        // SAFETY: a raw fork: the copy runs only async-signal-safe-enough
        // code of ours and leaves with _exit.
        let pid = unsafe { libc::syscall(libc::SYS_fork) } as libc::pid_t;
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = raw_fork_copy_body();
            // SAFETY: leave the copy without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        match wait_forked(pid, std::time::Duration::from_secs(60)) {
            Ok(status) => {
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "round {round}: the raw-fork copy failed: {}",
                    if libc::WIFSIGNALED(status) {
                        format!("signal {}", libc::WTERMSIG(status))
                    } else {
                        format!("exit {} (3: a block lost its pattern)", libc::WEXITSTATUS(status))
                    }
                );
            }
            Err(()) => panic!("round {round}: the raw-fork copy hung (killed after 60 s)"),
        }
    }
}

// ---------------------------------------------------------------------------
// errno across free
// ---------------------------------------------------------------------------

extern "C" fn die_without_destructors(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: the allocation is leaked; the thread then ends with a raw exit
    // system call, so no thread-exit destructor runs (its cache keeps its
    // thread id: the dead-thread sweep's case).
    unsafe {
        let p = SweepErrno::new().alloc(lay(64));
        *(arg as *mut usize) = p as usize;
        libc::syscall(libc::SYS_exit, 0);
    }
    std::ptr::null_mut()
}

/// Item 6: the dead-thread sweep probes thread ids with `tgkill`, whose
/// `ESRCH` for a dead thread used to leak out of the `free` (or `malloc`)
/// that ran the sweep. Each of 70 new threads sets `errno`, frees a block as
/// its first call (creating its cache; one creation in 64 sweeps), and
/// checks `errno` is unchanged.
#[test]
fn free_keeps_errno_across_the_dead_thread_sweep() {
    if child_scenario().is_none() {
        let out = run_child("free_keeps_errno_across_the_dead_thread_sweep", "errno", &[]);
        out.assert_ok("free_keeps_errno_across_the_dead_thread_sweep");
        return;
    }
    let a = SweepErrno::new();
    let mut slot = 0usize;
    let mut th: libc::pthread_t = 0;
    // SAFETY: a plain pthread running the extern fn above; joined below (the
    // kernel clears its id when the raw exit completes).
    unsafe {
        assert_eq!(libc::pthread_create(&mut th, std::ptr::null(), die_without_destructors, &mut slot as *mut usize as *mut _), 0);
        libc::pthread_join(th, std::ptr::null_mut());
    }
    assert_ne!(slot, 0);
    let blocks: Vec<usize> = (0..70).map(|_| unsafe { a.alloc(lay(64)) } as usize).collect();
    let mut clobbered = Vec::new();
    for (i, p) in blocks.into_iter().enumerate() {
        let e = std::thread::spawn(move || {
            // SAFETY: this thread's errno; `p` is a live block of the type,
            // freed once.
            unsafe {
                *libc::__errno_location() = 4242;
                SweepErrno::new().dealloc(p as *mut u8, lay(64));
                *libc::__errno_location()
            }
        })
        .join()
        .unwrap();
        if e != 4242 {
            clobbered.push((i, e));
        }
    }
    assert!(clobbered.is_empty(), "free changed errno (thread, errno): {clobbered:?}");
}

// ---------------------------------------------------------------------------
// Initialisation under a memory limit that is raised later
// ---------------------------------------------------------------------------

fn set_address_limit(bytes: libc::rlim_t) -> libc::rlim_t {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer / in-pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut r), 0);
        let old = r.rlim_cur;
        r.rlim_cur = bytes;
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &r), 0, "setrlimit");
        old
    }
}

/// Item 3a: with 64 KiB of address space left at the first allocation the
/// type cannot map its shards; before, that failure was kept and every later
/// allocation returned null even after the limit was raised.
#[test]
fn failed_initialisation_is_retried() {
    if child_scenario().is_none() {
        let out = run_child("failed_initialisation_is_retried", "init", &[]);
        out.assert_ok("failed_initialisation_is_retried");
        println!("{}", out.stdout);
        return;
    }
    let a = InitLate::new();
    let vm = vm_size();
    let old = set_address_limit((vm + 64 * KIB) as libc::rlim_t);
    // SAFETY: valid layout.
    let first = unsafe { a.alloc(lay(64)) };
    set_address_limit(old);
    report("first_alloc_null", first.is_null());
    // SAFETY: valid layout; the blocks are freed below.
    let later: Vec<*mut u8> = (0..10).map(|_| unsafe { a.alloc(lay(64)) }).collect();
    assert!(later.iter().all(|p| !p.is_null()), "allocations still fail after the limit was raised");
    // SAFETY: a live block of the type.
    assert_eq!(unsafe { InitLate::usable_size(later[9]) }, Some(64), "the block is not an arena block");
    for p in later {
        // SAFETY: freed once.
        unsafe { a.dealloc(p, lay(64)) };
    }
    if !first.is_null() {
        // SAFETY: as above.
        unsafe { a.dealloc(first, lay(64)) };
    }
}

/// Item 3b: with 4 MiB left no arena can be reserved, so blocks are mapped
/// one by one; before, the arena was never tried again and every 64-byte
/// block stayed its own mapping after the limit was raised.
#[test]
fn arena_reservation_is_retried() {
    if child_scenario().is_none() {
        let out = run_child("arena_reservation_is_retried", "arena", &[]);
        out.assert_ok("arena_reservation_is_retried");
        println!("{}", out.stdout);
        return;
    }
    let a = ArenaLate::new();
    let mut v: Vec<*mut u8> = Vec::with_capacity(64);
    let vm = vm_size();
    let old = set_address_limit((vm + 4 * MIB) as libc::rlim_t);
    // SAFETY: valid layout.
    v.push(unsafe { a.alloc(lay(64)) });
    // SAFETY: as above.
    let direct = unsafe { ArenaLate::usable_size(v[0]) };
    set_address_limit(old);
    report("usable_under_limit", format!("{direct:?}"));
    assert!(!v[0].is_null());
    for _ in 0..40 {
        // SAFETY: valid layout.
        v.push(unsafe { a.alloc(lay(64)) });
    }
    let last = *v.last().unwrap();
    // SAFETY: a live block of the type.
    assert_eq!(unsafe { ArenaLate::usable_size(last) }, Some(64), "still a direct mapping: the arena was never retried");
    for p in v {
        // SAFETY: each freed once.
        unsafe { a.dealloc(p, lay(64)) };
    }
}
