// Three independent errors in one invocation (two declarations): all are reported.
hz3_runtime::hz3_allocator! {
    pub struct A<colour: blue, shards: 0>;
    pub struct B<ptag: late, s110_meta: false>;
}

fn main() {}
