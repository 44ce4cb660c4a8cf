hz3_runtime::hz3_allocator! {
    pub struct A<s110_meta: false, free_fast: true, ptag: first>;
}

fn main() {}
