hz3_runtime::hz3_allocator! {
    pub struct A<s110_meta: false, ptag: late>;
}

fn main() {}
