hz3_runtime::hz3_allocator! {
    pub struct A<s110_meta: true, s110meta: false>;
}

fn main() {}
