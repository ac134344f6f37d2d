//! Writes `examples/data/tiny-stories.jsonl`, the small English corpus of the first-run example:
//! short children's stories from a fixed grammar, generated deterministically (no download, no
//! randomness beyond a seeded LCG), so the file in the repository can always be rebuilt exactly.
//!
//! `cargo run --example make_corpus [N_STORIES]` (default 1200, about 300 KB).

use std::fmt::Write;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.next() % xs.len()]
    }
}

const NAMES: &[&str] = &[
    "Tom", "Mia", "Lily", "Ben", "Sam", "Anna", "Max", "Zoe", "Leo", "Ella", "Jack", "Rosa",
];
const ANIMALS: &[&str] = &[
    "cat", "dog", "bird", "rabbit", "fox", "duck", "frog", "horse", "mouse", "bear",
];
const PLACES: &[&str] = &[
    "park", "garden", "forest", "beach", "river", "farm", "hill", "lake", "town", "field",
];
const THINGS: &[&str] = &[
    "ball", "kite", "box", "hat", "book", "boat", "cake", "flower", "stone", "apple", "drum",
];
const COLOURS: &[&str] = &[
    "red", "blue", "green", "yellow", "big", "small", "shiny", "old", "soft", "little",
];
const FEELINGS: &[&str] = &[
    "happy",
    "sad",
    "scared",
    "proud",
    "tired",
    "excited",
    "surprised",
    "calm",
];
const WEATHER: &[&str] = &["sunny", "rainy", "windy", "cold", "warm", "quiet", "bright"];
const VERBS: &[&str] = &[
    "found", "lost", "saw", "wanted", "made", "carried", "shared", "painted",
];

fn story(r: &mut Lcg) -> String {
    let hero = r.pick(NAMES);
    let friend = r.pick(NAMES);
    let animal = r.pick(ANIMALS);
    let place = r.pick(PLACES);
    let thing = r.pick(THINGS);
    let colour = r.pick(COLOURS);
    let mut s = String::new();
    let _ = write!(
        s,
        "One {} day, {hero} went to the {place}. ",
        r.pick(WEATHER)
    );
    let _ = write!(
        s,
        "{hero} {} a {colour} {thing} near a {animal}. ",
        r.pick(VERBS)
    );
    match r.next() % 4 {
        0 => {
            let _ = write!(s, "The {animal} was {}. ", r.pick(FEELINGS));
            let _ = write!(
                s,
                "{hero} said, \"Do not be afraid, little {animal}. I will help you.\" "
            );
            let _ = write!(s, "They played with the {thing} until the sun went down. ");
        }
        1 => {
            let _ = write!(s, "{friend} came to the {place} too. ");
            let _ = write!(s, "\"Can I play with your {thing}?\" asked {friend}. ");
            let _ = write!(
                s,
                "{hero} shared the {thing}, and both of them felt {}. ",
                r.pick(FEELINGS)
            );
        }
        2 => {
            let _ = write!(s, "Then the {thing} rolled into the {}. ", r.pick(PLACES));
            let _ = write!(
                s,
                "{hero} looked and looked. The {animal} found it under a tree. "
            );
            let _ = write!(s, "{hero} gave the {animal} a hug and said thank you. ");
        }
        _ => {
            let _ = write!(
                s,
                "It started to rain, so {hero} ran home with the {thing}. "
            );
            let _ = write!(
                s,
                "Mom made warm soup, and {hero} told her about the {animal}. "
            );
            let _ = write!(
                s,
                "That night {hero} dreamed of the {colour} {thing} and the {place}. "
            );
        }
    }
    let _ = write!(s, "The end.");
    s
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1200);
    let mut r = Lcg(2026);
    let mut out = String::new();
    for _ in 0..n {
        out += &serde_json::json!({ "text": story(&mut r) }).to_string();
        out.push('\n');
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/tiny-stories.jsonl");
    std::fs::write(&path, out).expect("write corpus");
    println!("wrote {n} stories to {}", path.display());
}
