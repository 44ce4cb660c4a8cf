//! `hz3-presets new NAME "FLAGS"`: the preset generator. Turns an `hz3_allocator!` flag
//! list into an `LD_PRELOAD` library, `libhz3_NAME.so`, without the user writing a
//! crate.
//!
//! Owns: the command line, the checks on the name and the flag list that the macro
//! cannot make (the name becomes a file and crate name; `export: c` is added here),
//! writing the small cdylib crate and running `cargo build --release` on it.
//!
//! Must never: judge the flags themselves. The macro is the one authority on flags and
//! values; a bad flag list is reported by building the crate and showing the macro's
//! errors, so the two can never disagree.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
hz3-presets new NAME \"FLAGS\" [--target-dir DIR]

Makes an LD_PRELOAD library from an hz3_allocator! flag list, without writing a crate:
writes a small library crate to TARGET/hz3-presets/NAME/, builds it with
`cargo build --release`, and leaves the library at TARGET/release/libhz3_NAME.so.

Arguments:
  NAME    the library's name: lower-case letters, digits and `_`, starting with a
          letter (it becomes libhz3_NAME.so); not the name of a built-in library
          (scale, default, s110, hardened)
  FLAGS   the flag list, written as inside hz3_allocator!'s <...>, for example
          \"s110_meta: true, ptag: first, stats: false\"; flags left out take their
          defaults, \"\" takes them all. Do not give `export`: the generator adds
          `export: c`, which makes the library define malloc, free, ...
          A misspelt flag or value fails the build with the macro's message.

Options:
  --target-dir DIR   cargo's target directory (default: $CARGO_TARGET_DIR, else the
                     hz3 repository's target/); dependencies built there are reused
  -h, --help         this text

Example:
  cargo run -p hz3-presets -- new mypreset \"s110_meta: true, ptag: first, stats: false\"
  LD_PRELOAD=$PWD/target/release/libhz3_mypreset.so python3 -c 'print(sum(range(10)))'
";

/// The libraries the repository builds itself (`presets/*`, and the proc-macro's
/// `libhz3_macros.so` in the same directory): a generated one must not overwrite them.
const RESERVED: &[&str] = &[
    "scale", "default", "s110", "hardened", "macros", "runtime", "presets", "bench",
];

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Request {
    Help,
    New {
        name: String,
        flags: String,
        target_dir: Option<PathBuf>,
    },
}

fn parse_args(args: &[String]) -> Result<Request, String> {
    let mut positional = Vec::new();
    let mut target_dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(Request::Help),
            "help" if positional.is_empty() => return Ok(Request::Help),
            "--target-dir" => match it.next() {
                Some(dir) => target_dir = Some(PathBuf::from(dir)),
                None => return Err("`--target-dir` needs a directory".into()),
            },
            s if s.starts_with("--target-dir=") => {
                target_dir = Some(PathBuf::from(&s["--target-dir=".len()..]));
            }
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("unknown option `{s}`"));
            }
            _ => positional.push(a.clone()),
        }
    }
    match positional.as_slice() {
        [] => Err("missing command: the only command is `new NAME \"FLAGS\"`".into()),
        [cmd, ..] if cmd != "new" => Err(format!(
            "unknown command `{cmd}`: the only command is `new NAME \"FLAGS\"`"
        )),
        [_] => Err("missing NAME and FLAGS after `new`".into()),
        [_, _] => Err("missing FLAGS after NAME (give \"\" for all defaults)".into()),
        [_, name, flags] => {
            check_name(name)?;
            Ok(Request::New {
                name: name.clone(),
                flags: clean_flags(flags)?,
                target_dir,
            })
        }
        [_, _, _, extra, ..] => Err(format!(
            "unexpected argument `{extra}`: put the whole flag list in one pair of quotes"
        )),
    }
}

/// The name becomes `libhz3_NAME.so`, the crate `hz3-preset-NAME` and a directory:
/// a lower-case C identifier keeps all three valid and unsurprising.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok {
        return Err(format!(
            "invalid NAME `{name}`: use lower-case letters, digits and `_`, starting with a \
             letter (for example `mypreset` or `ptag_first`)"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "NAME `{name}` is taken: libhz3_{name}.so is built by this repository; pick \
             another name"
        ));
    }
    Ok(())
}

/// Checks the flag list for what the generator itself must handle, and drops a
/// trailing `,` (the generator appends `export: c`). Everything else is the macro's.
fn clean_flags(flags: &str) -> Result<String, String> {
    let trimmed = flags.trim().trim_end_matches(',').trim_end();
    if let Some(bad) = trimmed
        .chars()
        .find(|c| matches!(c, ';' | '{' | '}' | '<' | '>'))
    {
        return Err(format!(
            "the flag list may not contain `{bad}`: give only the `name: value, ...` \
             items, without the surrounding <...>"
        ));
    }
    let names_export = trimmed
        .split(',')
        .any(|item| item.split(':').next().is_some_and(|n| n.trim() == "export"));
    if names_export {
        return Err(
            "leave `export` out of the flag list: the generator adds `export: c`, which \
             the LD_PRELOAD library needs"
                .into(),
        );
    }
    Ok(trimmed.to_string())
}

/// `my_lane` → `MyLane`: the allocator type's name, shown in its exit lines (`self`,
/// whose `Self` is a keyword, becomes `Hz3Self`).
fn type_name(name: &str) -> String {
    let camel: String = name
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect();
    if camel == "Self" {
        "Hz3Self".to_string()
    } else {
        camel
    }
}

/// The generated crate's manifest. Its own `[workspace]` keeps it out of the hz3
/// workspace (it lives under the repository's target/); the release profile is the
/// workspace's, so the library is built as the built-in presets are.
fn manifest(name: &str, runtime: &Path) -> String {
    format!(
        r#"# Written by `hz3-presets new {name}`; running it again rewrites this file.
[package]
name = "hz3-preset-{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
name = "hz3_{name}"
crate-type = ["cdylib"]

[dependencies]
hz3-runtime = {{ path = "{runtime}" }}

[workspace]

[profile.release]
lto = "fat"
codegen-units = 1
panic = "abort"
debug = 1
"#,
        runtime = toml_escape(&runtime.display().to_string()),
    )
}

/// `s` written inside a TOML basic string (`"..."`).
fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The generated crate's source: one type with the user's flags plus `export: c`,
/// which is also the library's own `#[global_allocator]` (as in presets/scale).
fn source(name: &str, flags: &str) -> String {
    let ty = type_name(name);
    let flag_line = if flags.is_empty() {
        String::new()
    } else {
        format!("        {flags},\n")
    };
    format!(
        r#"//! `libhz3_{name}.so`, written by `hz3-presets new {name}`; running it again
//! rewrites this file. Use: `LD_PRELOAD=/path/to/libhz3_{name}.so program args...`

hz3_runtime::hz3_allocator! {{
    /// The `{name}` preset.
    pub struct {ty}<
{flag_line}        export: c,
    >;
}}

#[global_allocator]
static GLOBAL: {ty} = {ty}::new();
"#
    )
}

/// Writes `contents` unless the file already holds exactly that, so that running the
/// command again with the same flags does not rebuild the library.
fn write_if_changed(path: &Path, contents: &str) -> io::Result<()> {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    fs::write(path, contents)
}

/// The hz3 repository this generator was built from.
fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn absolute(p: &Path) -> io::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(env::current_dir()?.join(p))
    }
}

fn generate(name: &str, flags: &str, target_dir: Option<PathBuf>) -> Result<(), String> {
    let root = repository_root()
        .canonicalize()
        .map_err(|e| format!("cannot find the hz3 repository this was built from: {e}"))?;
    let runtime = root.join("hz3-runtime");
    if !runtime.join("Cargo.toml").is_file() {
        return Err(format!(
            "no hz3-runtime crate at {}: was the repository moved since this command was \
             built?",
            runtime.display()
        ));
    }
    let target = match target_dir.or_else(|| env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)) {
        Some(dir) => {
            absolute(&dir).map_err(|e| format!("cannot resolve the target directory: {e}"))?
        }
        None => root.join("target"),
    };
    let crate_dir = target.join("hz3-presets").join(name);
    let io_err =
        |what: &str, e: io::Error| format!("cannot write {what} in {}: {e}", crate_dir.display());
    fs::create_dir_all(crate_dir.join("src")).map_err(|e| io_err("the crate", e))?;
    fs::create_dir_all(crate_dir.join(".cargo")).map_err(|e| io_err(".cargo", e))?;
    write_if_changed(&crate_dir.join("Cargo.toml"), &manifest(name, &runtime))
        .map_err(|e| io_err("Cargo.toml", e))?;
    write_if_changed(&crate_dir.join("src/lib.rs"), &source(name, flags))
        .map_err(|e| io_err("src/lib.rs", e))?;
    // So that a plain `cargo build --release` in the crate, after editing it by hand,
    // builds the same library file as this command.
    let config = format!(
        "# Written by `hz3-presets new {name}`.\n[build]\ntarget-dir = \"{}\"\n",
        toml_escape(&target.display().to_string())
    );
    write_if_changed(&crate_dir.join(".cargo/config.toml"), &config)
        .map_err(|e| io_err(".cargo/config.toml", e))?;
    // The repository's lock file: the same dependency versions as the built-in presets,
    // so their compiled dependencies are reused and nothing new is fetched.
    if let Ok(lock) = fs::read_to_string(root.join("Cargo.lock")) {
        let lock_path = crate_dir.join("Cargo.lock");
        if !lock_path.exists() {
            fs::write(&lock_path, lock).map_err(|e| io_err("Cargo.lock", e))?;
        }
    }

    let all_flags = if flags.is_empty() {
        "export: c".to_string()
    } else {
        format!("{flags}, export: c")
    };
    eprintln!(
        "hz3-presets: building libhz3_{name}.so from <{all_flags}> (crate in {})",
        crate_dir.display()
    );
    let lib = target.join("release").join(format!("libhz3_{name}.so"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let status = Command::new(&cargo)
        .arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .map_err(|e| format!("cannot run cargo ({}): {e}", cargo.to_string_lossy()))?;
    if !status.success() {
        // A library left by an earlier run with other flags must not pass for this one.
        let _ = fs::remove_file(&lib);
        return Err(format!(
            "building libhz3_{name}.so failed; the errors above say why (a flag or value \
             the macro does not know is reported at its place in {})",
            crate_dir.join("src/lib.rs").display()
        ));
    }
    if !lib.is_file() {
        return Err(format!("cargo succeeded but {} is missing", lib.display()));
    }
    println!("{}", lib.display());
    eprintln!(
        "hz3-presets: use it with  LD_PRELOAD={} program args...",
        lib.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match parse_args(&args) {
        Ok(Request::Help) => {
            print!("{USAGE}");
            Ok(())
        }
        Ok(Request::New {
            name,
            flags,
            target_dir,
        }) => generate(&name, &flags, target_dir),
        Err(msg) => {
            eprintln!("hz3-presets: error: {msg}");
            eprintln!("usage: hz3-presets new NAME \"FLAGS\"   (--help for more)");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("hz3-presets: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_new() {
        let r = parse_args(&args(&["new", "mypreset", "s110_meta: true, ptag: first,"]));
        assert_eq!(
            r,
            Ok(Request::New {
                name: "mypreset".into(),
                flags: "s110_meta: true, ptag: first".into(),
                target_dir: None,
            })
        );
        let r = parse_args(&args(&["--target-dir", "/t", "new", "a1", ""]));
        assert_eq!(
            r,
            Ok(Request::New {
                name: "a1".into(),
                flags: String::new(),
                target_dir: Some("/t".into()),
            })
        );
        assert_eq!(parse_args(&args(&["--help"])), Ok(Request::Help));
        assert_eq!(
            parse_args(&args(&["new", "x", "y", "-h"])),
            Ok(Request::Help)
        );
    }

    #[test]
    fn rejects_bad_command_lines() {
        let err = |a: &[&str]| parse_args(&args(a)).unwrap_err();
        assert!(err(&[]).contains("missing command"));
        assert!(err(&["make", "a", ""]).contains("unknown command `make`"));
        assert!(err(&["new"]).contains("missing NAME"));
        assert!(err(&["new", "a"]).contains("missing FLAGS"));
        assert!(err(&["new", "a", "stats:", "true"]).contains("one pair of quotes"));
        assert!(err(&["new", "a", "", "--fast"]).contains("unknown option `--fast`"));
        assert!(err(&["new", "a", "", "--target-dir"]).contains("needs a directory"));
    }

    #[test]
    fn names() {
        for good in ["mypreset", "a", "ptag_first", "x86_64", "lane2"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "", "MyLane", "my-lane", "1lane", "_x", "lane.so", "é", "my lane",
        ] {
            assert!(
                check_name(bad).unwrap_err().contains("invalid NAME"),
                "{bad}"
            );
        }
        for taken in ["scale", "default", "s110", "macros"] {
            assert!(
                check_name(taken).unwrap_err().contains("is taken"),
                "{taken}"
            );
        }
    }

    #[test]
    fn flag_lists() {
        assert_eq!(
            clean_flags("  stats: true , ").as_deref(),
            Ok("stats: true")
        );
        assert_eq!(clean_flags("").as_deref(), Ok(""));
        // Bad flags and values are left to the macro.
        assert_eq!(clean_flags("ptag: frist").as_deref(), Ok("ptag: frist"));
        assert!(clean_flags("stats: true, export: c")
            .unwrap_err()
            .contains("leave `export` out"));
        assert!(clean_flags(" export : none")
            .unwrap_err()
            .contains("leave `export` out"));
        assert!(clean_flags("<stats: true>")
            .unwrap_err()
            .contains("may not contain `<`"));
        assert!(clean_flags("stats: true>; fn f() {}").is_err());
    }

    #[test]
    fn type_names() {
        assert_eq!(type_name("mypreset"), "Mypreset");
        assert_eq!(type_name("ptag_first"), "PtagFirst");
        assert_eq!(type_name("a__b_"), "AB");
        assert_eq!(type_name("x86_64"), "X8664");
        assert_eq!(type_name("self"), "Hz3Self");
    }

    #[test]
    fn generated_source() {
        let s = source("my_lane", "ptag: first");
        assert!(
            s.contains("pub struct MyLane<\n        ptag: first,\n        export: c,\n    >;"),
            "{s}"
        );
        assert!(s.contains("static GLOBAL: MyLane = MyLane::new();"), "{s}");
        let s = source("plain", "");
        assert!(
            s.contains("pub struct Plain<\n        export: c,\n    >;"),
            "{s}"
        );
        let m = manifest("my_lane", Path::new("/src/hz3/hz3-runtime"));
        assert!(m.contains("name = \"hz3_my_lane\""), "{m}");
        assert!(
            m.contains("hz3-runtime = { path = \"/src/hz3/hz3-runtime\" }"),
            "{m}"
        );
        assert!(m.contains("\n[workspace]\n"), "{m}");
    }
}
