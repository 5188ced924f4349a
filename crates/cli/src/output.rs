//! Tables printed in the four output formats, and how strings from files
//! and databases reach a terminal ([`printable`], [`printable_lines`]).

use std::borrow::Cow;
use std::fmt::Write;

use crate::args::Format;

/// Whether `c` must not reach a terminal as it is: the C0 controls (ESC
/// starts the sequences that recolour, move the cursor, retitle the window or
/// write the clipboard; CR rewrites a line; BEL rings), DEL, the C1 controls
/// (U+0080-U+009F, which some terminals read as ESC sequences), and the
/// bidirectional overrides that make text read other than it is stored.
fn is_hostile(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_hostile(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_hostile(c) && !keep(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A string from a file or a database (a name, an id, a path, an error) as
/// one line for a terminal: every control character written as Rust writes
/// it in a string, `\u{1b}`, line breaks and tabs included. The data itself
/// is never changed: JSON and CSV carry it exactly.
pub fn printable(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// [`printable`] for text of several lines (an error listing bad images):
/// line breaks and tabs are kept, every other control character escaped.
pub fn printable_lines(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n' || c == '\t')
}

/// One value of a table: how people read it and what JSON carries.
#[derive(Debug, Clone)]
pub struct Cell {
    pub text: String,
    pub json: serde_json::Value,
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Cell {
        let s = s.into();
        Cell { json: serde_json::Value::String(s.clone()), text: s }
    }

    pub fn int(i: i64) -> Cell {
        Cell { text: i.to_string(), json: i.into() }
    }

    pub fn float(x: f64, text: String) -> Cell {
        Cell { text, json: serde_json::json!(x) }
    }

    pub fn opt_float(x: Option<f64>, fmt: impl Fn(f64) -> String) -> Cell {
        match x {
            Some(x) => Cell::float(x, fmt(x)),
            None => Cell::none(),
        }
    }

    pub fn opt_int(i: Option<i64>) -> Cell {
        i.map_or_else(Cell::none, Cell::int)
    }

    pub fn none() -> Cell {
        Cell { text: "-".to_owned(), json: serde_json::Value::Null }
    }
}

/// A column: its JSON/CSV key, its heading for people, and whether it is numeric.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub key: &'static str,
    pub heading: &'static str,
    pub numeric: bool,
}

pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.aligned(),
            Format::Markdown => self.markdown(),
            Format::Csv => self.csv(),
            Format::Json => self.json(),
        }
    }

    /// Columns padded to their widest cell; each cell [`printable`].
    fn aligned(&self) -> String {
        let rows: Vec<Vec<Cow<'_, str>>> =
            self.rows.iter().map(|r| r.iter().map(|c| printable(&c.text)).collect()).collect();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| rows.iter().map(|r| r[i].chars().count()).chain([c.heading.len()]).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        let line = |cells: Vec<&str>, out: &mut String| {
            let parts: Vec<String> = cells
                .iter()
                .zip(&widths)
                .zip(&self.columns)
                .map(|((text, w), c)| if c.numeric { format!("{text:>w$}") } else { format!("{text:<w$}") })
                .collect();
            let _ = writeln!(out, "{}", parts.join("  ").trim_end());
        };
        line(self.columns.iter().map(|c| c.heading).collect(), &mut out);
        for row in &rows {
            line(row.iter().map(|c| c.as_ref()).collect(), &mut out);
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", self.columns.iter().map(|c| c.heading).collect::<Vec<_>>().join(" | "));
        let rule: Vec<&str> = self.columns.iter().map(|c| if c.numeric { "---:" } else { "---" }).collect();
        let _ = writeln!(out, "| {} |", rule.join(" | "));
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|c| printable(&c.text).replace('|', "\\|")).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }

    /// RFC 4180 through the `csv` crate: keys as the header, JSON values
    /// as cells (nothing for a missing value).
    fn csv(&self) -> String {
        let mut out = csv::Writer::from_writer(Vec::new());
        let record = |out: &mut csv::Writer<Vec<u8>>, cells: Vec<String>| {
            out.write_record(cells).expect("writing CSV to memory cannot fail")
        };
        record(&mut out, self.columns.iter().map(|c| c.key.to_owned()).collect());
        for row in &self.rows {
            let cells = row
                .iter()
                .map(|c| match &c.json {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            record(&mut out, cells);
        }
        String::from_utf8(out.into_inner().expect("writing CSV to memory cannot fail")).expect("CSV of UTF-8 is UTF-8")
    }

    fn json(&self) -> String {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| {
                let map: serde_json::Map<String, serde_json::Value> =
                    self.columns.iter().zip(row).map(|(c, cell)| (c.key.to_owned(), cell.json.clone())).collect();
                serde_json::Value::Object(map)
            })
            .collect();
        let mut s = serde_json::to_string_pretty(&rows).expect("JSON values serialise");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_for_terminals_and_kept_in_data() {
        assert_eq!(printable("plain name"), "plain name");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}[31mred\r\x07"), "a\\u{1b}[31mred\\u{d}\\u{7}");
        assert_eq!(printable("two\nlines\t"), "two\\u{a}lines\\u{9}");
        assert_eq!(printable("c1\u{9b}2J\u{7f} rlo\u{202e}"), "c1\\u{9b}2J\\u{7f} rlo\\u{202e}");
        assert_eq!(printable_lines("two\n\tlines\u{1b}]0;x\u{7}"), "two\n\tlines\\u{1b}]0;x\\u{7}");
        assert_eq!(printable("é ü 日本"), "é ü 日本");

        let table = Table {
            columns: vec![Column { key: "name", heading: "Name", numeric: false }],
            rows: vec![vec![Cell::text("a\u{1b}[31mred")], vec![Cell::text("x".repeat(10_000))]],
        };
        let text = table.render(Format::Table);
        assert!(!text.contains('\u{1b}') && text.contains("a\\u{1b}[31mred"), "{text}");
        assert_eq!(text.lines().count(), 3);
        assert!(!table.render(Format::Markdown).contains('\u{1b}'));
        assert!(table.render(Format::Json).contains("a\\u001b[31mred"));
        assert!(table.render(Format::Csv).contains("a\u{1b}[31mred"));
    }
}
