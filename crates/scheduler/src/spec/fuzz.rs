//! Fuzzing the sweep-file parser (issue 16): arbitrary text, and real sweep
//! files mutated token by token, in TOML and JSON. `SweepSpec::parse` never
//! panics and never fails without saying why: it returns a spec (which then
//! expands, or is refused, without panicking) or at least one message.
//!
//! CI runs proptest's default 256 cases a test; a longer run:
//! `PROPTEST_CASES=100000 cargo test -p sweep-scheduler fuzz_`.

use std::path::Path;

use proptest::prelude::*;

use super::{Format, SweepSpec, DEFAULT_MAX_JOBS};

/// The sweep files the mutations start from: the shipped ones and a JSON one.
const SEEDS: [&str; 5] = [
    include_str!("../../../../sweeps/demo.toml"),
    include_str!("../../../../sweeps/grid-example.toml"),
    include_str!("../../../../sweeps/seed-table.toml"),
    include_str!("../../tests/fixtures/golden-ids/every-key.toml"),
    include_str!("../../tests/fixtures/golden-ids/configs.json"),
];

/// Pieces a mutation inserts: the syntax of both formats, edge values, and
/// text that has broken parsers before (deep nesting, huge numbers, control
/// characters, a byte-order mark).
const TOKENS: [&str; 40] = [
    "[",
    "]",
    "{",
    "}",
    "[[",
    "]]",
    "=",
    ",",
    ":",
    "\"",
    "'",
    "\"\"\"",
    "\n",
    "#",
    ".",
    "-",
    "+",
    "0",
    "1e309",
    "-0.0",
    "nan",
    "inf",
    "true",
    "null",
    "99999999999999999999999",
    "-9223372036854775808",
    "[grid]",
    "[[configs]]",
    "[data]",
    "layout = \"kaggle\"",
    "lr = []",
    "\u{feff}",
    "\u{1b}[31m",
    "\r",
    "\0",
    "\\u0000",
    "é",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "{\"a\":{\"a\":{\"a\":{\"a\":",
    "\t",
];

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, usize),
    Delete(usize, usize),
    Replace(usize, usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Edit::Replace(at, t)),
        (any::<usize>(), 1usize..200).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ]
}

/// `seed` with `edits` applied, on character boundaries.
fn mutate(seed: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for edit in edits {
        let len = chars.len();
        let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
        match *edit {
            Edit::Insert(i, t) => {
                let i = at(i);
                chars.splice(i..i, TOKENS[t].chars());
            }
            Edit::Delete(i, n) => {
                let i = at(i);
                chars.drain(i..(i + n).min(len));
            }
            Edit::Replace(i, t) => {
                let i = at(i);
                let end = (i + 1).min(len);
                chars.splice(i..end, TOKENS[t].chars());
            }
            Edit::Duplicate(i, n) => {
                let i = at(i);
                let piece: Vec<char> = chars[i..(i + n).min(len)].to_vec();
                chars.splice(i..i, piece);
            }
        }
    }
    chars.into_iter().collect()
}

/// Parses `src`; a spec must expand (or be refused) without panicking, an
/// error must say something.
fn parses_or_says_why(src: &str, format: Format) -> Result<(), TestCaseError> {
    match SweepSpec::parse(src, format, Path::new("fuzz.toml"), Path::new("/nonexistent")) {
        Ok(spec) => {
            let _ = spec.id();
            if let Ok(jobs) = spec.jobs(DEFAULT_MAX_JOBS) {
                prop_assert!(!jobs.is_empty());
            }
        }
        Err(errors) => {
            prop_assert!(!errors.0.is_empty(), "no message for {src:?}");
            for e in &errors.0 {
                prop_assert!(!e.message.trim().is_empty(), "an empty message for {src:?}");
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn fuzz_arbitrary_text_never_panics(src in any::<String>(), json in any::<bool>()) {
        parses_or_says_why(&src, if json { Format::Json } else { Format::Toml })?;
    }

    #[test]
    fn fuzz_sweep_shaped_text_never_panics(
        src in r#"(name|\[data\]|\[model\]|\[train\]|\[grid\]|\[\[configs\]\]|layout|root|lr|weights|folds|= |"[a-z]*"|[0-9.e+-]{1,12}|\[|\]|,|\n|\{|\}| ){0,60}"#,
        json in any::<bool>(),
    ) {
        parses_or_says_why(&src, if json { Format::Json } else { Format::Toml })?;
    }

    #[test]
    fn fuzz_mutated_sweep_files_never_panic(seed in 0..SEEDS.len(), edits in prop::collection::vec(edit(), 1..8)) {
        let src = mutate(SEEDS[seed], &edits);
        let format = if SEEDS[seed].trim_start().starts_with('{') { Format::Json } else { Format::Toml };
        parses_or_says_why(&src, format)?;
        // The other format too: text of one is garbage to the other.
        let other = if format == Format::Json { Format::Toml } else { Format::Json };
        parses_or_says_why(&src, other)?;
    }
}

/// Nesting deep enough to overflow a recursive parser's stack is an error,
/// not a crash.
#[test]
fn fuzz_deep_nesting_is_an_error() {
    for depth in [1_000, 100_000] {
        let toml = format!("name = \"t\"\nx = {}{}\n", "[".repeat(depth), "]".repeat(depth));
        parses_or_says_why(&toml, Format::Toml).unwrap();
        let json = format!("{{\"name\": \"t\", \"x\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
        parses_or_says_why(&json, Format::Json).unwrap();
    }
}
