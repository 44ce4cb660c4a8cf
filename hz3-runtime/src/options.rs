//! Runtime options: the `HZ3_*` environment variables, read once at start-up.
//!
//! Owns: the option values of the process (one set shared by every generated
//! type), reading them from the environment, the identity of the file behind
//! descriptor 2 at start-up, the program's name for the lines hz3 prints, and
//! the start-up lines of `HZ3_VERBOSE=1`.
//!
//! | variable          | values        | default                | effect |
//! |-------------------|---------------|------------------------|--------|
//! | `HZ3_SHOW_STATS`  | `0` / `1`     | on for `stats: true`   | force the exit lines off / on |
//! | `HZ3_STATS_FILE`  | a path        | unset (stderr)         | append the exit lines to this file, `%p` → pid |
//! | `HZ3_VERBOSE`     | `0` / `1`     | `0`                    | print the options and arena facts at start |
//!
//! Must never: allocate, format through `core::fmt`, or call anything that
//! could come back into an allocator. It runs inside the first allocation of
//! the process, which may come from the dynamic loader before libc has set
//! `environ`; the environment is then read from `/proc/self/environ` through
//! a fixed stack buffer.

use core::cell::UnsafeCell;
use core::ffi::c_char;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::stats::Line;

/// What `HZ3_SHOW_STATS` asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ShowStats {
    /// Unset: types with `stats: true` print their exit lines, others do not.
    Default,
    /// `0`: no exit lines.
    Off,
    /// `1`: exit lines for every type (a `stats: false` type prints one line
    /// saying its counters are not built in).
    On,
}

/// Longest `HZ3_STATS_FILE` accepted (bytes, without the terminating NUL).
pub const FILE_MAX: usize = 255;

/// The options as parsed from a list of `NAME=value` entries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Parsed {
    /// `HZ3_SHOW_STATS`.
    pub show_stats: ShowStats,
    /// `HZ3_VERBOSE`.
    pub verbose: bool,
    /// `HZ3_STATS_FILE`, `file_len` bytes (empty: unset).
    pub file: [u8; FILE_MAX],
    /// Bytes of `file` in use.
    pub file_len: usize,
    /// Bit set of the variables whose value was not understood (see `BAD_*`).
    pub bad: u8,
}

const BAD_SHOW: u8 = 1;
const BAD_VERBOSE: u8 = 2;
const BAD_FILE: u8 = 4;

/// A boolean option value: `Some` for 0/1 and their usual spellings.
fn parse_bool(v: &[u8]) -> Option<bool> {
    let mut low = [0u8; 8];
    if v.len() > low.len() {
        return None;
    }
    for (d, s) in low.iter_mut().zip(v) {
        *d = s.to_ascii_lowercase();
    }
    match &low[..v.len()] {
        b"1" | b"on" | b"yes" | b"true" => Some(true),
        b"0" | b"off" | b"no" | b"false" => Some(false),
        _ => None,
    }
}

impl Parsed {
    /// Every option at its default.
    pub const DEFAULT: Parsed = Parsed {
        show_stats: ShowStats::Default,
        verbose: false,
        file: [0; FILE_MAX],
        file_len: 0,
        bad: 0,
    };

    /// Take one environment entry `NAME=value` into account (others are ignored).
    pub fn entry(&mut self, e: &[u8]) {
        let Some(eq) = e.iter().position(|&b| b == b'=') else {
            return;
        };
        let (name, value) = (&e[..eq], &e[eq + 1..]);
        match name {
            b"HZ3_SHOW_STATS" => match parse_bool(value) {
                Some(on) => self.show_stats = if on { ShowStats::On } else { ShowStats::Off },
                None => self.bad |= BAD_SHOW,
            },
            b"HZ3_VERBOSE" => match parse_bool(value) {
                Some(on) => self.verbose = on,
                None => self.bad |= BAD_VERBOSE,
            },
            b"HZ3_STATS_FILE" => {
                if value.len() > FILE_MAX {
                    self.bad |= BAD_FILE;
                } else {
                    self.file[..value.len()].copy_from_slice(value);
                    self.file_len = value.len();
                }
            }
            _ => {}
        }
    }

    /// Feed `chunk`, a piece of a NUL-separated environment block (as in
    /// `/proc/self/environ`), through the entry under construction in `cur`.
    /// Entries longer than `cur` can hold are skipped (no option is that long).
    fn feed(&mut self, chunk: &[u8], cur: &mut Partial) {
        for &b in chunk {
            if b == 0 {
                if !cur.overflow {
                    self.entry(&cur.buf[..cur.len]);
                }
                cur.len = 0;
                cur.overflow = false;
            } else if cur.len < cur.buf.len() {
                cur.buf[cur.len] = b;
                cur.len += 1;
            } else {
                cur.overflow = true;
            }
        }
    }
}

/// An environment entry cut by a read boundary.
struct Partial {
    buf: [u8; FILE_MAX + 32],
    len: usize,
    overflow: bool,
}

#[cfg(test)]
/// Parse a whole NUL-separated environment block (a final entry without NUL
/// counts too).
pub fn parse_block(block: &[u8]) -> Parsed {
    let mut p = Parsed::DEFAULT;
    let mut cur = Partial {
        buf: [0; FILE_MAX + 32],
        len: 0,
        overflow: false,
    };
    p.feed(block, &mut cur);
    p.feed(&[0], &mut cur);
    p
}

// ---------------------------------------------------------------------------
// Reading the environment

/// The length of the NUL-terminated string at `s`.
///
/// # Safety
/// `s` points to a NUL-terminated string.
unsafe fn c_len(s: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: the caller guarantees a terminating NUL, so every byte up to it is readable.
    while unsafe { *s.add(n) } != 0 {
        n += 1;
    }
    n
}

/// The options from libc's `environ`, or `None` when libc has not set it yet.
fn from_environ() -> Option<Parsed> {
    // SAFETY: reading the pointer value of libc's `environ` (not a reference to
    // it); libc writes it only while the process is single-threaded (start-up)
    // or through setenv, which programs must not race with getenv either.
    let mut e = unsafe { core::ptr::addr_of!(libc::environ).read() };
    if e.is_null() {
        return None;
    }
    let mut p = Parsed::DEFAULT;
    loop {
        // SAFETY: `environ` is a null-terminated array of NUL-terminated strings.
        let s = unsafe { *e };
        if s.is_null() {
            break;
        }
        // Only our variables matter: test the prefix before measuring the string.
        // SAFETY: `s` is NUL-terminated, so reading up to 4 bytes stops at its NUL at the latest.
        let ours = unsafe {
            *s == b'H' as c_char
                && *s.add(1) == b'Z' as c_char
                && *s.add(2) == b'3' as c_char
                && *s.add(3) == b'_' as c_char
        };
        if ours {
            // SAFETY: as above; the slice covers the string without its NUL.
            p.entry(unsafe { core::slice::from_raw_parts(s as *const u8, c_len(s)) });
        }
        // SAFETY: the array goes on until its null entry, not reached yet.
        e = unsafe { e.add(1) };
    }
    Some(p)
}

/// The options from `/proc/self/environ` (the environment the process started
/// with), read in pieces through a stack buffer. All defaults if it cannot be read.
pub fn from_proc() -> Parsed {
    let mut p = Parsed::DEFAULT;
    // SAFETY: a NUL-terminated path; open has no other preconditions.
    let fd = unsafe { libc::open(c"/proc/self/environ".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return p;
    }
    let mut cur = Partial {
        buf: [0; FILE_MAX + 32],
        len: 0,
        overflow: false,
    };
    let mut buf = [0u8; 1024];
    loop {
        // SAFETY: `buf` is a writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut _, buf.len()) };
        if n <= 0 {
            break;
        }
        p.feed(&buf[..n as usize], &mut cur);
    }
    p.feed(&[0], &mut cur);
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    p
}

// ---------------------------------------------------------------------------
// The process's options

const UNREAD: u8 = 0;
const READING: u8 = 1;
const READ: u8 = 2;

/// The options of the process, written once by the thread that reads them.
struct Store {
    state: AtomicU8,
    show_stats: AtomicU8,
    verbose: AtomicBool,
    file_len: AtomicUsize,
    file: UnsafeCell<[u8; FILE_MAX]>,
    /// Whether descriptor 2 was open at start-up, and its file's identity.
    err_open: AtomicBool,
    err_dev: AtomicU64,
    err_ino: AtomicU64,
    err_rdev: AtomicU64,
}

// SAFETY: `file` is written only by the one thread that moved `state` from
// UNREAD to READING, before it stores READ with Release; it is read only after
// an Acquire load of READ, and never written again.
unsafe impl Sync for Store {}

static STORE: Store = Store {
    state: AtomicU8::new(UNREAD),
    show_stats: AtomicU8::new(0),
    verbose: AtomicBool::new(false),
    file_len: AtomicUsize::new(0),
    file: UnsafeCell::new([0; FILE_MAX]),
    err_open: AtomicBool::new(false),
    err_dev: AtomicU64::new(0),
    err_ino: AtomicU64::new(0),
    err_rdev: AtomicU64::new(0),
};

/// The identity of the file behind descriptor `fd`: (device, inode, special
/// device), or `None` when `fd` is not open.
pub fn fd_identity(fd: i32) -> Option<(u64, u64, u64)> {
    // SAFETY: `st` is a plain C struct for which all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; fstat of any descriptor number is safe.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino, st.st_rdev))
}

/// Read the options once (the first caller reads, concurrent callers wait,
/// later callers return at once), and record which file descriptor 2 is.
pub fn read_once() {
    if STORE.state.load(Ordering::Acquire) == READ {
        return;
    }
    if STORE
        .state
        .compare_exchange(UNREAD, READING, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        // Reading makes only system calls, so the reader finishes soon.
        while STORE.state.load(Ordering::Acquire) != READ {
            crate::os::yield_now();
        }
        return;
    }
    let p = from_environ().unwrap_or_else(from_proc);
    let code = match p.show_stats {
        ShowStats::Default => 0,
        ShowStats::Off => 1,
        ShowStats::On => 2,
    };
    STORE.show_stats.store(code, Ordering::Relaxed);
    STORE.verbose.store(p.verbose, Ordering::Relaxed);
    // SAFETY: this thread alone holds READING (see `Store`'s Sync impl).
    unsafe { (&mut *STORE.file.get())[..p.file_len].copy_from_slice(&p.file[..p.file_len]) };
    STORE.file_len.store(p.file_len, Ordering::Relaxed);
    if let Some((dev, ino, rdev)) = fd_identity(2) {
        STORE.err_dev.store(dev, Ordering::Relaxed);
        STORE.err_ino.store(ino, Ordering::Relaxed);
        STORE.err_rdev.store(rdev, Ordering::Relaxed);
        STORE.err_open.store(true, Ordering::Relaxed);
    }
    // Release: the values above are visible to every Acquire load of READ.
    STORE.state.store(READ, Ordering::Release);
    warn_bad(p.bad);
}

/// One line on stderr per option value that was not understood.
#[cold]
fn warn_bad(bad: u8) {
    if bad & BAD_SHOW != 0 {
        Line::new().s("hz3: HZ3_SHOW_STATS must be 0 or 1 (or off/on, no/yes, false/true); ignored").emit();
    }
    if bad & BAD_VERBOSE != 0 {
        Line::new().s("hz3: HZ3_VERBOSE must be 0 or 1 (or off/on, no/yes, false/true); ignored").emit();
    }
    if bad & BAD_FILE != 0 {
        Line::new()
            .s("hz3: HZ3_STATS_FILE is longer than 255 bytes; ignored")
            .emit();
    }
}

/// `HZ3_SHOW_STATS`.
pub fn show_stats() -> ShowStats {
    read_once();
    match STORE.show_stats.load(Ordering::Relaxed) {
        1 => ShowStats::Off,
        2 => ShowStats::On,
        _ => ShowStats::Default,
    }
}

/// Whether a type prints exit lines: `stats` is its `stats` flag.
pub fn exit_lines_wanted(stats: bool) -> bool {
    match show_stats() {
        ShowStats::Default => stats,
        ShowStats::Off => false,
        ShowStats::On => true,
    }
}

/// `HZ3_VERBOSE`.
pub fn verbose() -> bool {
    read_once();
    STORE.verbose.load(Ordering::Relaxed)
}

/// `HZ3_STATS_FILE` (empty when unset).
pub fn stats_file() -> &'static [u8] {
    read_once();
    let len = STORE.file_len.load(Ordering::Relaxed);
    // SAFETY: after `read_once` the store is READ (Acquire), so `file` is
    // no longer written; `len` bytes of it are the value.
    unsafe { &(&*STORE.file.get())[..len] }
}

/// Whether descriptor 2 is still the file it was at start-up (false when it
/// was closed then or is closed now).
pub fn stderr_unchanged() -> bool {
    read_once();
    if !STORE.err_open.load(Ordering::Relaxed) {
        return false;
    }
    let then = (
        STORE.err_dev.load(Ordering::Relaxed),
        STORE.err_ino.load(Ordering::Relaxed),
        STORE.err_rdev.load(Ordering::Relaxed),
    );
    fd_identity(2) == Some(then)
}

// ---------------------------------------------------------------------------
// Names for the lines hz3 prints

extern "C" {
    /// glibc's (and musl's) basename of `argv[0]`, set during libc start-up.
    static program_invocation_short_name: *const c_char;
}

/// Append the program's name to `l`: `program_invocation_short_name`, or
/// `/proc/self/comm` before libc has set it. Spaces and control characters
/// become `_` so that the line stays one `key=value` list.
pub fn append_prog(l: &mut Line) {
    let mut name = [0u8; 64];
    let mut len = 0;
    // SAFETY: reading the pointer value of a libc global (not a reference).
    let p = unsafe { core::ptr::addr_of!(program_invocation_short_name).read() };
    if !p.is_null() {
        // SAFETY: a NUL-terminated string when non-null; we stop at the NUL or the buffer's end.
        while len < name.len() && unsafe { *p.add(len) } != 0 {
            // SAFETY: as above, byte `len` is before the NUL.
            name[len] = unsafe { *p.add(len) } as u8;
            len += 1;
        }
    }
    if len == 0 {
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(c"/proc/self/comm".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: `name` is writable for its length; `fd` is closed once.
            let n = unsafe { libc::read(fd, name.as_mut_ptr() as *mut _, name.len()) };
            // SAFETY: `fd` was opened above and is closed only here.
            unsafe { libc::close(fd) };
            len = if n > 0 { n as usize } else { 0 };
            while len > 0 && name[len - 1] == b'\n' {
                len -= 1;
            }
        }
    }
    if len == 0 {
        l.s("?");
        return;
    }
    for b in &mut name[..len] {
        if *b <= b' ' || *b == 0x7f {
            *b = b'_';
        }
    }
    l.bytes_raw(&name[..len]);
}

/// Append ` prog=NAME pid=N` to `l`.
pub fn append_origin(l: &mut Line) {
    l.s(" prog=");
    append_prog(l);
    // SAFETY: getpid has no preconditions.
    l.s(" pid=").u(unsafe { libc::getpid() } as u64);
}

// ---------------------------------------------------------------------------
// Start-up lines

/// Called by each type's initialisation: reads the options (first time) and,
/// with `HZ3_VERBOSE=1`, prints the options (once per process) and this
/// type's arena facts, one line each on stderr.
pub fn at_type_init(name: &str, reserved: usize, shards: usize, stats: bool) {
    read_once();
    if !verbose() {
        return;
    }
    static OPTIONS_SHOWN: AtomicBool = AtomicBool::new(false);
    if !OPTIONS_SHOWN.swap(true, Ordering::Relaxed) {
        let mut l = Line::new();
        l.s("[HZ3_OPTIONS] HZ3_SHOW_STATS=").s(match show_stats() {
            ShowStats::Default => "default",
            ShowStats::Off => "0",
            ShowStats::On => "1",
        });
        l.s(" HZ3_STATS_FILE=");
        let f = stats_file();
        if f.is_empty() {
            l.s("(stderr)");
        } else {
            l.bytes_raw(f);
        }
        l.s(" HZ3_VERBOSE=1");
        append_origin(&mut l);
        l.emit();
    }
    // SAFETY: sysconf only reads process constants.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let mut l = Line::new();
    l.s("[HZ3_ARENA] type=")
        .s(name)
        .s(" reserved_bytes=")
        .u(reserved as u64);
    l.s(" shards=").u(shards as u64).s(" page=").u(page.max(0) as u64);
    l.s(" stats=").s(if stats { "on" } else { "off" });
    append_origin(&mut l);
    l.emit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_option() {
        let p = parse_block(b"PATH=/bin\0HZ3_SHOW_STATS=0\0HZ3_STATS_FILE=/tmp/s.%p\0HZ3_VERBOSE=yes\0X=1");
        assert_eq!(p.show_stats, ShowStats::Off);
        assert!(p.verbose);
        assert_eq!(&p.file[..p.file_len], b"/tmp/s.%p");
        assert_eq!(p.bad, 0);
        let q = parse_block(b"HZ3_SHOW_STATS=ON\0HZ3_VERBOSE=0");
        assert_eq!(q.show_stats, ShowStats::On);
        assert!(!q.verbose);
        assert_eq!(parse_block(b"").show_stats, ShowStats::Default);
    }

    #[test]
    fn bad_values_are_flagged_and_ignored() {
        let p = parse_block(b"HZ3_SHOW_STATS=2\0HZ3_VERBOSE=maybe\0");
        assert_eq!(p.show_stats, ShowStats::Default);
        assert!(!p.verbose);
        assert_eq!(p.bad, BAD_SHOW | BAD_VERBOSE);
        let mut long = [b'a'; 300];
        long[..15].copy_from_slice(b"HZ3_STATS_FILE=");
        let p = parse_block(&long);
        assert_eq!(p.file_len, 0);
        // An entry longer than the partial buffer is skipped, not cut.
        assert_eq!(p.bad, 0);
        let mut just = [b'b'; 15 + FILE_MAX + 1];
        just[..15].copy_from_slice(b"HZ3_STATS_FILE=");
        assert_eq!(parse_block(&just).bad, BAD_FILE);
    }

    #[test]
    fn entries_cut_by_read_boundaries_are_joined() {
        let block = b"A=1\0HZ3_SHOW_STATS=1\0HZ3_STATS_FILE=/x/y\0";
        for cut in 0..block.len() {
            let mut p = Parsed::DEFAULT;
            let mut cur = Partial {
                buf: [0; FILE_MAX + 32],
                len: 0,
                overflow: false,
            };
            p.feed(&block[..cut], &mut cur);
            p.feed(&block[cut..], &mut cur);
            assert_eq!(p.show_stats, ShowStats::On, "cut at {cut}");
            assert_eq!(&p.file[..p.file_len], b"/x/y", "cut at {cut}");
        }
    }

    #[test]
    fn proc_and_environ_agree() {
        // The test process's environment has no HZ3_ variables set by the
        // tests themselves; both readers must see the same values.
        let a = from_proc();
        let b = from_environ().unwrap_or(Parsed::DEFAULT);
        assert_eq!(a.show_stats, b.show_stats);
        assert_eq!(a.verbose, b.verbose);
        assert_eq!(&a.file[..a.file_len], &b.file[..b.file_len]);
    }

    #[test]
    fn fd_identity_tells_files_apart() {
        assert!(fd_identity(-1).is_none());
        let a = fd_identity(0);
        // SAFETY: dup of an open descriptor; closed below.
        let d = unsafe { libc::dup(0) };
        if d >= 0 {
            assert_eq!(fd_identity(d), a);
            // SAFETY: `d` was opened above.
            unsafe { libc::close(d) };
        }
    }
}
