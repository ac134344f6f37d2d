//! Toy pretraining corpora the tests share: a file written for the trainer, bytes for uploads.
#![allow(dead_code)]

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

/// A small deterministic English corpus for pretraining, one `{"text"}` document per line.
pub fn corpus_jsonl(docs: usize) -> Vec<u8> {
    let subj = [
        "the cat",
        "a dog",
        "the bird",
        "my friend",
        "the old man",
        "a child",
    ];
    let verb = [
        "sat on",
        "looked at",
        "ran to",
        "jumped over",
        "found",
        "liked",
    ];
    let obj = [
        "the mat",
        "a ball",
        "the tree",
        "the river",
        "a small box",
        "the red door",
    ];
    let mut x: u64 = 7;
    let mut next = |n: usize| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) as usize) % n
    };
    let mut out = String::new();
    for _ in 0..docs {
        let k = 2 + next(5);
        let text: Vec<String> = (0..k)
            .map(|_| format!("{} {} {}.", subj[next(6)], verb[next(6)], obj[next(6)]))
            .collect();
        out.push_str(&serde_json::json!({"text": text.join(" ")}).to_string());
        out.push('\n');
    }
    out.into_bytes()
}
