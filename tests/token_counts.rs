//! The gateway's exact token counts for OpenAI encodings ([`TokenCounter`], GitHub's
//! linear-time BPE) against tiktoken-rs, the reference implementation of OpenAI's tiktoken:
//! equal on the committed corpus (`tests/data/tokens/`), on every line of it, and on random
//! strings built from the characters pre-tokenization treats differently.

use credentialflow::ai::TokenCounter;
use tiktoken_rs::CoreBPE;

/// The corpus files, each read whole.
const CORPUS: &[&str] = &[
    "english.txt",
    "code.rs.txt",
    "json.json",
    "cjk.txt",
    "emoji.txt",
    "repeated_runs.txt",
    "random_bytes.txt",
    "random_code_points.txt",
];

fn corpus(name: &str) -> String {
    let path = format!("{}/tests/data/tokens/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The gateway's counters beside tiktoken's encoder for the same encoding.
fn encodings() -> [(TokenCounter, &'static CoreBPE); 2] {
    [
        (TokenCounter::O200kBase, tiktoken_rs::o200k_base_singleton()),
        (
            TokenCounter::Cl100kBase,
            tiktoken_rs::cl100k_base_singleton(),
        ),
    ]
}

#[track_caller]
fn assert_same_count(counter: TokenCounter, oracle: &CoreBPE, text: &str, what: &str) {
    let expected = oracle.encode_ordinary(text).len() as u64;
    assert_eq!(
        counter.count(text),
        expected,
        "{counter:?} on {what}: {:?}",
        text.chars().take(80).collect::<String>()
    );
}

#[test]
fn corpus_files_count_as_tiktoken_counts_them() {
    for (counter, oracle) in encodings() {
        for name in CORPUS {
            let text = corpus(name);
            assert!(!text.is_empty(), "{name} is empty");
            assert_same_count(counter, oracle, &text, name);
        }
    }
}

#[test]
fn every_corpus_line_and_its_prefixes_count_as_tiktoken_counts_them() {
    // Cutting the text at line ends and at arbitrary characters moves the pre-token
    // boundaries (trailing whitespace, a run cut short), where look-ahead emulation differs
    // from a real look-ahead if anywhere.
    for (counter, oracle) in encodings() {
        for name in CORPUS {
            let text = corpus(name);
            for (i, line) in text.split_inclusive('\n').enumerate() {
                assert_same_count(counter, oracle, line, &format!("{name} line {i}"));
            }
            let cuts = text.char_indices().map(|(i, _)| i).step_by(97);
            for cut in cuts {
                assert_same_count(counter, oracle, &text[..cut], &format!("{name}[..{cut}]"));
            }
        }
    }
}

/// Pieces random strings are built from: every class the OpenAI pre-tokenizing patterns
/// tell apart (letters in each case, contractions, digits, punctuation, each kind of
/// whitespace and line end, marks, CJK, emoji with joiners and modifiers, astral letters).
const PIECES: &[&str] = &[
    "a",
    "Z",
    "hello",
    "World",
    "HTTP",
    "camelCase",
    "é",
    "É",
    "ß",
    "ǅ",
    "ʰ",
    "'s",
    "'T",
    "'re",
    "'LL",
    "'d",
    "'",
    "0",
    "7",
    "42",
    "12345",
    "٣",
    "½",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}",
    "!",
    "?",
    ".",
    "...",
    "/",
    "//",
    "{",
    "}\n",
    "\"",
    "-",
    "_",
    "@",
    "#",
    "$",
    "\u{301}",
    "\u{308}",
    "中",
    "文字",
    "ひら",
    "カ",
    "한",
    "😀",
    "👍🏽",
    "👩\u{200d}👩\u{200d}👧",
    "🇫🇷",
    "\u{200b}",
    "\u{feff}",
    "𝔘",
    "𓀀",
    "\u{e000}",
    "ع",
    "ש",
];

/// xorshift64*: a fixed-seed generator, so a failure names a reproducible string.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random string of up to `max_pieces` pieces; a piece is sometimes repeated into a run.
fn random_text(rng: &mut Rng, max_pieces: usize) -> String {
    let mut text = String::new();
    for _ in 0..rng.below(max_pieces + 1) {
        let piece = PIECES[rng.below(PIECES.len())];
        let repeat = if rng.below(8) == 0 {
            1 + rng.below(40)
        } else {
            1
        };
        for _ in 0..repeat {
            text.push_str(piece);
        }
    }
    text
}

#[test]
fn random_strings_count_as_tiktoken_counts_them() {
    let mut rng = Rng(0x5eed_2121_c0ff_ee00);
    for (counter, oracle) in encodings() {
        for case in 0..3_000 {
            let text = random_text(&mut rng, 24);
            assert_same_count(counter, oracle, &text, &format!("random case {case}"));
        }
    }
}

#[test]
fn random_unicode_scalars_count_as_tiktoken_counts_them() {
    // Arbitrary scalar values, not only the curated pieces: unassigned and private-use code
    // points, controls, every plane.
    let mut rng = Rng(0x0ddb_a11c_afe5_0021);
    for (counter, oracle) in encodings() {
        for case in 0..1_000 {
            let len = rng.below(64);
            let text: String = (0..len)
                .map(|_| {
                    let scalar = match rng.below(4) {
                        0 => 0x20 + rng.below(0x5f) as u32,
                        1 => rng.below(0x80) as u32,
                        2 => rng.below(0x1_0000) as u32,
                        _ => rng.below(0x11_0000) as u32,
                    };
                    char::from_u32(scalar).unwrap_or('\u{fffd}')
                })
                .collect();
            assert_same_count(counter, oracle, &text, &format!("scalar case {case}"));
        }
    }
}
