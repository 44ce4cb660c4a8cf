//! The Rust twin of `tests/preload/pair_loop.c`: ns per malloc/free pair of one
//! thread with the scale preset as `#[global_allocator]`, to compare the
//! in-process path with the same engine under `LD_PRELOAD`.
//!
//! `cargo run --release --example pair_loop -- [pairs=50000000] [size=32]`
use std::alloc::{alloc, dealloc, Layout};
use std::time::Instant;

#[global_allocator]
static GLOBAL: hz3_presets::Scale = hz3_presets::Scale::new();

fn pairs(n: u64, layout: Layout) {
    for i in 0..n {
        // SAFETY: the layout has a non-zero size; the block is freed right away
        // with the same layout.
        unsafe {
            let p = alloc(layout);
            if p.is_null() {
                std::process::exit(1);
            }
            p.write_volatile(i as u8);
            dealloc(p, layout);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000_000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let layout = Layout::from_size_align(size.max(1), 16).expect("valid layout");
    pairs(100_000, layout); // warm the thread cache, as the C loop does
    let t = Instant::now();
    pairs(n, layout);
    let ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    println!("pair_loop (rust, global_allocator): size={size} pairs={n} ns_per_pair={ns:.2}");
}
