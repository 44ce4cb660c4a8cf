// Values close to a valid one get a "did you mean"; values far from all get none.
hz3_runtime::hz3_allocator! {
    pub struct A<stats: ture, export: C, purge: yes>;
}

fn main() {}
