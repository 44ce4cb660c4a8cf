//! hz3's scale preset as the process allocator.
//!
//! Every `Box`, `Vec`, `String` and `HashMap` below comes from `hz3_presets::Scale`.
//! The program generates a pseudo-random text (words built from syllables), counts
//! word frequencies with several threads (each its own map, merged at the end; the
//! strings are freed by a different thread than the one that allocated them), sorts
//! the result and prints a summary. Scale has `stats: true`, so the engine prints its
//! counter line on stderr at exit.
//!
//! Run: `cargo run --release --example global_allocator [words] [threads]`

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

#[global_allocator]
static GLOBAL: hz3_presets::Scale = hz3_presets::Scale::new();

const SYLLABLES: [&str; 24] = [
    "ka", "to", "ri", "mu", "se", "no", "ha", "ve", "li", "qua", "zo", "pe", "gri", "shu", "an",
    "el", "or", "ti", "bo", "ne", "ya", "fu", "dri", "cos",
];

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// A chunk of text: `words` words separated by spaces, a Zipf-ish vocabulary.
fn generate_chunk(seed: u64, words: usize) -> String {
    let mut rng = Lcg(seed);
    let mut text = String::new();
    for _ in 0..words {
        // Short words are far more frequent than long ones.
        let syllables = 1 + (rng.next() % 4).min(rng.next() % 4) as usize;
        for _ in 0..syllables {
            let r = rng.next() as usize;
            // Skew towards the first syllables.
            let i = (r % SYLLABLES.len()).min((r >> 8) % SYLLABLES.len());
            text.push_str(SYLLABLES[i]);
        }
        text.push(' ');
    }
    text
}

fn count_words(text: &str) -> HashMap<String, u64> {
    let mut map = HashMap::new();
    for w in text.split_ascii_whitespace() {
        *map.entry(w.to_string()).or_insert(0) += 1;
    }
    map
}

fn main() {
    let mut args = std::env::args().skip(1);
    let total_words: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4).max(1);
    let per_thread = total_words / threads;
    let t0 = Instant::now();

    // Workers generate and count their chunk, then ship the map to the merger
    // thread: the map's strings are freed there (cross-thread frees).
    let (tx, rx) = mpsc::channel::<HashMap<String, u64>>();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let text = generate_chunk(0x5EED + t as u64, per_thread);
                let map = count_words(&text);
                tx.send(map).unwrap();
            })
        })
        .collect();
    drop(tx);
    let merger = thread::spawn(move || {
        let mut all: HashMap<String, u64> = HashMap::new();
        for map in rx {
            for (w, n) in map {
                *all.entry(w).or_insert(0) += n;
            }
        }
        all
    });
    for w in workers {
        w.join().unwrap();
    }
    let all = merger.join().unwrap();

    let mut ranked: Vec<(String, u64)> = all.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let counted: u64 = ranked.iter().map(|(_, n)| n).sum();
    assert_eq!(
        counted as usize,
        per_thread * threads,
        "every generated word is counted once"
    );

    println!(
        "{} words in {} threads: {} distinct, counted in {:.1} ms",
        counted,
        threads,
        ranked.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    println!("top 10:");
    for (w, n) in ranked.iter().take(10) {
        println!(
            "  {w:<16} {n:>9}  ({:.2}%)",
            *n as f64 * 100.0 / counted as f64
        );
    }
    let longest = ranked.iter().map(|(w, _)| w.len()).max().unwrap_or(0);
    let singletons = ranked.iter().filter(|(_, n)| *n == 1).count();
    println!("longest word: {longest} bytes; words seen once: {singletons}");
}
