//! Search: `[search]` (method, trials, seed, objective) and `[space]` (a
//! value, a grid list or a distribution per train key), checked into a
//! [`Search`] and the [`Sampled`] keys, and the sampling itself.
//!
//! **Invariant:** trial `i` depends only on the seed and `i` (and the
//! distributions): raising `trials` keeps every earlier trial, and so its
//! job id and its results. Random search draws each key's value from a hash
//! of (seed, trial, key name); Sobol search takes point `i` of a Sobol
//! sequence (Joe and Kuo's direction numbers) under an Owen scramble seeded
//! per dimension (Burley's hash-based nested uniform scramble), so point `i`
//! never depends on how many points are drawn. Sampled reals are rounded to
//! 12 significant digits: a last-bit difference in a platform's `exp`/`ln`
//! cannot change a job id, and the value prints and reads back exactly.

use serde_json::json;

use super::check::Checker;
use super::keys::{Param, TrainKey, TrainParams};
use super::node::{Node, Value};

/// How the jobs of a sweep are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The grid's cartesian product (and the configs): no sampling.
    Grid,
    /// Independent uniform draws per trial and key.
    Random,
    /// A scrambled Sobol sequence: quasi-random, spreads trials evenly.
    Sobol,
}

impl Method {
    /// The method as written in a sweep file.
    pub fn name(self) -> &'static str {
        match self {
            Method::Grid => "grid",
            Method::Random => "random",
            Method::Sobol => "sobol",
        }
    }
}

/// What "best" means for a sweep's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// The best validation accuracy, maximised (the default).
    ValidAcc,
    /// The lowest validation loss, minimised.
    ValidLoss,
    /// The lowest training loss, minimised.
    TrainLoss,
}

impl Objective {
    /// Every objective, the default first.
    pub const ALL: [Objective; 3] = [Objective::ValidAcc, Objective::ValidLoss, Objective::TrainLoss];

    /// The objective as written in a sweep file.
    pub fn name(self) -> &'static str {
        match self {
            Objective::ValidAcc => "valid_acc",
            Objective::ValidLoss => "valid_loss",
            Objective::TrainLoss => "train_loss",
        }
    }
}

/// `[search]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Search {
    pub(super) method: Method,
    /// Trials to sample (0 for the grid).
    pub(super) trials: u64,
    pub(super) seed: u64,
    pub(super) objective: Objective,
}

impl Default for Search {
    fn default() -> Search {
        Search { method: Method::Grid, trials: 0, seed: 0, objective: Objective::ValidAcc }
    }
}

/// A distribution of one key's values.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Dist {
    /// Reals in `[low, high]`, evenly (quantised to `step` from `low`).
    Uniform { low: f64, high: f64, step: Option<f64> },
    /// Reals in `[low, high]`, evenly on a log scale (whole keys rounded).
    LogUniform { low: f64, high: f64 },
    /// Whole numbers `low, low + step, …` up to `high`.
    IntUniform { low: u64, high: u64, step: u64 },
    /// One of these values, each as likely.
    Choice(Vec<Param>),
}

/// One sampled key of `[space]`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sampled {
    pub(super) key: TrainKey,
    pub(super) dist: Dist,
    /// The chance that the value is 0 instead of a draw.
    pub(super) zero_probability: f64,
    /// The line of the key in `[space]`, where known.
    pub(super) line: Option<usize>,
}

/// The distributions a `[space]` table may name.
const DISTRIBUTIONS: [&str; 4] = ["uniform", "log_uniform", "int_uniform", "choice"];
/// Every key of a distribution's table.
const DIST_KEYS: [&str; 6] = ["uniform", "log_uniform", "int_uniform", "choice", "step", "zero_probability"];

/// What `[space]` adds to the sweep: fixed values, grid axes, sampled keys.
#[derive(Default)]
pub(super) struct SpaceParts {
    pub(super) fixed: Vec<(TrainKey, Param)>,
    pub(super) axes: Vec<(TrainKey, Vec<Param>)>,
    pub(super) sampled: Vec<Sampled>,
    /// The line of `[space]`, where known.
    line: Option<usize>,
    /// The distributions written, those refused included.
    written: usize,
}

impl Checker {
    /// `[search]`: the method, trials, seed and objective.
    pub(super) fn search(&mut self, node: &Node) -> Search {
        let Some(mut t) = self.table("search", node) else { return Search::default() };
        let mut search = Search::default();
        let method_line = t.line_of("method");
        match self.string(&mut t, "method").as_deref() {
            None | Some("grid") => {}
            Some("random") => search.method = Method::Random,
            Some("sobol") => search.method = Method::Sobol,
            Some(other) => self.error(
                method_line,
                "search.method",
                format!("must be one of \"grid\", \"random\", \"sobol\", got \"{other}\""),
            ),
        }
        let sampling = search.method != Method::Grid;
        for key in ["trials", "seed"] {
            if !sampling && t.entries.iter().any(|e| e.0 == key) {
                let line = t.line_of(key);
                self.error(line, t.key(key), "applies to method = \"random\" or \"sobol\" only");
                t.take(key);
            }
        }
        let trials_given = t.entries.iter().any(|e| e.0 == "trials");
        search.trials = self.int(&mut t, "trials", 1, super::MAX_JOBS_CEILING as i64).unwrap_or(0);
        if sampling && !trials_given {
            self.error(t.line, "search.trials", "missing: how many trials to sample");
        }
        search.seed = self.int(&mut t, "seed", 0, i64::MAX).unwrap_or(0);
        let objective_line = t.line_of("objective");
        if let Some(name) = self.string(&mut t, "objective") {
            match Objective::ALL.into_iter().find(|o| o.name() == name) {
                Some(objective) => search.objective = objective,
                None => {
                    let names: Vec<&str> = Objective::ALL.iter().map(|o| o.name()).collect();
                    self.error(
                        objective_line,
                        "search.objective",
                        format!("must be one of {}, got \"{name}\"", super::keys::quoted(&names)),
                    );
                }
            }
        }
        self.finish(t, &["method", "trials", "seed", "objective"]);
        search
    }

    /// `[space]`: per train key a value (fixed), a list (a grid axis) or a
    /// distribution (sampled). `taken` are the keys `[train]` and `[grid]`
    /// already set, with the table that set them.
    pub(super) fn space(&mut self, node: &Node, taken: &[(TrainKey, &str)]) -> SpaceParts {
        let mut parts = SpaceParts { line: node.line, ..SpaceParts::default() };
        let Some(mut t) = self.table("space", node) else { return parts };
        for (name, line, value) in std::mem::take(&mut t.entries) {
            let Some(key) = TrainKey::from_name(name) else {
                t.entries.push((name, line, value));
                continue;
            };
            let path = t.key(name);
            if let Some((_, table)) = taken.iter().find(|(k, _)| *k == key) {
                self.error(line, &path, format!("also set in [{table}]: set each key in one place"));
                continue;
            }
            match &value.value {
                Value::Array(_) => {
                    if let Some(values) = self.axis(&path, key, value, line) {
                        parts.axes.push((key, values));
                    }
                }
                Value::Table(_) => {
                    parts.written += 1;
                    if let Some(sampled) = self.distribution(&path, key, value, line) {
                        parts.sampled.push(sampled);
                    }
                }
                _ => match key.parse(value) {
                    Ok(param) => parts.fixed.push((key, param)),
                    Err(msg) => self.error(value.line.or(line), &path, msg),
                },
            }
        }
        let known: Vec<&str> = TrainKey::ALL.iter().map(|k| k.name()).collect();
        self.finish(t, &known);
        parts.sampled.sort_by_key(|s| s.key);
        parts
    }

    /// The consistency of `[search]` and `[space]`: a distribution needs a
    /// sampling method, and a sampling method needs a distribution.
    pub(super) fn search_and_space(&mut self, search: Option<&Search>, space: Option<&SpaceParts>) {
        let method = search.map_or(Method::Grid, |s| s.method);
        match (search, space) {
            (None, Some(space)) => self.error(
                space.line,
                "space",
                "needs a [search] table with method = \"random\" or \"sobol\" (a grid of lists goes in [grid])",
            ),
            (Some(_), Some(space)) if method == Method::Grid => {
                for sampled in &space.sampled {
                    self.error(
                        sampled.line,
                        format!("space.{}", sampled.key.name()),
                        "a distribution needs [search] method = \"random\" or \"sobol\", not \"grid\"",
                    );
                }
            }
            (Some(_), space) if method != Method::Grid && space.is_none_or(|s| s.written == 0) => self.error(
                space.and_then(|s| s.line),
                "space",
                format!("method = \"{}\" needs a distribution in [space] to sample", method.name()),
            ),
            _ => {}
        }
    }

    /// A distribution's table, checked against the key it samples.
    fn distribution(&mut self, path: &str, key: TrainKey, node: &Node, key_line: Option<usize>) -> Option<Sampled> {
        let mut t = self.table(path, node)?;
        let line = node.line.or(key_line);
        let named: Vec<&str> = DISTRIBUTIONS.iter().copied().filter(|d| t.entries.iter().any(|e| e.0 == *d)).collect();
        let kind = match named[..] {
            [one] => one,
            [] => {
                self.finish(t, &DIST_KEYS);
                self.error(line, path, format!("needs a distribution: one of {}", super::keys::quoted(&DISTRIBUTIONS)));
                return None;
            }
            _ => {
                self.error(line, path, format!("names {} distributions: give one", named.len()));
                return None;
            }
        };
        let kind_line = t.line_of(kind).or(line);
        let body = t.take(kind)?;
        let step_line = t.line_of("step").or(line);
        let step = t.take("step");
        let zero_line = t.line_of("zero_probability").or(line);
        let zero = t.take("zero_probability");
        self.finish(t, &DIST_KEYS);
        let default = TrainParams::default().get(key);
        let whole = matches!(default, Param::Int(_));
        let named_key = matches!(default, Param::Choice(_));
        let kind_path = format!("{path}.{kind}");
        let name = key.name();
        let fits = match kind {
            "choice" => None,
            _ if named_key => Some(format!("{name} takes names: use choice")),
            "uniform" if whole => Some(format!("{name} takes whole numbers: use int_uniform, log_uniform or choice")),
            "int_uniform" if !whole => Some(format!("{name} takes real numbers: use uniform, log_uniform or choice")),
            _ => None,
        };
        if let Some(msg) = fits {
            self.error(kind_line, &kind_path, msg);
            return None;
        }
        let dist = match kind {
            "choice" => {
                let values = self.axis(&kind_path, key, body, kind_line)?;
                Dist::Choice(values)
            }
            _ => {
                let (low, high) = self.range(&kind_path, key, body, kind_line)?;
                let (lo, hi) = (number(low), number(high));
                if lo > hi {
                    self.error(kind_line, &kind_path, format!("low > high: {low} > {high}"));
                    return None;
                }
                if lo == hi {
                    self.error(kind_line, &kind_path, format!("an empty range: {low} to {high}"));
                    return None;
                }
                if kind == "log_uniform" && lo <= 0.0 {
                    self.error(
                        kind_line,
                        &kind_path,
                        format!("the log of a non-positive value: {low} (use a low > 0)"),
                    );
                    return None;
                }
                match (kind, low, high) {
                    ("int_uniform", Param::Int(low), Param::Int(high)) => Dist::IntUniform { low, high, step: 1 },
                    ("log_uniform", _, _) => Dist::LogUniform { low: lo, high: hi },
                    _ => Dist::Uniform { low: lo, high: hi, step: None },
                }
            }
        };
        let dist = match (step, dist) {
            (None, dist) => dist,
            (Some(step), Dist::Uniform { low, high, .. }) => {
                let step = self.number(step, &format!("{path}.step"), |x| x > 0.0, "> 0")?;
                Dist::Uniform { low, high, step: Some(step) }
            }
            (Some(step), Dist::IntUniform { low, high, .. }) => {
                let step = match step.value {
                    Value::Int(i) if i >= 1 => i as u64,
                    Value::Int(i) => {
                        self.error(step_line, format!("{path}.step"), format!("must be >= 1, got {i}"));
                        return None;
                    }
                    ref other => {
                        let got = other.type_name();
                        self.error(step_line, format!("{path}.step"), format!("must be an integer, got {got}"));
                        return None;
                    }
                };
                Dist::IntUniform { low, high, step }
            }
            (Some(_), _) => {
                self.error(step_line, format!("{path}.step"), format!("does not apply to {kind}"));
                return None;
            }
        };
        let zero_probability = match zero {
            None => 0.0,
            Some(node) => {
                let p = self.number(
                    node,
                    &format!("{path}.zero_probability"),
                    |x| (0.0..1.0).contains(&x),
                    ">= 0 and < 1",
                )?;
                let zero = if whole { Value::Int(0) } else { Value::Float(0.0) };
                if matches!(dist, Dist::Choice(_)) {
                    self.error(
                        zero_line,
                        format!("{path}.zero_probability"),
                        "does not apply to choice (list 0 among the choices)",
                    );
                    return None;
                }
                if let Err(msg) = key.parse(&Node { value: zero, line: None }) {
                    self.error(
                        zero_line,
                        format!("{path}.zero_probability"),
                        format!("0 is no value of {name}: it {msg}"),
                    );
                    return None;
                }
                p
            }
        };
        Some(Sampled { key, dist, zero_probability, line })
    }

    /// `[low, high]`, each a value of `key`.
    fn range(&mut self, path: &str, key: TrainKey, node: &Node, line: Option<usize>) -> Option<(Param, Param)> {
        match &node.value {
            Value::Array(items) if items.len() == 2 => {
                let low =
                    key.parse(&items[0]).map_err(|msg| self.error(items[0].line.or(line), format!("{path}[0]"), msg));
                let high =
                    key.parse(&items[1]).map_err(|msg| self.error(items[1].line.or(line), format!("{path}[1]"), msg));
                Some((low.ok()?, high.ok()?))
            }
            Value::Array(items) => {
                self.error(line, path, format!("must be [low, high], got {} values", items.len()));
                None
            }
            other => {
                self.error(line, path, format!("must be [low, high], got {}", other.type_name()));
                None
            }
        }
    }
}

fn number(param: Param) -> f64 {
    match param {
        Param::Int(i) => i as f64,
        Param::Float(x) => x,
        Param::Choice(_) => f64::NAN,
    }
}

/// `[search]` and `[space]` folded into the sweep: fixed values into
/// `[train]`'s, lists into the grid's axes (in [`TrainKey::ALL`] order).
pub(super) fn merge(
    search: Option<Search>,
    space: Option<SpaceParts>,
    base: &mut TrainParams,
    grid: &mut Vec<(TrainKey, Vec<Param>)>,
) -> (Search, Vec<Sampled>) {
    let search = search.unwrap_or_default();
    let Some(space) = space else { return (search, Vec::new()) };
    for (key, value) in space.fixed {
        base.set(key, value);
    }
    grid.extend(space.axes);
    grid.sort_by_key(|(k, _)| *k);
    (search, space.sampled)
}

/// The canonical JSON of `[search]` (only what differs from the default, so
/// that a sweep without it keeps its id) and of the sampled keys.
pub(super) fn canonical(search: &Search, sampled: &[Sampled]) -> Vec<(&'static str, serde_json::Value)> {
    let mut out = Vec::new();
    let mut s = serde_json::Map::new();
    if search.method != Method::Grid {
        s.insert("method".into(), json!(search.method.name()));
        s.insert("trials".into(), json!(search.trials));
        s.insert("seed".into(), json!(search.seed));
    }
    if search.objective != Objective::ValidAcc {
        s.insert("objective".into(), json!(search.objective.name()));
    }
    if !s.is_empty() {
        out.push(("search", serde_json::Value::Object(s)));
    }
    if !sampled.is_empty() {
        let mut space = serde_json::Map::new();
        for sample in sampled {
            let mut d = serde_json::Map::new();
            match &sample.dist {
                Dist::Uniform { low, high, step } => {
                    d.insert("uniform".into(), json!([low, high]));
                    if let Some(step) = step {
                        d.insert("step".into(), json!(step));
                    }
                }
                Dist::LogUniform { low, high } => {
                    d.insert("log_uniform".into(), json!([low, high]));
                }
                Dist::IntUniform { low, high, step } => {
                    d.insert("int_uniform".into(), json!([low, high]));
                    if *step != 1 {
                        d.insert("step".into(), json!(step));
                    }
                }
                Dist::Choice(values) => {
                    d.insert("choice".into(), values.iter().map(|v| v.to_json()).collect());
                }
            }
            if sample.zero_probability > 0.0 {
                d.insert("zero_probability".into(), json!(sample.zero_probability));
            }
            space.insert(sample.key.name().into(), serde_json::Value::Object(d));
        }
        out.push(("space", serde_json::Value::Object(space)));
    }
    out
}

/// Sets the sampled keys of trial `trial` in `params`.
pub(super) fn sample(search: &Search, sampled: &[Sampled], trial: u64, params: &mut TrainParams) {
    for (dim, s) in sampled.iter().enumerate() {
        let name = fnv(s.key.name());
        let u = match search.method {
            Method::Sobol => sobol::point(trial, dim, hash(&[search.seed, dim as u64, 0x0073_6f62_6f6c]) as u32),
            _ => unit(hash(&[search.seed, trial, name, 0])),
        };
        let zero = s.zero_probability > 0.0 && unit(hash(&[search.seed, trial, name, 1])) < s.zero_probability;
        let value = if zero {
            match params.get(s.key) {
                Param::Int(_) => Param::Int(0),
                _ => Param::Float(0.0),
            }
        } else {
            draw(s, u)
        };
        params.set(s.key, value);
    }
}

/// The value at `u` in `[0, 1)` of a sampled key.
fn draw(s: &Sampled, u: f64) -> Param {
    let whole = matches!(TrainParams::default().get(s.key), Param::Int(_));
    let index = |n: u64| ((u * n as f64) as u64).min(n - 1);
    match &s.dist {
        Dist::Choice(values) => values[index(values.len() as u64) as usize],
        Dist::IntUniform { low, high, step } => Param::Int(low + step * index((high - low) / step + 1)),
        Dist::Uniform { low, high, step: None } => Param::Float(round12(low + u * (high - low)).clamp(*low, *high)),
        Dist::Uniform { low, high, step: Some(step) } => {
            let n = ((high - low) / step * (1.0 + 1e-12)).floor() as u64 + 1;
            Param::Float(round12(low + step * index(n) as f64).clamp(*low, *high))
        }
        Dist::LogUniform { low, high } => {
            let x = (low.ln() + u * (high.ln() - low.ln())).exp();
            if whole {
                Param::Int((x.round().clamp(low.ceil(), high.floor())) as u64)
            } else {
                Param::Float(round12(x).clamp(*low, *high))
            }
        }
    }
}

/// `x` rounded to 12 significant digits.
fn round12(x: f64) -> f64 {
    format!("{x:.11e}").parse().unwrap_or(x)
}

/// SplitMix64's finaliser: a well-mixed 64-bit function of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A hash of the parts, in order.
fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x7377_6565_705f_7370, |h, p| mix(h ^ mix(*p)))
}

/// FNV-1a of a name: a stable number per key.
fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The top 53 bits of `h` as a number in `[0, 1)`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Scrambled Sobol points, one coordinate at a time.
pub(super) mod sobol {
    /// Joe and Kuo's primitive polynomials and initial direction numbers
    /// (`new-joe-kuo-6.21201`, dimensions 2 to 21): degree `s`, the
    /// polynomial's inner coefficients `a`, and `m_1 … m_s`. Dimension 1 is
    /// van der Corput's sequence.
    pub(super) const JOE_KUO: [(u32, u32, &[u32]); 20] = [
        (1, 0, &[1]),
        (2, 1, &[1, 3]),
        (3, 1, &[1, 3, 1]),
        (3, 2, &[1, 1, 1]),
        (4, 1, &[1, 1, 3, 3]),
        (4, 4, &[1, 3, 5, 13]),
        (5, 2, &[1, 1, 5, 5, 17]),
        (5, 4, &[1, 1, 5, 5, 5]),
        (5, 7, &[1, 1, 7, 11, 19]),
        (5, 11, &[1, 1, 5, 1, 1]),
        (5, 13, &[1, 1, 1, 3, 11]),
        (5, 14, &[1, 3, 5, 5, 31]),
        (6, 1, &[1, 3, 3, 9, 7, 49]),
        (6, 13, &[1, 1, 1, 15, 21, 21]),
        (6, 16, &[1, 3, 1, 13, 27, 49]),
        (6, 19, &[1, 1, 1, 15, 7, 5]),
        (6, 22, &[1, 3, 1, 15, 13, 25]),
        (6, 25, &[1, 1, 5, 5, 19, 61]),
        (7, 1, &[1, 3, 7, 11, 23, 15, 103]),
        (7, 4, &[1, 3, 7, 13, 13, 15, 69]),
    ];

    /// The most dimensions: one per train key fits with room to spare.
    pub(super) const DIMENSIONS: usize = JOE_KUO.len() + 1;

    /// The 32 direction numbers `v_1 … v_32` of dimension `dim` (0-based).
    pub(super) fn directions(dim: usize) -> [u32; 32] {
        let mut v = [0u32; 32];
        if dim == 0 {
            for (k, v) in v.iter_mut().enumerate() {
                *v = 1 << (31 - k);
            }
            return v;
        }
        let (s, a, m_init) = JOE_KUO[dim - 1];
        let s = s as usize;
        // m_k = 2 a_1 m_(k-1) ^ 4 a_2 m_(k-2) ^ … ^ 2^s m_(k-s) ^ m_(k-s).
        let mut m: Vec<u32> = m_init.to_vec();
        while m.len() < 32 {
            let k = m.len();
            let mut next = m[k - s] ^ (m[k - s] << s);
            for j in 1..s {
                if (a >> (s - 1 - j)) & 1 == 1 {
                    next ^= m[k - j] << j;
                }
            }
            m.push(next);
        }
        for (k, (v, m)) in v.iter_mut().zip(m).enumerate() {
            *v = m << (31 - k);
        }
        v
    }

    /// Coordinate `dim` of Sobol point `index`, unscrambled, as 32 bits.
    pub(super) fn raw(index: u64, dim: usize) -> u32 {
        let v = directions(dim);
        let mut x = 0u32;
        let mut i = index;
        let mut k = 0;
        while i != 0 && k < 32 {
            if i & 1 == 1 {
                x ^= v[k];
            }
            i >>= 1;
            k += 1;
        }
        x
    }

    /// An Owen (nested uniform) scramble of 32 bits: each bit flipped by a
    /// hash of the bits above it (Burley 2020, Vegdahl's constants), so
    /// a `(t, m, s)`-net stays one.
    pub(super) fn scramble(x: u32, seed: u32) -> u32 {
        let mut x = x.reverse_bits();
        x = x.wrapping_add(seed);
        x ^= x.wrapping_mul(0x6c50_b47c);
        x ^= x.wrapping_mul(0xb82f_1e52);
        x ^= x.wrapping_mul(0xc7af_e638);
        x ^= x.wrapping_mul(0x8d22_f6e6);
        x.reverse_bits()
    }

    /// Coordinate `dim` of scrambled point `index`, in `(0, 1)`.
    pub(super) fn point(index: u64, dim: usize, seed: u32) -> f64 {
        let x = scramble(raw(index, dim % DIMENSIONS), seed);
        (x as f64 + 0.5) / 4_294_967_296.0
    }
}

#[cfg(test)]
mod tests;
