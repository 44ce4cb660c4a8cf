// Flag names close to a valid one get a "did you mean"; `colour` is close to none.
hz3_runtime::hz3_allocator! {
    pub struct A<ptags: first, freefast: false, colour: blue>;
}

fn main() {}
