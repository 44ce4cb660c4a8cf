//! `failfast: true`: a detected inconsistency aborts the process with a one-line
//! message naming the pointer. Each scenario runs in a child process (this test
//! binary re-executed on the one test, with `HZ3_FAILFAST_CHILD` set); the parent
//! checks the child died of SIGABRT and that its stderr names the bad pointer.

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CHILD_ENV: &str = "HZ3_FAILFAST_CHILD";

hz3::hz3_allocator! { pub struct FfFastLate<s110_meta: true, free_fast: true, ptag: late, failfast: true>; }
hz3::hz3_allocator! { pub struct FfObserve<s110_meta: true, free_fast: false, ptag: late, failfast: true>; }
hz3::hz3_allocator! { pub struct FfPtagFirst<s110_meta: false, ptag: first, failfast: true, shards: 4>; }
hz3::hz3_allocator! { pub struct FfPlainOff<s110_meta: false, ptag: off, failfast: true, stats: true>; }

/// In the parent: re-run `test` (its full path without the crate name) in a child
/// and return the bad pointer's expectations. In the child: run `bad`, which returns
/// the pointer it misused; reaching the end means the engine did not abort.
fn expect_abort(test: &str, bad: impl FnOnce() -> usize) {
    if std::env::var_os(CHILD_ENV).is_some() {
        let p = bad();
        // Not detected: say so on stderr and exit normally (the parent fails).
        eprintln!("CHILD SURVIVED misuse of {p:#x}");
        std::process::exit(0);
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("spawn child test process");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("CHILD SURVIVED"),
        "{test}: failfast did not detect the misuse; child stderr:\n{stderr}"
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{test}: child did not abort (status {:?}); stderr:\n{stderr}",
        out.status
    );
    let ptr_line = stderr.lines().find(|l| l.contains("BAD_PTR="));
    let ptr = ptr_line
        .and_then(|l| l.split("BAD_PTR=").nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("{test}: child printed no BAD_PTR line; stderr:\n{stderr}"));
    let lower = stderr.to_lowercase();
    let named = lower
        .lines()
        .filter(|l| !l.contains("bad_ptr="))
        .any(|l| l.contains(&ptr));
    assert!(
        named,
        "{test}: abort message does not name the pointer {ptr}; stderr:\n{stderr}"
    );
}

/// Announces the pointer about to be misused (for the parent to look for).
fn announce(p: *mut u8) -> usize {
    eprintln!("BAD_PTR={:x}", p as usize);
    p as usize
}

macro_rules! failfast_scenarios {
    ($modname:ident, $ty:ty) => {
        mod $modname {
            use super::*;
            static A: $ty = <$ty>::new();

            fn name(f: &str) -> String {
                let m = module_path!();
                let m = m.split_once("::").map(|(_, rest)| rest).unwrap_or(m);
                format!("{m}::{f}")
            }

            #[test]
            fn double_free_small() {
                expect_abort(&name("double_free_small"), || {
                    let l = Layout::from_size_align(64, 16).unwrap();
                    // SAFETY: deliberate misuse in a child process that is expected to
                    // abort; the first dealloc is valid, the second is the double free.
                    unsafe {
                        let keep = A.alloc(l); // keep the page in use
                        let p = A.alloc(l);
                        assert!(!p.is_null() && !keep.is_null());
                        A.dealloc(p, l);
                        announce(p);
                        A.dealloc(p, l);
                        p as usize
                    }
                });
            }

            #[test]
            fn double_free_medium() {
                expect_abort(&name("double_free_medium"), || {
                    let l = Layout::from_size_align(16 * 1024, 16).unwrap();
                    // SAFETY: deliberate double free in a child expected to abort.
                    unsafe {
                        let p = A.alloc(l);
                        assert!(!p.is_null());
                        A.dealloc(p, l);
                        announce(p);
                        A.dealloc(p, l);
                        p as usize
                    }
                });
            }

            #[test]
            fn interior_pointer_small() {
                expect_abort(&name("interior_pointer_small"), || {
                    let l = Layout::from_size_align(64, 16).unwrap();
                    // SAFETY: deliberate free of a pointer that is not a block start, in
                    // a child expected to abort.
                    unsafe {
                        let p = A.alloc(l);
                        assert!(!p.is_null());
                        let q = p.add(8);
                        announce(q);
                        A.dealloc(q, l);
                        q as usize
                    }
                });
            }

            #[test]
            fn interior_pointer_medium() {
                expect_abort(&name("interior_pointer_medium"), || {
                    let l = Layout::from_size_align(16 * 1024, 16).unwrap();
                    // SAFETY: deliberate free of a page inside a medium run, in a child
                    // expected to abort.
                    unsafe {
                        let p = A.alloc(l);
                        assert!(!p.is_null());
                        let q = p.add(4096);
                        announce(q);
                        A.dealloc(q, l);
                        q as usize
                    }
                });
            }

            /// Sanity: correct use under failfast never aborts (also run in-process).
            #[test]
            fn correct_use_does_not_abort() {
                let l = Layout::from_size_align(100, 16).unwrap();
                let mut v = Vec::new();
                for _ in 0..10_000 {
                    // SAFETY: valid non-zero layout.
                    let p = unsafe { A.alloc(l) };
                    assert!(!p.is_null());
                    v.push(p as usize);
                }
                let h = std::thread::spawn(move || {
                    for p in v {
                        // SAFETY: each p is a live block of A with layout l, freed once.
                        unsafe { A.dealloc(p as *mut u8, l) };
                    }
                });
                h.join().unwrap();
            }
        }
    };
}

failfast_scenarios!(fast_late, FfFastLate);
failfast_scenarios!(observe, FfObserve);
failfast_scenarios!(ptag_first, FfPtagFirst);
failfast_scenarios!(plain_off, FfPlainOff);
