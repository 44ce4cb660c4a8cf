// A syntax error in one declaration does not hide the errors of the others: parsing
// resumes at the next `;` (or the next `struct`/`pub`), and every error is reported.
hz3_runtime::hz3_allocator! {
    pub struct A<shards: 0>;
    pub struct B<stats true>;
    pub struct C<ptag: first>
    pub struct D<ptag: frist>;
    pub enum E;
    pub struct F<purge: maybe>;
}

fn main() {}
