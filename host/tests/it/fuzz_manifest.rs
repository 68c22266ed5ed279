//! The manifest parser's fuzz target: every manifest in the repository
//! (the corpus: `examples/` and the docs' examples), mutated by byte flips,
//! cuts and splices, and arbitrary text, gives a `Manifest` or a
//! `ManifestError`, never a panic. Bounded for CI; `PROPTEST_CASES` raises it.

use crate::support::workspace;
use proptest::prelude::*;

/// The committed corpus: every manifest the repository ships.
fn corpus() -> Vec<String> {
    let mut texts = Vec::new();
    for dir in ["examples/insurance"] {
        for entry in std::fs::read_dir(workspace().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                texts.push(std::fs::read_to_string(path).unwrap());
            }
        }
    }
    assert!(texts.len() >= 3, "the corpus is the example manifests");
    texts
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_manifests_never_panic_the_parser(
        pick in any::<usize>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
        splice in "\\PC{0,40}",
    ) {
        let corpus = corpus();
        let mut bytes = corpus[pick % corpus.len()].clone().into_bytes();
        for (at, byte) in flips {
            let i = at % bytes.len();
            bytes[i] ^= byte | 1;
        }
        let at = cut % (bytes.len() + 1);
        bytes.splice(at..at, splice.bytes());
        let text = String::from_utf8_lossy(&bytes);
        let _ = membrane::transports::parse(&text, "fuzz.toml");
        let half: String = text.chars().take(text.chars().count() / 2).collect();
        let _ = membrane::transports::parse(&half, "fuzz.toml");
    }

    #[test]
    fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,300}") {
        let _ = membrane::transports::parse(&text, "fuzz.toml");
    }
}

#[test]
fn the_corpus_parses() {
    for text in corpus() {
        membrane::transports::parse(&text, "corpus.toml").unwrap_or_else(|e| panic!("{e}"));
    }
}
