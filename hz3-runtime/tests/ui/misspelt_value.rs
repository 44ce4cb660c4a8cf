// A misspelt value gets a suggestion, and only its own error: `ptag` was written, so
// nothing is said about the default `ptag: late` with `s110_meta: false`.
hz3_runtime::hz3_allocator! {
    pub struct A<s110_meta: false, ptag: frist>;
}

fn main() {}
