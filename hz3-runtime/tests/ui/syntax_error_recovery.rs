// A syntax error in one declaration does not hide the errors of the others: parsing
// resumes at the next `;` (or the next `struct`/`pub`), and every error is reported.
// `C` misses only its `;`, so its flags are checked too.
hz3_runtime::hz3_allocator! {
    pub struct A<shards: 0>;
    pub struct B<stats true>;
    pub struct C<ptag: frist>
    pub struct D<stat: true>;
    pub enum E;
    pub struct F<purge: maybe>;
}

fn main() {}
