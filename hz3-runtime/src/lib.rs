//! hz3 engine (TEMPORARY SKELETON: the contract is final, the bodies are not).
#![no_std]
pub use hz3_macros::hz3_allocator;

mod config;
pub mod stats;
pub use config::{Config, Ptag};
pub use stats::StatsSnapshot;

/// Per-type engine state; the macro emits one `static` of it per generated type.
pub struct State<C: Config> {
    _c: core::marker::PhantomData<C>,
}
// SAFETY: placeholder holds no data.
unsafe impl<C: Config> Sync for State<C> {}
impl<C: Config> State<C> {
    /// The initial (all-zero, nothing mapped) state.
    pub const fn new() -> Self {
        State { _c: core::marker::PhantomData }
    }
}

/// Entry points used by the code that `hz3_allocator!` generates. Not a stable API.
#[doc(hidden)]
pub mod __private {
    use crate::{Config, StatsSnapshot};
    pub use crate::State;
    pub unsafe fn alloc<C: Config>(size: usize, align: usize) -> *mut u8 {
        let mut p = core::ptr::null_mut();
        if libc::posix_memalign(&mut p, align.max(16), size.max(1)) != 0 { return core::ptr::null_mut(); }
        p as *mut u8
    }
    pub unsafe fn alloc_zeroed<C: Config>(size: usize, align: usize) -> *mut u8 {
        let p = alloc::<C>(size, align);
        if !p.is_null() { core::ptr::write_bytes(p, 0, size); }
        p
    }
    pub unsafe fn dealloc<C: Config>(ptr: *mut u8, _size: usize, _align: usize) { libc::free(ptr as *mut _) }
    pub unsafe fn free<C: Config>(ptr: *mut u8) { libc::free(ptr as *mut _) }
    pub unsafe fn realloc<C: Config>(ptr: *mut u8, old: usize, align: usize, new: usize) -> *mut u8 {
        let q = alloc::<C>(new, align);
        if !q.is_null() { core::ptr::copy_nonoverlapping(ptr, q, old.min(new)); free::<C>(ptr); }
        q
    }
    /// Usable size of a block this type owns; `None` when the pointer is not ours.
    pub unsafe fn usable_size<C: Config>(ptr: *const u8) -> Option<usize> { Some(libc::malloc_usable_size(ptr as *mut _)) }
    pub fn stats<C: Config>() -> StatsSnapshot { StatsSnapshot::default() }
}
