hz3_runtime::hz3_allocator! {
    pub struct A<export: c>;
    pub struct B<export: c>;
}

fn main() {}
