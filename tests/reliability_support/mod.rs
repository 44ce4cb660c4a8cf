//! Shared helpers of the `tests/reliability_*.rs` binaries (not a test target of
//! its own: cargo only builds `tests/*.rs` and `tests/*/main.rs`).
//!
//! - [`scale`]: the `HZ3_STRESS_SCALE` multiplier (default 1) every bounded test
//!   applies to its sizes; CI runs at 1.
//! - [`Blk`]: one live allocation whose bytes carry a pattern derived from its
//!   address, its size and a per-block seed; [`Blk::verify`] names the first bad
//!   offset. Blocks up to [`DENSE`] bytes are patterned in full, bigger ones on
//!   their first and last KiB and on one word every 512 bytes.
//! - [`run_child`] / [`child_scenario`]: re-execute the test binary on one test
//!   with `HZ3_REL_CHILD` set, so a scenario that aborts, lowers a limit, or
//!   measures RSS runs in a process of its own.
//! - [`rss`], [`vm_size`]: `/proc/self/statm`.
//! - [`Hz`]: the inherent API of a generated type (usable size, stats), reached
//!   generically; implemented with [`impl_hz!`].
//! - [`PURGE_DELAY_MS`]: the engine's purge delay, for tests that time against it.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

/// The purge delay of the engine (`PURGE_DELAY_MS` in the runtime's arena):
/// free pages the next threads may reuse are kept resident this long.
pub const PURGE_DELAY_MS: u64 = 50;

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

/// `HZ3_STRESS_SCALE` (default 1, at least 1).
pub fn scale() -> usize {
    std::env::var("HZ3_STRESS_SCALE").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1).max(1)
}

// ---------------------------------------------------------------------------
// Generated types, generically
// ---------------------------------------------------------------------------

/// What the tests need of a generated type beyond `GlobalAlloc`.
pub trait Hz: GlobalAlloc + Default + Copy + Send + Sync + 'static {
    const TYPE_NAME: &'static str;
    /// The type's `usable_size`.
    ///
    /// # Safety
    /// As the generated `usable_size`.
    unsafe fn usable(p: *const u8) -> Option<usize>;
    /// The type's `stats()`.
    fn snapshot() -> hz3::StatsSnapshot;
}

/// `impl_hz!(A, B, ...)`: implement [`Hz`] for generated types in scope.
#[macro_export]
macro_rules! impl_hz {
    ($($t:ident),* $(,)?) => {$(
        impl $crate::reliability_support::Hz for $t {
            const TYPE_NAME: &'static str = stringify!($t);
            unsafe fn usable(p: *const u8) -> Option<usize> {
                // SAFETY: forwarded contract.
                unsafe { <$t>::usable_size(p) }
            }
            fn snapshot() -> hz3::StatsSnapshot {
                <$t>::stats()
            }
        }
    )*};
}

// ---------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------

/// SplitMix64 finaliser.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64 generator: deterministic per seed.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x6A09_E667_F3BC_C909)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `pct`%.
    pub fn pct(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }
}

/// Small 1..=2048 (80%), sub-4K/medium 2049..=64 KiB (17%), large up to 512 KiB (3%).
pub fn mixed_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=79 => rng.range(1, 2048),
        80..=96 => rng.range(2049, 64 * KIB),
        _ => rng.range(64 * KIB + 1, 512 * KIB),
    }
}

// ---------------------------------------------------------------------------
// Content patterns
// ---------------------------------------------------------------------------

/// Blocks up to this size carry the pattern in every word.
pub const DENSE: usize = 16 * KIB;

#[inline]
fn word_at(base: u64, i: usize) -> u64 {
    mix(base ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

#[inline]
fn base_of(addr: usize, size: usize, seed: u64) -> u64 {
    mix(addr as u64 ^ (size as u64).rotate_left(40) ^ seed)
}

/// Blocks above this size carry the pattern on one word every 256 KiB (plus their
/// first and last KiB), so that multi-MiB blocks stay mostly untouched (not resident).
pub const HUGE: usize = MIB;

/// Calls `f(i)` for the word indices the pattern covers in a block of `len` bytes
/// (`len / 8` whole words; the tail bytes are handled separately).
#[inline]
fn for_each_word(len: usize, mut f: impl FnMut(usize) -> bool) -> bool {
    let nw = len / 8;
    if len <= DENSE {
        (0..nw).all(f)
    } else {
        let edge = 128; // first and last KiB
        let stride = if len > HUGE { 32 * KIB } else { 64 }; // in words
        let mut i = 0;
        while i < nw {
            if !f(i) {
                return false;
            }
            i += if i < edge || i + edge >= nw { 1 } else { stride.min(nw - edge - i) };
        }
        true
    }
}

/// Write the pattern of (`addr`, `len`, `seed`) over `[p, p+len)`.
///
/// # Safety
/// `[p, p+len)` is writable.
pub unsafe fn fill(p: *mut u8, len: usize, seed: u64) {
    let base = base_of(p as usize, len, seed);
    for_each_word(len, |i| {
        (p.add(i * 8) as *mut u64).write_unaligned(word_at(base, i));
        true
    });
    let tail = word_at(base, usize::MAX).to_le_bytes();
    for j in (len / 8) * 8..len {
        *p.add(j) = tail[j % 8];
    }
}

/// First offset in `[p, p+len)` where the pattern of (`addr_of_pattern`, `len`, `seed`)
/// is not found (`addr_of_pattern` differs from `p` after a moving realloc).
///
/// # Safety
/// `[p, p+len)` is readable.
pub unsafe fn check_from(p: *const u8, addr_of_pattern: usize, pattern_len: usize, len: usize, seed: u64) -> Option<usize> {
    let base = base_of(addr_of_pattern, pattern_len, seed);
    let mut bad = None;
    // Only the words the pattern of `pattern_len` wrote, clipped to `len`.
    for_each_word(pattern_len, |i| {
        if (i + 1) * 8 > len {
            return true;
        }
        if (p.add(i * 8) as *const u64).read_unaligned() != word_at(base, i) {
            bad = Some(i * 8);
            return false;
        }
        true
    });
    if bad.is_some() {
        return bad;
    }
    let tail = word_at(base, usize::MAX).to_le_bytes();
    ((pattern_len / 8) * 8..pattern_len.min(len)).find(|&j| *p.add(j) != tail[j % 8])
}

/// First offset where the pattern written by [`fill`] at `p` is missing.
///
/// # Safety
/// `[p, p+len)` is readable.
pub unsafe fn check(p: *const u8, len: usize, seed: u64) -> Option<usize> {
    check_from(p, p as usize, len, len, seed)
}

/// One live allocation with its pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blk {
    pub p: usize,
    pub size: usize,
    pub align: usize,
    pub seed: u64,
}

impl Blk {
    pub fn layout(&self) -> Layout {
        Layout::from_size_align(self.size, self.align).unwrap()
    }

    /// Allocate through `a`, check alignment and usable size, fill. `None` on null.
    pub fn new_in<A: Hz>(a: &A, size: usize, align: usize, seed: u64) -> Option<Blk> {
        let l = Layout::from_size_align(size, align).unwrap();
        // SAFETY: `size > 0` (callers never ask for 0) and `l` is valid.
        let p = unsafe { a.alloc(l) };
        if p.is_null() {
            return None;
        }
        assert_eq!(p as usize % align, 0, "{}: {p:p} (size {size}) not aligned to {align}", A::TYPE_NAME);
        // SAFETY: `p` is a live block of `A`.
        let us = unsafe { A::usable(p) };
        assert!(
            us.is_some_and(|u| u >= size),
            "{}: usable_size({p:p}) = {us:?} for a request of {size} (align {align})",
            A::TYPE_NAME
        );
        // SAFETY: `p` has `size` writable bytes.
        unsafe { fill(p, size, seed) };
        Some(Blk { p: p as usize, size, align, seed })
    }

    /// Allocate or panic.
    pub fn new<A: Hz>(a: &A, size: usize, align: usize, seed: u64) -> Blk {
        Self::new_in(a, size, align, seed)
            .unwrap_or_else(|| panic!("{}: alloc({size}, align {align}) returned null", A::TYPE_NAME))
    }

    /// Panic (naming `who`) when the pattern is damaged.
    pub fn verify(&self, who: &str) {
        // SAFETY: the block is live and `size` bytes long.
        if let Some(off) = unsafe { check(self.p as *const u8, self.size, self.seed) } {
            panic!(
                "{who}: block {:#x} (size {}, align {}) damaged at offset {off}",
                self.p, self.size, self.align
            );
        }
    }

    /// Verify, then free through `a`.
    pub fn free<A: Hz>(self, a: &A, who: &str) {
        self.verify(who);
        // SAFETY: the block is live and was allocated by `A` with this layout.
        unsafe { a.dealloc(self.p as *mut u8, self.layout()) };
    }
}

// ---------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------

/// The env var naming the scenario a re-executed child runs.
pub const CHILD_ENV: &str = "HZ3_REL_CHILD";

/// In a child: the scenario it was started for.
pub fn child_scenario() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// What a child process left.
pub struct ChildOut {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ChildOut {
    /// The value of the last `REL key=value` line the child printed on stdout.
    pub fn value(&self, key: &str) -> Option<String> {
        let pre = format!("REL {key}=");
        self.stdout.lines().rev().find_map(|l| l.trim().strip_prefix(&pre).map(|v| v.trim().to_string()))
    }

    pub fn num(&self, key: &str) -> u64 {
        self.value(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("child printed no `REL {key}=<n>`\n{}", self.describe()))
    }

    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    pub fn describe(&self) -> String {
        format!("status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }

    /// Panic unless the child exited 0.
    pub fn assert_ok(&self, what: &str) {
        assert!(self.status.success(), "{what}: child failed\n{}", self.describe());
    }
}

/// Run `test` (the exact libtest name) of this binary in a child with
/// `HZ3_REL_CHILD=scenario` and the extra environment.
pub fn run_child(test: &str, scenario: &str, env: &[(&str, &str)]) -> ChildOut {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--include-ignored", "--nocapture", "--test-threads=1"]).env(CHILD_ENV, scenario);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("spawn child test process");
    ChildOut {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// In a child: say which pointer is about to be misused (read by [`expect_abort_line`]).
pub fn announce(p: usize) {
    eprintln!("REL_BAD_PTR={p:#x}");
}

/// Parent: run `test` in a child and return the child's abort line and the pointer it
/// announced. The child must die of SIGABRT with a line starting with one of `prefixes`
/// that names the announced pointer and says one of `words`. Child: run `bad`, which
/// [`announce`]s and misuses a pointer; returning from it means nothing aborted.
pub fn expect_abort_line(test: &str, prefixes: &[&str], words: &[&str], bad: impl FnOnce()) -> (String, String) {
    if child_scenario().is_some() {
        bad();
        eprintln!("CHILD SURVIVED");
        std::process::exit(0);
    }
    let out = run_child(test, "bad", &[]);
    assert!(!out.stderr.contains("CHILD SURVIVED"), "{test}: misuse not detected\n{}", out.describe());
    assert_eq!(out.signal(), Some(libc::SIGABRT), "{test}: child did not die of SIGABRT\n{}", out.describe());
    let ptr = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("REL_BAD_PTR="))
        .unwrap_or_else(|| panic!("{test}: no REL_BAD_PTR line\n{}", out.describe()))
        .trim()
        .to_string();
    let line = out
        .stderr
        .lines()
        .find(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .unwrap_or_else(|| panic!("{test}: no line starting with one of {prefixes:?}\n{}", out.describe()))
        .to_string();
    assert!(line.contains(&ptr), "{test}: abort line does not name {ptr}: {line}");
    assert!(words.iter().any(|w| line.contains(w)), "{test}: abort line says none of {words:?}: {line}");
    (line, ptr)
}

/// In a child: report a value for the parent.
pub fn report(key: &str, value: impl std::fmt::Display) {
    println!("REL {key}={value}");
}

fn statm_field(i: usize) -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = s.split_whitespace().nth(i).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Resident bytes of this process.
pub fn rss() -> usize {
    statm_field(1)
}

/// Virtual size of this process in bytes.
pub fn vm_size() -> usize {
    statm_field(0)
}

/// `n` bytes as MiB with two decimals.
pub fn mib(n: usize) -> String {
    format!("{:.2} MiB", n as f64 / MIB as f64)
}

/// Wait up to `timeout` for the forked child `pid`. `Ok(status)` when it
/// exited; `Err(())` when it hung, after killing and reaping it.
pub fn wait_forked(pid: libc::pid_t, timeout: std::time::Duration) -> Result<i32, ()> {
    let deadline = std::time::Instant::now() + timeout;
    let mut status = 0;
    loop {
        // SAFETY: pid is our child; status is a valid out-pointer.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            return Ok(status);
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
