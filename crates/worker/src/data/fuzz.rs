//! Fuzzing the `labels.csv` reader (issue 16): arbitrary bytes, and rows
//! built from ids and breeds that have broken readers before (quotes, a
//! byte-order mark, CRs, paths, empty fields, non-UTF-8). Loading never
//! panics: it gives a data set whose labels index its classes, or an error
//! that says something.
//!
//! CI runs proptest's default 256 cases a test; a longer run:
//! `PROPTEST_CASES=100000 cargo test -p sweep-worker fuzz_`.

use proptest::prelude::*;

use super::{load_dataset, DataConfig, Layout};

/// A kaggle folder whose `train/` holds `a.jpg`, `b.jpg` and `c d.jpg`, and
/// `labels.csv` with `bytes`; the result of loading it.
fn load(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("train")).unwrap();
    for id in ["a", "b", "c d"] {
        std::fs::write(dir.path().join("train").join(format!("{id}.jpg")), b"").unwrap();
    }
    std::fs::write(dir.path().join("labels.csv"), bytes).unwrap();
    let config = DataConfig {
        layout: Layout::Kaggle { root: dir.path().to_owned() },
        valid_fraction: 0.1,
        split_seed: 0,
        skip_bad_images: false,
        split_method: crate::SplitMethod::Shuffle,
    };
    match load_dataset(&config) {
        Ok(data) => {
            prop_assert!(data.classes.len() >= 2);
            prop_assert!(!data.items.is_empty());
            prop_assert!(data.items.iter().all(|i| (i.label as usize) < data.classes.len()));
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(message.len() > dir.path().display().to_string().len() + 2, "{message:?}");
        }
    }
    Ok(())
}

const IDS: [&str; 14] =
    ["a", "b", "c d", " a ", "\"a\"", "\"b\"\"\"", "", "../a", "/etc/passwd", "a/b", "..", "é", "a\r", "missing"];
const BREEDS: [&str; 8] = ["pug", "beagle", "", "\"pug\"", "pug,beagle", "日本", " ", "\u{1b}[31m"];
const HEADERS: [&str; 6] = ["id,breed", "\u{feff}id,breed", "id,breed,x", "breed,id", "id", ""];

fn row() -> impl Strategy<Value = String> {
    (0..IDS.len(), 0..BREEDS.len(), prop_oneof![Just(","), Just(";"), Just(",,")])
        .prop_map(|(i, b, sep)| format!("{}{sep}{}", IDS[i], BREEDS[b]))
}

proptest! {
    #[test]
    fn fuzz_labels_csv_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        load(&bytes)?;
        let mut with_header = b"id,breed\n".to_vec();
        with_header.extend(&bytes);
        load(&with_header)?;
    }

    #[test]
    fn fuzz_labels_csv_rows_never_panic(
        header in 0..HEADERS.len(),
        rows in prop::collection::vec(row(), 0..12),
        newline in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        tail in prop_oneof![Just(""), Just("\n"), Just("\"unterminated"), Just("\u{0}"), Just("\n\n\n")],
    ) {
        let mut text = HEADERS[header].to_owned();
        for row in &rows {
            text.push_str(newline);
            text.push_str(row);
        }
        text.push_str(tail);
        load(text.as_bytes())?;
    }
}
