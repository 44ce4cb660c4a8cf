hz3_runtime::hz3_allocator! {
    pub struct A<stats: 1>;
}

fn main() {}
