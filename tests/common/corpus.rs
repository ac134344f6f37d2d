//! A toy pretraining corpus the trainer tests share.

use std::path::Path;

/// A deterministic toy corpus: short sentences from a small grammar.
pub fn write_corpus(path: &Path, docs: usize) {
    let names = ["Tom", "Mia", "the cat", "a dog", "Sam", "the bird"];
    let verbs = ["saw", "liked", "found", "chased", "helped"];
    let things = [
        "a ball",
        "the tree",
        "a red box",
        "the sun",
        "a small boat",
        "the river",
    ];
    let mut out = String::new();
    for i in 0..docs {
        let mut text = String::new();
        for j in 0..4 {
            let k = i * 7 + j * 3;
            text += &format!(
                "{} {} {}. ",
                names[k % names.len()],
                verbs[(k / 2) % verbs.len()],
                things[(k / 3) % things.len()]
            );
        }
        out += &serde_json::json!({ "text": text.trim() }).to_string();
        out += "\n";
    }
    std::fs::write(path, out).unwrap();
}
