hz3_runtime::hz3_allocator! {
    pub struct A<shards: 4097>;
}

fn main() {}
