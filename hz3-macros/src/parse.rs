//! Parsing of an `hz3_allocator!` invocation.
//!
//! Owns: the invocation grammar (declarations `attrs vis struct Name<flag: value, ...>;`),
//! the flag table (names, value kinds, ranges, defaults), and every diagnostic about
//! flags: unknown flag, wrong value, out-of-range integer, duplicate flag, invalid
//! combinations. Produces typed [`Decl`]s whose [`Flags`] are known to be valid.
//!
//! Parsing happens in two steps so that all flag errors are reported at once:
//! [`RawInput`] is the syntax (only malformed syntax, e.g. a missing `;`, aborts
//! early), and [`validate`] turns it into [`Decl`]s, combining every flag error
//! into one [`syn::Error`].
//!
//! Must never: emit code (that is `expand.rs`).

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Ident, LitInt, Token, Visibility};

/// Position of the page-tag map in the free route (mirrors `hz3_runtime::Ptag`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ptag {
    /// No tag map.
    Off,
    /// The tag map is the primary free route.
    First,
    /// The tag map is the fallback after the S110 meta step.
    Late,
}

/// Whether the type also exports the C allocation symbols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export {
    /// Rust `GlobalAlloc` only.
    None,
    /// Also `#[no_mangle]` `malloc`, `free`, ... for `LD_PRELOAD` cdylibs.
    C,
}

/// The validated flags of one declaration. `Default` gives the scale lane's routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags {
    /// `s110_meta`: segment headers carry the per-page `bin_plus1` array.
    pub s110_meta: bool,
    /// `free_fast`: `free` tries the S110 meta first.
    pub free_fast: bool,
    /// `ptag`: position of the page-tag map in the free route.
    pub ptag: Ptag,
    /// `stats`: counters and an exit summary line.
    pub stats: bool,
    /// `failfast`: abort on any detected inconsistency.
    pub failfast: bool,
    /// `harden`: keyed free-list links and cheap misuse checks.
    pub harden: bool,
    /// `shards`: number of owner shards.
    pub shards: u32,
    /// `arena_gib`: GiB of address space reserved for the arena.
    pub arena_gib: u32,
    /// `purge`: return empty pages to the OS.
    pub purge: bool,
    /// `export`: C symbol export.
    pub export: Export,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            s110_meta: true,
            free_fast: false,
            ptag: Ptag::Late,
            stats: false,
            failfast: false,
            harden: false,
            shards: 64,
            arena_gib: 64,
            purge: true,
            export: Export::None,
        }
    }
}

/// What kind of value a flag takes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Bool,
    /// One of these bare identifiers.
    Choice(&'static [&'static str]),
    /// An integer literal in `lo..=hi`.
    Int(u64, u64),
}

/// The flag table: name and value kind, in documentation order.
const FLAG_TABLE: &[(&str, Kind)] = &[
    ("s110_meta", Kind::Bool),
    ("free_fast", Kind::Bool),
    ("ptag", Kind::Choice(&["off", "first", "late"])),
    ("stats", Kind::Bool),
    ("failfast", Kind::Bool),
    ("harden", Kind::Bool),
    ("shards", Kind::Int(1, 4096)),
    ("arena_gib", Kind::Int(1, 1024)),
    ("purge", Kind::Bool),
    ("export", Kind::Choice(&["none", "c"])),
];

/// One `name: value` item of a flag list, before validation.
pub struct RawFlag {
    /// The flag name as written (any identifier, keywords included).
    pub name: Ident,
    /// The value tokens up to the next top-level `,` or `>` (may be empty).
    pub value: Vec<TokenTree>,
    /// Span of the token after the `:` (for "missing value" errors).
    pub after_colon: Span,
}

/// One declaration, before validation.
pub struct RawDecl {
    /// Outer attributes, doc comments included; forwarded to the struct.
    pub attrs: Vec<Attribute>,
    /// Visibility of the struct.
    pub vis: Visibility,
    /// The type name.
    pub ident: Ident,
    /// The flag list (`None` when the declaration has no `<...>`).
    pub flags: Option<Vec<RawFlag>>,
}

/// A whole invocation, before validation.
pub struct RawInput {
    /// Replacement for the `::hz3_runtime` path prefix, from an optional leading
    /// `#![hz3_runtime = PATH]` (meant for a `macro_rules!` wrapper passing `$crate`).
    pub runtime: Option<TokenStream>,
    /// The declarations in order.
    pub decls: Vec<RawDecl>,
}

/// One validated declaration.
pub struct Decl {
    /// Outer attributes, forwarded to the struct.
    pub attrs: Vec<Attribute>,
    /// Visibility of the struct.
    pub vis: Visibility,
    /// The type name.
    pub ident: Ident,
    /// The validated flags.
    pub flags: Flags,
}

/// A validated invocation.
pub struct Input {
    /// The runtime path prefix to expand against (default `::hz3_runtime`).
    pub runtime: Option<TokenStream>,
    /// The declarations in order.
    pub decls: Vec<Decl>,
}

impl Parse for RawInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let runtime = parse_runtime_override(input)?;
        let mut decls = Vec::new();
        while !input.is_empty() {
            decls.push(input.parse()?);
        }
        Ok(RawInput { runtime, decls })
    }
}

/// Parses the optional leading `#![hz3_runtime = PATH]`.
fn parse_runtime_override(input: ParseStream) -> syn::Result<Option<TokenStream>> {
    if !(input.peek(Token![#]) && input.peek2(Token![!])) {
        return Ok(None);
    }
    input.parse::<Token![#]>()?;
    input.parse::<Token![!]>()?;
    let content;
    syn::bracketed!(content in input);
    let key: Ident = content.parse()?;
    if key != "hz3_runtime" {
        return Err(syn::Error::new(
            key.span(),
            "the only inner attribute accepted here is `#![hz3_runtime = PATH]`",
        ));
    }
    content.parse::<Token![=]>()?;
    let path: TokenStream = content.parse()?;
    if path.is_empty() {
        return Err(content.error("expected a path after `hz3_runtime =`"));
    }
    Ok(Some(path))
}

impl Parse for RawDecl {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>()?;
        let ident: Ident = input.parse()?;
        let flags = if input.peek(Token![<]) {
            input.parse::<Token![<]>()?;
            let mut flags = Vec::new();
            while !input.peek(Token![>]) {
                flags.push(input.parse()?);
                if input.peek(Token![,]) {
                    input.parse::<Token![,]>()?;
                } else if !input.peek(Token![>]) {
                    return Err(input.error("expected `,` or `>` after a flag value"));
                }
            }
            input.parse::<Token![>]>()?;
            Some(flags)
        } else {
            None
        };
        if !input.peek(Token![;]) {
            return Err(input.error(
                "expected `;` after the declaration (`vis struct Name<flag: value, ...>;`)",
            ));
        }
        input.parse::<Token![;]>()?;
        Ok(RawDecl {
            attrs,
            vis,
            ident,
            flags,
        })
    }
}

impl Parse for RawFlag {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name = input.call(Ident::parse_any)?;
        if !input.peek(Token![:]) {
            return Err(input.error(format!("expected `:` after flag name `{name}`")));
        }
        input.parse::<Token![:]>()?;
        let after_colon = input.span();
        let mut value = Vec::new();
        while !input.is_empty() && !input.peek(Token![,]) && !input.peek(Token![>]) {
            value.push(input.parse::<TokenTree>()?);
        }
        Ok(RawFlag {
            name,
            value,
            after_colon,
        })
    }
}

/// Accumulates errors so that all of them are reported together.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    fn at(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.push(syn::Error::new(span, msg));
    }
    fn spanned(&mut self, tokens: &[TokenTree], msg: impl std::fmt::Display) {
        let ts: TokenStream = tokens.iter().cloned().collect();
        self.push(syn::Error::new_spanned(ts, msg));
    }
}

/// A flag value, classified.
enum Value<'a> {
    Bool(bool),
    Ident(&'a Ident),
    Int(LitInt),
    Other,
}

fn classify(tokens: &[TokenTree]) -> Value<'_> {
    match tokens {
        [TokenTree::Ident(id)] if id == "true" => Value::Bool(true),
        [TokenTree::Ident(id)] if id == "false" => Value::Bool(false),
        [TokenTree::Ident(id)] => Value::Ident(id),
        [TokenTree::Literal(lit)] => match syn::Lit::new(lit.clone()) {
            syn::Lit::Int(i) => Value::Int(i),
            _ => Value::Other,
        },
        _ => Value::Other,
    }
}

/// The typed value of one flag.
enum Parsed {
    Bool(bool),
    Choice(&'static str),
    Int(u32),
}

/// Checks one value against its kind; on error records it and returns `None`.
fn check_value(name: &str, kind: Kind, tokens: &[TokenTree], errs: &mut Errors) -> Option<Parsed> {
    let value = classify(tokens);
    match (kind, value) {
        (Kind::Bool, Value::Bool(b)) => Some(Parsed::Bool(b)),
        (Kind::Bool, _) => {
            errs.spanned(
                tokens,
                format!("expected `true` or `false` for flag `{name}`"),
            );
            None
        }
        (Kind::Choice(choices), Value::Ident(id)) => {
            if let Some(c) = choices.iter().find(|c| id == *c) {
                Some(Parsed::Choice(c))
            } else {
                errs.at(
                    id.span(),
                    format!(
                        "unknown `{name}` value `{id}`; expected one of {}",
                        list(choices)
                    ),
                );
                None
            }
        }
        (Kind::Choice(choices), _) => {
            errs.spanned(
                tokens,
                format!(
                    "expected one of {} (a bare identifier) for flag `{name}`",
                    list(choices)
                ),
            );
            None
        }
        (Kind::Int(lo, hi), Value::Int(lit)) => match lit.base10_parse::<u64>() {
            Ok(v) if (lo..=hi).contains(&v) => u32::try_from(v).ok().map(Parsed::Int),
            _ => {
                errs.at(
                    lit.span(),
                    format!(
                        "`{name}` must be in {lo}..={hi}, got {}",
                        lit.base10_digits()
                    ),
                );
                None
            }
        },
        (Kind::Int(lo, hi), _) => {
            errs.spanned(
                tokens,
                format!("expected an integer literal in {lo}..={hi} for flag `{name}`"),
            );
            None
        }
    }
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Levenshtein distance, for "did you mean" hints on unknown flags.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn unknown_flag_message(name: &str) -> String {
    let names: Vec<&str> = FLAG_TABLE.iter().map(|(n, _)| *n).collect();
    let hint = names
        .iter()
        .map(|n| (distance(name, n), *n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    format!(
        "unknown flag `{name}`{hint}; valid flags are {}",
        list(&names)
    )
}

/// Spans of explicitly given values, for the combination checks.
#[derive(Default)]
struct Given {
    s110_meta: Option<Span>,
    free_fast: Option<Span>,
    ptag: Option<Span>,
    export: Option<Span>,
}

fn validate_flags(raw: &[RawFlag], errs: &mut Errors) -> (Flags, Given) {
    let mut flags = Flags::default();
    let mut given = Given::default();
    let mut seen: Vec<String> = Vec::new();
    for f in raw {
        let name = f.name.to_string();
        let Some(&(_, kind)) = FLAG_TABLE.iter().find(|(n, _)| *n == name) else {
            errs.at(f.name.span(), unknown_flag_message(&name));
            continue;
        };
        let duplicate = seen.contains(&name);
        if duplicate {
            errs.at(
                f.name.span(),
                format!("duplicate flag `{name}`: each flag may be given once per declaration"),
            );
        } else {
            seen.push(name.clone());
        }
        if f.value.is_empty() {
            errs.at(f.after_colon, format!("expected a value for flag `{name}`"));
            continue;
        }
        let Some(parsed) = check_value(&name, kind, &f.value, errs) else {
            continue;
        };
        if duplicate {
            continue;
        }
        let span = f.value[0].span();
        match (name.as_str(), parsed) {
            ("s110_meta", Parsed::Bool(b)) => {
                flags.s110_meta = b;
                given.s110_meta = Some(span);
            }
            ("free_fast", Parsed::Bool(b)) => {
                flags.free_fast = b;
                given.free_fast = Some(span);
            }
            ("stats", Parsed::Bool(b)) => flags.stats = b,
            ("failfast", Parsed::Bool(b)) => flags.failfast = b,
            ("harden", Parsed::Bool(b)) => flags.harden = b,
            ("purge", Parsed::Bool(b)) => flags.purge = b,
            ("shards", Parsed::Int(v)) => flags.shards = v,
            ("arena_gib", Parsed::Int(v)) => flags.arena_gib = v,
            ("ptag", Parsed::Choice(c)) => {
                flags.ptag = match c {
                    "off" => Ptag::Off,
                    "first" => Ptag::First,
                    _ => Ptag::Late,
                };
                given.ptag = Some(span);
            }
            ("export", Parsed::Choice(c)) => {
                flags.export = if c == "c" { Export::C } else { Export::None };
                given.export = Some(span);
            }
            // The table and this match list the same flags; nothing else reaches here.
            _ => {}
        }
    }
    check_combinations(&flags, &given, errs);
    (flags, given)
}

fn check_combinations(flags: &Flags, given: &Given, errs: &mut Errors) {
    if flags.free_fast && !flags.s110_meta {
        if let Some(span) = given.free_fast {
            errs.at(span, "free_fast requires s110_meta: true");
        }
    }
    if flags.ptag == Ptag::Late && !flags.s110_meta {
        match (given.ptag, given.s110_meta) {
            (Some(span), _) => errs.at(
                span,
                "ptag: late needs the S110 meta step to be late behind; \
                 use ptag: first or off, or s110_meta: true",
            ),
            (None, Some(span)) => errs.at(
                span,
                "s110_meta: false leaves the default ptag: late with no S110 meta step to be \
                 late behind; add ptag: first or ptag: off",
            ),
            (None, None) => {}
        }
    }
}

/// Validates a parsed invocation, reporting every flag error at once.
pub fn validate(raw: RawInput) -> syn::Result<Input> {
    let mut errs = Errors::default();
    let mut decls = Vec::with_capacity(raw.decls.len());
    let mut first_export: Option<String> = None;
    for d in raw.decls {
        let (flags, given) = match &d.flags {
            Some(list) => validate_flags(list, &mut errs),
            None => (Flags::default(), Given::default()),
        };
        if flags.export == Export::C {
            match (&first_export, given.export) {
                (Some(first), Some(span)) => errs.at(
                    span,
                    format!(
                        "only one type per final binary may use export: c (`{first}` already does)"
                    ),
                ),
                _ => first_export = Some(d.ident.to_string()),
            }
        }
        decls.push(Decl {
            attrs: d.attrs,
            vis: d.vis,
            ident: d.ident,
            flags,
        });
    }
    match errs.0 {
        Some(e) => Err(e),
        None => Ok(Input {
            runtime: raw.runtime,
            decls,
        }),
    }
}

/// Parses and validates an invocation's tokens.
pub fn parse_input(tokens: TokenStream) -> syn::Result<Input> {
    validate(syn::parse2::<RawInput>(tokens)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn one(ts: TokenStream) -> Flags {
        match parse_input(ts) {
            Ok(input) => {
                assert_eq!(input.decls.len(), 1);
                input.decls[0].flags
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn errors(ts: TokenStream) -> Vec<String> {
        match parse_input(ts) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn defaults_without_flag_list() {
        let f = one(quote! { pub struct Plain; });
        assert_eq!(f, Flags::default());
        assert!(f.s110_meta && !f.free_fast && f.ptag == Ptag::Late && !f.stats);
        assert!(!f.failfast && f.shards == 64 && f.arena_gib == 64 && f.purge);
        assert_eq!(f.export, Export::None);
    }

    #[test]
    fn empty_flag_list_is_defaults() {
        assert_eq!(one(quote! { struct A<>; }), Flags::default());
    }

    #[test]
    fn scale_lane() {
        let f = one(quote! {
            /// Scale lane.
            pub struct Scale<s110_meta: true, free_fast: false, ptag: late, stats: true>;
        });
        assert_eq!(
            f,
            Flags {
                stats: true,
                ..Flags::default()
            }
        );
    }

    #[test]
    fn every_flag() {
        let f = one(quote! {
            pub(crate) struct All<
                s110_meta: true, free_fast: true, ptag: off, stats: true, failfast: true,
                harden: true, shards: 4096, arena_gib: 1, purge: false, export: c,
            >;
        });
        assert_eq!(
            f,
            Flags {
                s110_meta: true,
                free_fast: true,
                ptag: Ptag::Off,
                stats: true,
                failfast: true,
                harden: true,
                shards: 4096,
                arena_gib: 1,
                purge: false,
                export: Export::C,
            }
        );
    }

    #[test]
    fn ptag_values() {
        assert_eq!(one(quote! { struct A<ptag: off>; }).ptag, Ptag::Off);
        assert_eq!(one(quote! { struct A<ptag: first>; }).ptag, Ptag::First);
        assert_eq!(one(quote! { struct A<ptag: late>; }).ptag, Ptag::Late);
    }

    #[test]
    fn ints_accept_bounds_underscores_and_suffixes() {
        assert_eq!(one(quote! { struct A<shards: 1>; }).shards, 1);
        assert_eq!(one(quote! { struct A<shards: 4_096>; }).shards, 4096);
        assert_eq!(
            one(quote! { struct A<arena_gib: 1024usize>; }).arena_gib,
            1024
        );
        assert_eq!(one(quote! { struct A<arena_gib: 0x10>; }).arena_gib, 16);
    }

    #[test]
    fn export_values() {
        assert_eq!(one(quote! { struct A<export: none>; }).export, Export::None);
        assert_eq!(one(quote! { struct A<export: c>; }).export, Export::C);
    }

    #[test]
    fn s110_off_with_explicit_ptag() {
        let f = one(quote! { struct A<s110_meta: false, ptag: first>; });
        assert!(!f.s110_meta && f.ptag == Ptag::First);
        let f = one(quote! { struct A<s110_meta: false, ptag: off, free_fast: false>; });
        assert!(!f.s110_meta && f.ptag == Ptag::Off);
    }

    #[test]
    fn several_declarations_and_attributes() {
        let input = parse_input(quote! {
            /// Doc.
            #[allow(dead_code)]
            pub struct A<stats: true>;
            struct B;
            pub(crate) struct C<shards: 2,>;
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = input.decls.iter().map(|d| d.ident.to_string()).collect();
        assert_eq!(names, ["A", "B", "C"]);
        assert_eq!(input.decls[0].attrs.len(), 2);
        assert!(input.decls[0].flags.stats);
        assert_eq!(input.decls[1].flags, Flags::default());
        assert_eq!(input.decls[2].flags.shards, 2);
    }

    #[test]
    fn empty_invocation() {
        let input = parse_input(quote! {}).unwrap_or_else(|e| panic!("{e}"));
        assert!(input.decls.is_empty() && input.runtime.is_none());
    }

    #[test]
    fn runtime_override() {
        let input = parse_input(quote! { #![hz3_runtime = ::hz3] struct A; })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            input.runtime.map(|t| t.to_string()),
            Some(":: hz3".to_string())
        );
    }

    #[test]
    fn unknown_flag_lists_valid_flags() {
        let e = errors(quote! { struct A<s110meta: true>; });
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("unknown flag `s110meta`"), "{}", e[0]);
        assert!(e[0].contains("did you mean `s110_meta`"), "{}", e[0]);
        assert!(e[0].contains("`export`"), "{}", e[0]);
    }

    #[test]
    fn wrong_value_types() {
        let e = errors(quote! { struct A<stats: 1, shards: true, ptag: "late", export: 3>; });
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains("expected `true` or `false` for flag `stats`"));
        assert!(e[1].contains("integer literal in 1..=4096"));
        assert!(e[2].contains("`off`, `first`, `late`"));
        assert!(e[3].contains("`none`, `c`"));
    }

    #[test]
    fn bad_choice() {
        let e = errors(quote! { struct A<ptag: middle>; });
        assert_eq!(
            e,
            ["unknown `ptag` value `middle`; expected one of `off`, `first`, `late`"]
        );
    }

    #[test]
    fn out_of_range() {
        let e = errors(
            quote! { struct A<shards: 0, arena_gib: 1025, shards: 99999999999999999999999>; },
        );
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains("`shards` must be in 1..=4096, got 0"));
        assert!(e[1].contains("`arena_gib` must be in 1..=1024, got 1025"));
        assert!(e[2].contains("duplicate flag `shards`"));
        assert!(e[3].contains("`shards` must be in 1..=4096"));
    }

    #[test]
    fn duplicate() {
        let e = errors(quote! { struct A<stats: true, stats: true>; });
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("duplicate flag `stats`"));
    }

    #[test]
    fn combinations() {
        let e = errors(quote! { struct A<s110_meta: false, free_fast: true, ptag: late>; });
        assert_eq!(
            e,
            [
                "free_fast requires s110_meta: true",
                "ptag: late needs the S110 meta step to be late behind; \
                 use ptag: first or off, or s110_meta: true",
            ]
        );
        let e = errors(quote! { struct A<s110_meta: false>; });
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("s110_meta: false leaves the default ptag: late"));
    }

    #[test]
    fn missing_value() {
        let e = errors(quote! { struct A<stats: , purge: true>; });
        assert_eq!(e, ["expected a value for flag `stats`"]);
    }

    #[test]
    fn export_c_twice_in_one_invocation() {
        let e = errors(quote! { struct A<export: c>; struct B<export: c>; });
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("only one type per final binary may use export: c"));
    }

    #[test]
    fn errors_across_declarations_are_combined() {
        let e = errors(quote! { struct A<foo: 1>; struct B<stats: maybe>; });
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn syntax_errors() {
        assert!(parse_input(quote! { struct A<stats: true> }).is_err());
        assert!(parse_input(quote! { struct A<stats true>; }).is_err());
        assert!(parse_input(quote! { enum A; }).is_err());
    }
}
