hz3_runtime::hz3_allocator! {
    pub struct A<ptag: middle>;
}

fn main() {}
