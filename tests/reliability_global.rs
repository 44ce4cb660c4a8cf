//! Reliability with an hz3 type as the `#[global_allocator]` of this test binary:
//! ordinary `Vec`/`String`/`HashMap`/`Box` code (and the test harness itself)
//! allocates through hz3.
//!
//! - `churn_with_std_collections` (child process, for RSS): 2,000 threads in waves
//!   of 50; each builds a `HashMap<String, Vec<u64>>`, checks and drops the map a
//!   thread of the previous (exited) wave left for it, and leaves half of its own
//!   for the next wave; RSS after the last waves must stay within 8 MiB of the
//!   highest RSS of the first half.
//! - `many_live_threads_with_std_collections`: 1,000 threads alive at once (a
//!   barrier) exchanging `String`s and `Vec`s.
//! - `std_allocation_in_thread_exit_destructors`: `thread_local!` destructors and
//!   a late pthread-key destructor (runs after hz3's teardown of the thread)
//!   format `String`s, build `Vec`s and push them to a global list freed later.
//! - `fork_with_global_hz3`: `fork()` while threads churn `Vec`s; the child uses
//!   `Vec`/`String`/`HashMap` (all through hz3) and `_exit`s.
//!
//! Long run: `HZ3_STRESS_SCALE=10` (20,000 churn threads, 10,000 live threads,
//! 10x the destructor threads and forks).

mod reliability_support;

use reliability_support::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

hz3::hz3_allocator! {
    pub struct Glob<stats: true>;
}

#[global_allocator]
static GLOBAL: Glob = Glob::new();

/// The map thread `id` builds: `n` keys, each with a vector derived from the key.
fn build_map(id: usize, n: usize) -> HashMap<String, Vec<u64>> {
    (0..n)
        .map(|i| {
            let key = format!("t{id}-k{i}-{}", "x".repeat(i % 40));
            let val: Vec<u64> = (0..(i % 64) as u64 + 1).map(|j| mix(id as u64 * 1_000_003 + i as u64 * 131 + j)).collect();
            (key, val)
        })
        .collect()
}

fn check_map(id: usize, n: usize, m: &HashMap<String, Vec<u64>>) {
    assert_eq!(m.len(), n, "map of thread {id}: wrong size");
    for i in 0..n {
        let key = format!("t{id}-k{i}-{}", "x".repeat(i % 40));
        let v = m.get(&key).unwrap_or_else(|| panic!("map of thread {id}: key {key} missing"));
        assert_eq!(v.len(), i % 64 + 1, "map of thread {id}: key {key}: wrong length");
        for (j, &x) in v.iter().enumerate() {
            assert_eq!(x, mix(id as u64 * 1_000_003 + i as u64 * 131 + j as u64), "map of thread {id}: {key}[{j}]");
        }
    }
}

#[test]
fn churn_with_std_collections() {
    if child_scenario().is_none() {
        let out = run_child("churn_with_std_collections", "churn", &[]);
        out.assert_ok("churn_with_std_collections");
        println!("{}", out.stdout);
        return;
    }
    const WAVE: usize = 50;
    const KEYS: usize = 120;
    let total = 2_000 * scale();
    let waves = total / WAVE;
    let t0 = Instant::now();
    type Map = HashMap<String, Vec<u64>>;
    let mut carry: Vec<Option<(usize, Map)>> = (0..WAVE).map(|_| None).collect();
    // RSS after the first wave, the highest after each wave of the first half
    // (from the second wave), and the lowest after each of the last three.
    let (mut rss1, mut rss_mid, mut end) = (0, 0, usize::MAX);
    for w in 0..waves {
        let hs: Vec<_> = (0..WAVE)
            .map(|i| {
                let inherited = carry[(i + 7) % WAVE].take();
                let id = w * WAVE + i;
                thread::Builder::new()
                    .stack_size(256 * KIB)
                    .spawn(move || {
                        if let Some((pid, m)) = inherited {
                            check_map(pid, KEYS, &m);
                            drop(m); // blocks of an exited thread
                        }
                        let mut m = build_map(id, KEYS);
                        let mut s = String::new();
                        for (k, v) in &m {
                            s.push_str(k);
                            s.push_str(&v.len().to_string());
                        }
                        assert!(s.len() > KEYS * 6);
                        if id.is_multiple_of(2) {
                            m.shrink_to_fit();
                            Some((id, m))
                        } else {
                            None
                        }
                    })
                    .unwrap()
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            carry[i] = h.join().unwrap();
        }
        let now = rss();
        if w == 0 {
            rss1 = now;
        } else if w <= waves / 2 {
            rss_mid = rss_mid.max(now);
        }
        if w + 3 >= waves {
            end = end.min(now);
        }
    }
    for (id, m) in carry.into_iter().flatten() {
        check_map(id, KEYS, &m);
    }
    report("threads", total);
    report("rss_first_wave", rss1);
    report("rss_middle_wave", rss_mid);
    report("rss_last_wave", end);
    report("elapsed_ms", t0.elapsed().as_millis());
    let s = Glob::stats();
    report("allocs", s.allocs);
    assert!(s.allocs > (total * KEYS) as u64, "hz3 is not the global allocator? {s:?}");
    // Over the second half of the waves, not from the first: the first
    // waves fill what the allocator keeps by design (the arena's 8 MiB of
    // freed segments kept for reuse, each shard's resident free pages until
    // its delayed purge, two parked caches) and the process's own retention
    // (glibc's cache of thread stacks): 15-21 MiB after 20 waves against
    // 6.5-14 MiB after the first on this machine, which failed a bound of
    // 8 MiB from the first wave by timing alone. Growth over the second half
    // was 0.9-3.9 MiB (20 waves), 2.3 MiB (80 waves, HZ3_STRESS_SCALE=4) and
    // 1.4 MiB (160 waves, =8): bounded, not per thread. One reading at the
    // middle wave against one at the last failed once on a loaded machine
    // (9.3 MiB at wave 10, while the process still filled what it keeps,
    // against 18.2 at wave 20; 15-19 and 18-21 in other runs): hence the
    // highest reading of the first half against the lowest of the last three
    // waves, over 40 waves. A leak of 10 KiB per thread (850 threads between
    // the middle and the third-last wave) fails this bound.
    assert!(end <= rss_mid + 8 * MIB, "RSS grew from {} (highest of waves 1-{}) to {} (lowest of the last three)", mib(rss_mid), waves / 2, mib(end));
}

#[test]
fn many_live_threads_with_std_collections() {
    let n = 1_000 * scale();
    let t0 = Instant::now();
    let barrier = Arc::new(Barrier::new(n));
    let slots: Arc<Vec<Mutex<Option<Vec<String>>>>> = Arc::new((0..n).map(|_| Mutex::new(None)).collect());
    let hs: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, slots) = (barrier.clone(), slots.clone());
            thread::Builder::new()
                .stack_size(128 * KIB)
                .spawn(move || {
                    let v: Vec<String> = (0..40).map(|k| format!("{i}:{k}:{}", "y".repeat(k * 7))).collect();
                    barrier.wait();
                    *slots[i].lock().unwrap() = Some(v);
                    barrier.wait();
                    let j = (i + 1) % n;
                    let got = slots[j].lock().unwrap().take().unwrap();
                    for (k, s) in got.iter().enumerate() {
                        assert_eq!(*s, format!("{j}:{k}:{}", "y".repeat(k * 7)));
                    }
                })
                .unwrap()
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    eprintln!("many_live_threads_with_std_collections: {n} threads in {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------
// std allocation in thread-exit destructors
// ---------------------------------------------------------------------------

static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LATE_RUNS: AtomicUsize = AtomicUsize::new(0);
static LATE_KEY: std::sync::OnceLock<libc::pthread_key_t> = std::sync::OnceLock::new();

struct Note(usize, Vec<String>);

impl Drop for Note {
    fn drop(&mut self) {
        let joined: String = self.1.join(",");
        let mut v: Vec<Box<[u8]>> = (0..20).map(|k| vec![k as u8; 100 * k + 1].into_boxed_slice()).collect();
        v.truncate(3);
        NOTES.lock().unwrap().push(format!("tls {} {} {}", self.0, joined.len(), v.len()));
    }
}

thread_local! {
    static NOTE: std::cell::RefCell<Option<Note>> = const { std::cell::RefCell::new(None) };
}

extern "C" fn late_dtor(arg: *mut libc::c_void) {
    let id = arg as usize;
    LATE_RUNS.fetch_add(1, Ordering::Relaxed);
    // After hz3's own key destructor: these go through its direct mode.
    let big: Vec<u64> = (0..20_000).collect(); // a large block
    let m: HashMap<usize, String> = (0..50).map(|k| (k, format!("{id}/{k}"))).collect();
    NOTES.lock().unwrap().push(format!("late {id} {} {}", big.iter().sum::<u64>(), m.len()));
}

#[test]
fn std_allocation_in_thread_exit_destructors() {
    let n = 40 * scale();
    // The global allocator is in use long before this key: its index is higher.
    let key = *LATE_KEY.get_or_init(|| {
        let mut k = 0;
        assert_eq!(unsafe { libc::pthread_key_create(&mut k, Some(late_dtor)) }, 0);
        k
    });
    let hs: Vec<_> = (0..n)
        .map(|i| {
            thread::spawn(move || {
                let v: Vec<String> = (0..30).map(|k| format!("{i}-{k}")).collect();
                NOTE.with(|c| *c.borrow_mut() = Some(Note(i, v)));
                unsafe { libc::pthread_setspecific(key, (i + 1) as *const libc::c_void) };
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let notes = std::mem::take(&mut *NOTES.lock().unwrap());
    assert_eq!(LATE_RUNS.load(Ordering::Relaxed), n);
    assert_eq!(notes.iter().filter(|s| s.starts_with("tls ")).count(), n, "{notes:?}");
    let sum: u64 = (0..20_000u64).sum();
    for i in 1..=n {
        assert!(notes.contains(&format!("late {i} {sum} 50")), "late note of {i} missing: {notes:?}");
    }
}

// ---------------------------------------------------------------------------
// fork() with hz3 as the global allocator
// ---------------------------------------------------------------------------

/// The child's work through std collections (all hz3); returns an exit code.
fn child_std_work() -> i32 {
    let m = build_map(999, 200);
    let mut total = 0;
    for (k, v) in &m {
        total += k.len() + v.len();
    }
    let mut big: Vec<Vec<u8>> = (0..50).map(|k| vec![k as u8; k * 10_000 + 1]).collect();
    big.retain(|v| v.len() % 3 != 0);
    let s: String = (0..1000).map(|k| char::from(b'a' + (k % 26) as u8)).collect();
    if total == 0 || big.is_empty() || s.len() != 1000 || m.len() != 200 {
        return 3;
    }
    0
}

#[test]
fn fork_with_global_hz3() {
    let forks = 8 * scale();
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut held: Vec<Vec<u64>> = Vec::new();
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    held.push(vec![k as u64; (k * 37 + t) % 5000 + 1]);
                    if held.len() > 300 {
                        held.swap_remove(k % 300);
                    }
                }
            })
        })
        .collect();
    for f in 0..forks {
        thread::sleep(Duration::from_millis(5));
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = std::panic::catch_unwind(child_std_work).unwrap_or(20);
            unsafe { libc::_exit(code) };
        }
        let Ok(status) = wait_forked(pid, Duration::from_secs(30)) else {
            stop.store(true, Ordering::Relaxed);
            panic!("fork {f}: child hung");
        };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "fork {f}: child failed (status {status:#x})"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for h in busy {
        h.join().unwrap();
    }
}
