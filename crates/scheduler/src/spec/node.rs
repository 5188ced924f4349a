//! A format-neutral tree of the values in a sweep file, with the line each
//! value came from (TOML only), so that validation can report every problem
//! at once and point at it.

/// One value of a sweep file.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) value: Value,
    /// 1-based line in the source, where the format tells it.
    pub(crate) line: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    /// A whole number past 64 bits, as written (always out of range, but
    /// reported against its key like any other bad value).
    BigInt(String),
    Float(f64),
    Bool(bool),
    Array(Vec<Node>),
    /// Entries in source order: key, the key's line, value.
    Table(Vec<(String, Option<usize>, Node)>),
    /// A TOML datetime, a JSON null: nothing sweep has a use for.
    Other(&'static str),
}

impl Value {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) | Value::BigInt(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
            Value::Other(name) => name,
        }
    }
}

/// Parses TOML into a [`Node`], or returns the parser's message and line.
/// Whether a line holds a fraction like `1/255` outside a string.
fn has_fraction(line: &str) -> bool {
    let code = line.split('#').next().unwrap_or("");
    let bytes = code.as_bytes();
    !code.contains('"') && bytes.windows(3).any(|w| w[0].is_ascii_digit() && w[1] == b'/' && w[2].is_ascii_digit())
}

pub(crate) fn from_toml(src: &str) -> Result<Node, (String, Option<usize>)> {
    use toml::de::{DeTable, DeValue};
    let lines = LineIndex::new(src);
    let doc = DeTable::parse(src).map_err(|err| {
        let line = err.span().map(|span| lines.line(span.start));
        let mut message = err.message().trim().to_owned();
        // The parser's "duplicate key" does not say which; its span does.
        if let Some(key) = err.span().and_then(|span| src.get(span)).filter(|_| message == "duplicate key") {
            message = format!("duplicate key `{}`", key.trim());
        }
        // `std = [1/255, …]`: TOML has no fractions, and the parser's "string
        // values must be quoted" sends people the wrong way.
        let line_text = err.span().and_then(|span| {
            let start = src[..span.start].rfind('\n').map_or(0, |i| i + 1);
            src[start..].lines().next()
        });
        if let Some(text) = line_text.filter(|t| has_fraction(t)) {
            message = format!(
                "{message}; TOML has no fractions: write `{}` with the fractions in quotes (\"1/255\") or as \
                 decimals (0.00392156862745098)",
                text.trim()
            );
        }
        (message, line)
    })?;

    fn convert(value: &DeValue<'_>, lines: &LineIndex) -> Result<Value, String> {
        Ok(match value {
            DeValue::String(s) => Value::Str(s.to_string()),
            DeValue::Integer(i) => {
                let digits = i.as_str().replace('_', "");
                match i64::from_str_radix(&digits, i.radix()) {
                    Ok(int) => Value::Int(int),
                    Err(_) => Value::BigInt(i.as_str().to_owned()),
                }
            }
            DeValue::Float(f) => {
                let text = f.as_str().replace('_', "");
                let float = match text.as_str() {
                    "inf" | "+inf" => f64::INFINITY,
                    "-inf" => f64::NEG_INFINITY,
                    "nan" | "+nan" | "-nan" => f64::NAN,
                    other => other.parse().map_err(|e| format!("float {other}: {e}"))?,
                };
                Value::Float(float)
            }
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(_) => Value::Other("a datetime"),
            DeValue::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| {
                        let line = lines.line(item.span().start);
                        Ok(Node { value: convert(item.get_ref(), lines)?, line: Some(line) })
                    })
                    .collect::<Result<_, String>>()?,
            ),
            DeValue::Table(table) => Value::Table(
                table
                    .iter()
                    .map(|(key, value)| {
                        let key_line = lines.line(key.span().start);
                        let node = Node {
                            value: convert(value.get_ref(), lines)?,
                            line: Some(lines.line(value.span().start)),
                        };
                        Ok((key.get_ref().to_string(), Some(key_line), node))
                    })
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
    let value = convert(&DeValue::Table(doc.get_ref().clone()), &lines).map_err(|msg| (msg, None))?;
    Ok(Node { value, line: None })
}

/// Parses JSON into a [`Node`] (JSON values keep no lines).
pub(crate) fn from_json(src: &str) -> Result<Node, (String, Option<usize>)> {
    let value: serde_json::Value = serde_json::from_str(src).map_err(|err| {
        let line = err.line();
        let msg = err.to_string();
        // serde_json appends " at line L column C"; the line is reported apart.
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        (msg, Some(line))
    })?;
    fn convert(value: &serde_json::Value) -> Node {
        let value = match value {
            serde_json::Value::Null => Value::Other("null"),
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None if n.is_u64() => Value::BigInt(n.to_string()),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(items) => Value::Array(items.iter().map(convert).collect()),
            serde_json::Value::Object(map) => {
                Value::Table(map.iter().map(|(k, v)| (k.clone(), None, convert(v))).collect())
            }
        };
        Node { value, line: None }
    }
    Ok(convert(&value))
}

struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(src: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}
