hz3_runtime::hz3_allocator! {
    pub struct A<stats: true, ptag: first, stats: false>;
}

fn main() {}
