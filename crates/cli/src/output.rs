//! Tables printed in the four output formats.

use std::fmt::Write;

use crate::args::Format;

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

    fn aligned(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.rows.iter().map(|r| r[i].text.chars().count()).chain([c.heading.len()]).max().unwrap_or(0)
            })
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
        for row in &self.rows {
            line(row.iter().map(|c| c.text.as_str()).collect(), &mut out);
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", self.columns.iter().map(|c| c.heading).collect::<Vec<_>>().join(" | "));
        let rule: Vec<&str> = self.columns.iter().map(|c| if c.numeric { "---:" } else { "---" }).collect();
        let _ = writeln!(out, "| {} |", rule.join(" | "));
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|c| c.text.replace('|', "\\|")).collect();
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
