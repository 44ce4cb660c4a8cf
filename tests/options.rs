//! Runtime options (`HZ3_SHOW_STATS`, `HZ3_STATS_FILE`, `HZ3_VERBOSE`) and the
//! exit lines they steer. Each scenario runs in a child process (this test
//! binary re-executed on the one test, with `HZ3_OPTIONS_CHILD` set and the
//! options under test in its environment): options are read once per process,
//! and the exit lines are written by the child's `exit`.

use std::alloc::{GlobalAlloc, Layout};
use std::path::PathBuf;
use std::process::{Command, Output};

const CHILD_ENV: &str = "HZ3_OPTIONS_CHILD";
/// The child's own output file (the one that gets descriptor 2).
const OWN_FILE: &str = "TEST_OWN_FILE";
const OPTIONS: [&str; 3] = ["HZ3_SHOW_STATS", "HZ3_STATS_FILE", "HZ3_VERBOSE"];

hz3::hz3_allocator! { pub struct OptStats<stats: true, shards: 3>; }
hz3::hz3_allocator! { pub struct OptQuiet<stats: false>; }

static STATS: OptStats = OptStats::new();
static QUIET: OptQuiet = OptQuiet::new();

/// Some allocations with `a` (its first one initialises the type, reads the
/// options and registers the exit lines).
fn churn(a: &dyn GlobalAlloc) {
    let l = Layout::from_size_align(48, 16).unwrap();
    for _ in 0..100 {
        // SAFETY: a non-zero layout; the block is freed once with the same layout.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            p.write(1);
            a.dealloc(p, l);
        }
    }
}

/// A fresh directory for one scenario's files.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hz3-options-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// In the parent: re-run `test` in a child with `env` added (and no other
/// `HZ3_` option) and return its output. In the child: run `body`, then exit
/// through libc's `exit` (which runs the exit lines).
fn in_child(test: &str, env: &[(&str, &str)], body: impl FnOnce()) -> Option<Output> {
    if std::env::var_os(CHILD_ENV).is_some() {
        body();
        std::process::exit(0);
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1");
    for o in OPTIONS {
        cmd.env_remove(o);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn child test process");
    assert!(
        out.status.success(),
        "{test}: child failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out)
}

/// The `[HZ3_...]` lines of `text` naming type `ty`.
fn hz3_lines<'a>(text: &'a str, ty: &str) -> Vec<&'a str> {
    let tag = format!("type={ty} ");
    text.lines()
        .filter(|l| l.starts_with("[HZ3_") && l.contains(&tag))
        .collect()
}

/// The child's pid, which it printed on stdout as `CHILD_PID=N`.
fn child_pid(out: &Output) -> u32 {
    let s = String::from_utf8_lossy(&out.stdout);
    let line = s
        .lines()
        .find_map(|l| l.split("CHILD_PID=").nth(1))
        .unwrap_or_else(|| panic!("no CHILD_PID in {s}; stderr {}", String::from_utf8_lossy(&out.stderr)));
    line.trim().parse().unwrap()
}

fn print_pid() {
    println!("CHILD_PID={}", std::process::id());
}

fn exe_name() -> String {
    std::env::current_exe()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn exit_lines_name_program_and_pid() {
    let Some(out) = in_child("exit_lines_name_program_and_pid", &[], || {
        print_pid();
        churn(&STATS);
    }) else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let lines = hz3_lines(&err, "OptStats");
    assert_eq!(lines.len(), 3, "three exit lines expected:\n{err}");
    let origin = format!(" prog={} pid={}", exe_name(), child_pid(&out));
    for (l, tag) in lines.iter().zip(["[HZ3_S110_FREE] ", "[HZ3_PTAG] ", "[HZ3_CACHE] "]) {
        assert!(l.starts_with(tag), "{l}");
        assert!(l.ends_with(&origin), "line does not end with `{origin}`: {l}");
    }
    assert!(lines[0].contains(" calls=100 "), "{}", lines[0]);
    // A stats: false type prints nothing by default.
    assert!(hz3_lines(&err, "OptQuiet").is_empty());
}

#[test]
fn show_stats_0_suppresses_the_lines() {
    let Some(out) = in_child("show_stats_0_suppresses_the_lines", &[("HZ3_SHOW_STATS", "0")], || {
        churn(&STATS)
    }) else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("[HZ3_"), "HZ3_SHOW_STATS=0 but:\n{err}");
}

#[test]
fn show_stats_1_shows_stats_types_and_names_quiet_ones() {
    let Some(out) = in_child(
        "show_stats_1_shows_stats_types_and_names_quiet_ones",
        &[("HZ3_SHOW_STATS", "1")],
        || {
            churn(&STATS);
            churn(&QUIET);
        },
    ) else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(hz3_lines(&err, "OptStats").len(), 3, "{err}");
    let quiet = hz3_lines(&err, "OptQuiet");
    assert_eq!(quiet.len(), 1, "{err}");
    assert!(quiet[0].contains("stats: false"), "{}", quiet[0]);
}

/// Close stderr and open the file named by `OWN_FILE`, which gets descriptor
/// 2; write one line into it (as a program would).
fn reassign_stderr() {
    let file = std::env::var(OWN_FILE).unwrap();
    let path = std::ffi::CString::new(file).unwrap();
    // SAFETY: plain descriptor calls on a NUL-terminated path.
    unsafe {
        libc::close(2);
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
        assert_eq!(fd, 2, "the new file did not get descriptor 2");
        let text = b"program's own line\n";
        assert_eq!(
            libc::write(2, text.as_ptr() as *const _, text.len()),
            text.len() as isize
        );
    }
}

#[test]
fn reassigned_stderr_gets_no_lines() {
    let dir = scratch("reassigned");
    let own = dir.join("own.txt");
    let Some(_) = in_child(
        "reassigned_stderr_gets_no_lines",
        &[(OWN_FILE, own.to_str().unwrap())],
        || {
            churn(&STATS);
            reassign_stderr();
        },
    ) else {
        return;
    };
    let text = std::fs::read_to_string(&own).unwrap();
    assert_eq!(text, "program's own line\n", "the program's file got hz3's lines");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stats_file_with_pid_gets_the_lines() {
    let dir = scratch("file");
    let own = dir.join("own.txt");
    let pattern = dir.join("stats.%p.txt");
    let Some(out) = in_child(
        "stats_file_with_pid_gets_the_lines",
        &[
            ("HZ3_STATS_FILE", pattern.to_str().unwrap()),
            (OWN_FILE, own.to_str().unwrap()),
        ],
        || {
            print_pid();
            churn(&STATS);
            reassign_stderr();
        },
    ) else {
        return;
    };
    let pid = child_pid(&out);
    let stats = std::fs::read_to_string(dir.join(format!("stats.{pid}.txt"))).expect("stats file named with the pid");
    assert_eq!(hz3_lines(&stats, "OptStats").len(), 3, "{stats}");
    assert!(stats.contains(&format!(" pid={pid}")), "{stats}");
    assert_eq!(std::fs::read_to_string(&own).unwrap(), "program's own line\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stats_file_appends() {
    let dir = scratch("append");
    let file = dir.join("stats.txt");
    std::fs::write(&file, "earlier\n").unwrap();
    let Some(out) = in_child(
        "stats_file_appends",
        &[("HZ3_STATS_FILE", file.to_str().unwrap())],
        || churn(&STATS),
    ) else {
        return;
    };
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("earlier\n"), "{text}");
    assert_eq!(hz3_lines(&text, "OptStats").len(), 3, "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(hz3_lines(&err, "OptStats").is_empty(), "lines also on stderr:\n{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verbose_prints_options_and_arena_facts() {
    let Some(out) = in_child(
        "verbose_prints_options_and_arena_facts",
        &[("HZ3_VERBOSE", "1"), ("HZ3_SHOW_STATS", "0")],
        || {
            churn(&STATS);
            churn(&QUIET);
        },
    ) else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let opts: Vec<_> = err.lines().filter(|l| l.starts_with("[HZ3_OPTIONS] ")).collect();
    assert_eq!(opts.len(), 1, "one options line per process:\n{err}");
    assert!(
        opts[0].contains("HZ3_SHOW_STATS=0 HZ3_STATS_FILE=(stderr) HZ3_VERBOSE=1"),
        "{}",
        opts[0]
    );
    let arena = hz3_lines(&err, "OptStats");
    assert_eq!(arena.len(), 1, "{err}");
    let want = format!("reserved_bytes={} shards=3 page=", OptStats::ARENA_SIZE);
    assert!(
        arena[0].starts_with("[HZ3_ARENA] ") && arena[0].contains(&want),
        "{}",
        arena[0]
    );
    assert_eq!(hz3_lines(&err, "OptQuiet").len(), 1, "{err}");
}

#[test]
fn bad_value_is_reported_and_ignored() {
    let Some(out) = in_child(
        "bad_value_is_reported_and_ignored",
        &[("HZ3_SHOW_STATS", "maybe")],
        || churn(&STATS),
    ) else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HZ3_SHOW_STATS must be 0 or 1"), "{err}");
    assert_eq!(hz3_lines(&err, "OptStats").len(), 3, "default kept:\n{err}");
}
