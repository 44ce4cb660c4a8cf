//! Parsing of an `hz3_allocator!` invocation.
//!
//! Owns: the invocation grammar (declarations `attrs vis struct Name<flag: value, ...>;`),
//! the flag table (names, value kinds, ranges, defaults), and every diagnostic about
//! flags: unknown flag, wrong value, out-of-range integer, duplicate flag, invalid
//! combinations. Produces typed [`Decl`]s whose [`Flags`] are known to be valid.
//!
//! Parsing happens in two steps so that all errors are reported at once:
//! [`RawInput`] is the syntax (a malformed declaration is recorded and skipped up to
//! the next `;` or `struct`, so the declarations after it are still checked; one
//! missing only its `;` is kept, so its flags are checked too), and [`validate`] turns
//! it into [`Decl`]s, combining every syntax and flag error into one [`syn::Error`].
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

/// The validated flags of one declaration. `Default` gives the scale preset's routes.
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
    /// `fine_classes`: 16-byte size classes up to 2 KiB (else four per doubling above 256 B).
    pub fine_classes: bool,
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
            fine_classes: false,
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
    ("fine_classes", Kind::Bool),
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
    /// The declaration's last token before its `;`, where a missing `;` is reported.
    pub end: Span,
}

/// A whole invocation, before validation.
pub struct RawInput {
    /// Replacement for the `::hz3_runtime` path prefix, from an optional leading
    /// `#![hz3_runtime = PATH]` (meant for a `macro_rules!` wrapper passing `$crate`).
    pub runtime: Option<TokenStream>,
    /// The declarations in order (those with a syntax error left out).
    pub decls: Vec<RawDecl>,
    /// The syntax errors of the declarations left out, each with the number of
    /// declarations parsed before it (to report every error in source order).
    pub syntax_errors: Vec<(usize, syn::Error)>,
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
        let mut syntax_errors = Vec::new();
        while !input.is_empty() {
            let start = input.cursor();
            match input.parse::<RawDecl>() {
                Ok(decl) => {
                    if input.peek(Token![;]) {
                        input.parse::<Token![;]>()?;
                    } else {
                        // Only the `;` is missing: the declaration is whole, so its
                        // flags are still checked (the error comes after theirs).
                        syntax_errors.push((
                            decls.len() + 1,
                            syn::Error::new(
                                decl.end,
                                "expected `;` after this declaration \
                                 (`vis struct Name<flag: value, ...>;`)",
                            ),
                        ));
                        skip_to_next_declaration(input, start);
                    }
                    decls.push(decl);
                }
                Err(e) => {
                    syntax_errors.push((decls.len(), e));
                    skip_to_next_declaration(input, start);
                }
            }
        }
        Ok(RawInput {
            runtime,
            decls,
            syntax_errors,
        })
    }
}

/// Error recovery after a malformed declaration: skips the rest of it, so that the
/// declarations after it are still parsed and their errors reported too.
///
/// Stops after the next top-level `;`, or before a `struct`, `pub` or `#` that can
/// start the next declaration (the usual mistake is a missing `;`). Always moves
/// past at least one token when the failed parse consumed none, so it cannot loop.
fn skip_to_next_declaration(input: ParseStream, start: syn::buffer::Cursor) {
    let mut moved = input.cursor() != start;
    while !input.is_empty() {
        if input.peek(Token![;]) {
            let _ = input.parse::<Token![;]>();
            return;
        }
        let starts_decl =
            input.peek(Token![struct]) || input.peek(Token![pub]) || input.peek(Token![#]);
        if moved && starts_decl {
            return;
        }
        if input.parse::<TokenTree>().is_err() {
            return;
        }
        moved = true;
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

/// Parses one declaration up to, not including, its `;` (which [`RawInput`] checks).
impl Parse for RawDecl {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        if !input.peek(Token![struct]) {
            return Err(input.error(
                "expected `struct`: each declaration is `vis struct Name<flag: value, ...>;`",
            ));
        }
        input.parse::<Token![struct]>()?;
        let ident: Ident = input.parse()?;
        let mut end = ident.span();
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
            end = input.parse::<Token![>]>()?.span;
            Some(flags)
        } else {
            None
        };
        Ok(RawDecl {
            attrs,
            vis,
            ident,
            flags,
            end,
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
        (Kind::Bool, value) => {
            let hint = match value {
                Value::Ident(id) => did_you_mean(&id.to_string(), &["true", "false"]),
                _ => String::new(),
            };
            errs.spanned(
                tokens,
                format!("expected `true` or `false` for flag `{name}`{hint}"),
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
                        "unknown `{name}` value `{id}`{}; expected one of {}",
                        did_you_mean(&id.to_string(), choices),
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

/// Edit distance between two words, ignoring case: insertions, deletions,
/// substitutions and swaps of two neighbouring letters (`frist` → `first`) each cost 1.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // d[i][j]: distance between the first i letters of a and the first j of b.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let sub = d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = sub.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word`, when it is close enough to be a likely typo: at
/// most one edit per three letters of the longer word (`of` → `off`, `s110meta` →
/// `s110_meta`, but not `x` → `c`). Ties go to the earlier candidate.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for &c in candidates {
        let d = distance(word, c);
        let longer = word.chars().count().max(c.chars().count());
        if 3 * d <= longer && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// ` (did you mean `x`?)` for the closest candidate, or nothing.
fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn unknown_flag_message(name: &str) -> String {
    let names: Vec<&str> = FLAG_TABLE.iter().map(|(n, _)| *n).collect();
    format!(
        "unknown flag `{name}`{}; valid flags are {}",
        did_you_mean(name, &names),
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
            ("fine_classes", Parsed::Bool(b)) => flags.fine_classes = b,
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
    check_combinations(&flags, &given, &seen, errs);
    (flags, given)
}

/// Errors for flag values that are valid one by one but not together. `written` holds
/// every known flag name the declaration wrote, its value valid or not: a check about
/// a flag left at its default stays silent when the flag was written with a bad value
/// (that value already has its own error).
fn check_combinations(flags: &Flags, given: &Given, written: &[String], errs: &mut Errors) {
    let was_written = |name: &str| written.iter().any(|w| w == name);
    if flags.free_fast && !flags.s110_meta {
        if let Some(span) = given.free_fast {
            errs.at(span, "free_fast requires s110_meta: true");
        }
    }
    if flags.ptag == Ptag::Late && !flags.s110_meta {
        match (given.ptag, given.s110_meta) {
            (Some(span), _) => errs.at(
                span,
                "ptag: late puts the tag map after the page-meta step, which needs s110_meta: true; \
                 use ptag: first or off, or s110_meta: true",
            ),
            (None, Some(span)) if !was_written("ptag") => errs.at(
                span,
                "s110_meta: false leaves the default ptag: late without the page-meta step it comes \
                 after; add ptag: first or ptag: off",
            ),
            _ => {}
        }
    }
}

/// Validates a parsed invocation, reporting every flag error at once.
pub fn validate(raw: RawInput) -> syn::Result<Input> {
    let mut errs = Errors::default();
    let mut syntax_errors = raw.syntax_errors.into_iter().peekable();
    let mut decls = Vec::with_capacity(raw.decls.len());
    let mut first_export: Option<String> = None;
    for (index, d) in raw.decls.into_iter().enumerate() {
        while let Some((_, e)) = syntax_errors.next_if(|(before, _)| *before <= index) {
            errs.push(e);
        }
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
    for (_, e) in syntax_errors {
        errs.push(e);
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
                harden: true, shards: 4096, arena_gib: 1, purge: false, fine_classes: true, export: c,
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
                fine_classes: true,
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
                "ptag: late puts the tag map after the page-meta step, which needs s110_meta: true; \
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
    #[test]
    fn misspelt_value_has_one_error_and_a_suggestion() {
        // `ptag` was written (with a typo): no error about "the default ptag".
        let e = errors(quote! { struct A<s110_meta: false, ptag: frist>; });
        assert_eq!(
            e,
            ["unknown `ptag` value `frist` (did you mean `first`?); \
              expected one of `off`, `first`, `late`"]
        );
        // A typo in `s110_meta`'s value leaves it at its default: no combination error.
        let e = errors(quote! { struct A<s110_meta: flase, ptag: late>; });
        assert_eq!(
            e,
            ["expected `true` or `false` for flag `s110_meta` (did you mean `false`?)"]
        );
    }

    #[test]
    fn value_suggestions() {
        let e = errors(quote! { struct A<stats: ture, ptag: Late, export: C, purge: yes>; });
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].ends_with("(did you mean `true`?)"), "{}", e[0]);
        assert!(e[1].contains("(did you mean `late`?)"), "{}", e[1]);
        assert!(e[2].contains("(did you mean `c`?)"), "{}", e[2]);
        assert!(!e[3].contains("did you mean"), "{}", e[3]);
        // Too far from every value to be a typo.
        let e = errors(quote! { struct A<export: x, ptag: middle>; });
        assert!(e.iter().all(|m| !m.contains("did you mean")), "{e:?}");
    }

    #[test]
    fn flag_name_suggestions() {
        let hint = |name: &str| {
            let names: Vec<&str> = FLAG_TABLE.iter().map(|(n, _)| *n).collect();
            closest(name, &names)
        };
        assert_eq!(hint("ptags"), Some("ptag"));
        assert_eq!(hint("freefast"), Some("free_fast"));
        assert_eq!(hint("fail_fast"), Some("failfast"));
        assert_eq!(hint("Stats"), Some("stats"));
        assert_eq!(hint("arena_gb"), Some("arena_gib"));
        assert_eq!(hint("colour"), None);
        assert_eq!(hint("x"), None);
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("first", "first"), 0);
        assert_eq!(distance("frist", "first"), 1);
        assert_eq!(distance("FIRST", "first"), 0);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "off"), 3);
        assert_eq!(distance("of", "off"), 1);
    }

    #[test]
    fn syntax_error_does_not_hide_other_declarations() {
        // A malformed flag, a missing `;`, a wrong keyword: each declaration is
        // checked, and the errors come in source order.
        let e = errors(quote! {
            struct A<colour: 1>;
            struct B<stats true>;
            struct C<ptag: frist>
            pub struct D<shards: 0>;
            enum E;
            struct F<purge: maybe>;
        });
        assert_eq!(e.len(), 7, "{e:?}");
        assert!(e[0].starts_with("unknown flag `colour`"), "{}", e[0]);
        assert!(
            e[1].contains("expected `:` after flag name `stats`"),
            "{}",
            e[1]
        );
        // C misses only its `;`: its flags are still checked.
        assert!(
            e[2].contains("value `frist` (did you mean `first`?)"),
            "{}",
            e[2]
        );
        assert!(
            e[3].starts_with("expected `;` after this declaration"),
            "{}",
            e[3]
        );
        assert!(e[4].contains("`shards` must be in 1..=4096"), "{}", e[4]);
        assert!(e[5].contains("expected `struct`"), "{}", e[5]);
        assert!(e[6].contains("for flag `purge`"), "{}", e[6]);
    }

    #[test]
    fn syntax_error_alone_is_still_an_error() {
        let e = errors(quote! { struct A<stats true>; struct B; });
        assert_eq!(e.len(), 1, "{e:?}");
        let e = errors(quote! { pub pub struct A; });
        assert_eq!(e.len(), 1, "{e:?}");
        // A declaration missing only its `;` is reported, and not expanded.
        let e = errors(quote! { struct A<stats: true> struct B; });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("expected `;`"), "{}", e[0]);
        assert!(parse_input(quote! { struct A }).is_err());
    }
}
