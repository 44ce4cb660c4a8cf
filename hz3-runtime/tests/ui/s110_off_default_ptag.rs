// `ptag` left at its default (`late`) with the S110 step switched off: the error
// points at the `false` of `s110_meta`.
hz3_runtime::hz3_allocator! {
    pub struct A<s110_meta: false>;
}

fn main() {}
