//! The sweep file format as Rust types ("wire types"), and its JSON Schema.
//!
//! These types are the one declaration of the keys a sweep file may hold:
//! [`json_schema`] generates the JSON Schema from them (their doc comments
//! become its descriptions; `sweeps/sweep.schema.json` is its output), and the
//! checker (`check.rs`) takes the keys it accepts in the top level, `[data]`
//! (per layout) and `[model]` from that schema ([`keys`]). The checker still
//! does the checking, so that every problem is reported at once with its
//! line; the tests (`schema/tests.rs`) prove that the schema and the checker
//! agree on every key, type and range, and that `[train]`'s keys are
//! [`TrainKey::ALL`](super::TrainKey::ALL).

// The fields are read by the schema generator and by the tests that
// deserialize every sweep file into these types, never by code.
#![allow(dead_code)]

use std::borrow::Cow;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde_json::Value;

#[cfg(test)]
mod tests;

/// A sweep file: a data set, a backbone with its weights, and the
/// head-training settings to sweep (TOML, or JSON with the same keys).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sweep file", extend("dependentRequired" = {"space": ["search"]}))]
pub(crate) struct SweepFile {
    /// The JSON Schema of this file, for editors; ignored by sweep (TOML
    /// files point at it with a `#:schema ./sweep.schema.json` comment).
    #[serde(rename = "$schema")]
    schema: Option<String>,
    /// The sweep's name.
    #[schemars(regex(pattern = r"\S"))]
    name: String,
    /// Where the images are and how they are split.
    data: Data,
    /// The frozen backbone and its weights.
    model: Model,
    /// Head-training settings of every job; keys left out keep their defaults.
    train: Option<Train>,
    /// The cartesian product of these values (a list per key, or one value),
    /// each point a job with `[train]`'s other settings.
    grid: Option<Grid>,
    /// An explicit list of jobs, each `[train]` settings overriding
    /// `[train]`'s; joined with the grid, without duplicates.
    #[schemars(length(min = 1))]
    configs: Option<Vec<Train>>,
    /// How the jobs are chosen: the grid (the default), or trials sampled
    /// from `[space]`; and the objective that ranks them.
    search: Option<Search>,
    /// Per `[train]` key, a value (fixed), a list (crossed like `[grid]`'s)
    /// or a distribution that each trial samples; needs `[search]`.
    space: Option<Space>,
    /// Early stopping: trials clearly behind the others stop, keeping their
    /// epochs (status `pruned`); any sweep, grid or search.
    prune: Option<Prune>,
}

/// `[prune]`: the median rule (Optuna's MedianPruner) or asynchronous
/// successive halving (ASHA), each with its own settings.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "if" = {"properties": {"method": {"const": "median"}}},
    "then" = {"not": {"anyOf": [{"required": ["min_epochs"]}, {"required": ["eta"]}, {"required": ["brackets"]}]}},
    "else" = {"not": {"anyOf": [
        {"required": ["startup_trials"]}, {"required": ["warmup_epochs"]}, {"required": ["interval"]}
    ]}}
))]
pub(crate) struct Prune {
    /// `median`: a trial stops when its best value so far is worse than the
    /// median of the done trials' values at the same epoch; `asha`: at each
    /// rung (`min_epochs × eta^k` epochs) only the top `1/eta` go on.
    method: PruneMethod,
    /// median: no pruning until this many trials of the sweep are done.
    #[schemars(range(min = 0, max = 1_000_000), extend("default" = 5))]
    startup_trials: Option<u64>,
    /// median: no pruning during a trial's first epochs.
    #[schemars(range(min = 0, max = 100_000), extend("default" = 0))]
    warmup_epochs: Option<u64>,
    /// median: a check every `interval` epochs after the warm-up.
    #[schemars(range(min = 1, max = 100_000), extend("default" = 1))]
    interval: Option<u64>,
    /// asha: the first rung, in epochs.
    #[schemars(range(min = 1, max = 100_000), extend("default" = 1))]
    min_epochs: Option<u64>,
    /// asha: the reduction factor: rungs `eta` times apart, the top `1/eta` of each going on.
    #[schemars(range(min = 2, max = 100), extend("default" = 3))]
    eta: Option<u64>,
    /// asha: Hyperband's brackets: trial i is in bracket s = i mod brackets,
    /// whose rungs start at `min_epochs × eta^s`.
    #[schemars(range(min = 1, max = 100), extend("default" = 1))]
    brackets: Option<u64>,
}

/// How trials are pruned.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PruneMethod {
    /// Optuna's median stopping rule.
    Median,
    /// Asynchronous successive halving.
    Asha,
}

/// `[search]`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "if" = {"properties": {"method": {"enum": ["random", "sobol"]}}, "required": ["method"]},
    "then" = {"required": ["trials"]},
    "else" = {"not": {"anyOf": [{"required": ["trials"]}, {"required": ["seed"]}]}}
))]
pub(crate) struct Search {
    /// `grid`: the grid's cartesian product; `random`: independent uniform
    /// draws; `sobol`: a scrambled Sobol sequence (quasi-random).
    #[schemars(extend("default" = "grid"))]
    method: Option<Method>,
    /// Trials to sample (random and sobol); raising it keeps the earlier trials.
    #[schemars(range(min = 1, max = 1_000_000))]
    trials: Option<u64>,
    /// Seed of the sampling (random and sobol).
    #[schemars(range(min = 0, max = i64::MAX), extend("default" = 0))]
    seed: Option<u64>,
    /// What ranks the jobs in `sweep table` and `sweep best`.
    #[schemars(extend("default" = "valid_acc"))]
    objective: Option<Objective>,
}

/// How the jobs are chosen.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Method {
    /// The grid's cartesian product (and the configs).
    Grid,
    /// Independent uniform draws per trial and key.
    Random,
    /// A scrambled (Owen) Sobol sequence.
    Sobol,
}

/// What "best" means.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Objective {
    /// The best validation accuracy, maximised.
    ValidAcc,
    /// The lowest validation loss, minimised.
    ValidLoss,
    /// The lowest training loss, minimised.
    TrainLoss,
}

/// `[space]`: each `[train]` key as a value, a list, or a distribution.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Space {
    batch_size: Option<Dimension<BatchSize>>,
    workers: Option<Dimension<Workers>>,
    lr: Option<Dimension<Lr>>,
    momentum: Option<Dimension<Momentum>>,
    epochs: Option<Dimension<Epochs>>,
    optimizer: Option<Dimension<Optimizer>>,
    weight_decay: Option<Dimension<WeightDecay>>,
    step_size: Option<Dimension<StepSize>>,
    gamma: Option<Dimension<Gamma>>,
    seed: Option<Dimension<Seed>>,
    loss: Option<Dimension<Loss>>,
}

/// One key of `[space]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Dimension<T> {
    /// A fixed value.
    One(T),
    /// Values crossed with the other lists and the trials.
    Many(Vec<T>),
    /// Sampled per trial.
    Sampled(Distribution<T>),
}

/// A distribution: exactly one of `uniform`, `log_uniform`, `int_uniform`,
/// `choice`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Distribution<T> {
    uniform: Option<[T; 2]>,
    log_uniform: Option<[T; 2]>,
    int_uniform: Option<[T; 2]>,
    choice: Option<Vec<T>>,
    step: Option<f64>,
    zero_probability: Option<f64>,
}

impl<T: JsonSchema> JsonSchema for Dimension<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Dimension_of_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = generator.subschema_for::<T>();
        let pair = json_schema!({ "type": "array", "items": one, "minItems": 2, "maxItems": 2 });
        json_schema!({
            "anyOf": [
                one,
                { "type": "array", "items": one, "minItems": 1, "uniqueItems": true },
                {
                    "type": "object",
                    "description": "A distribution: one of uniform, log_uniform (low > 0), int_uniform ([low, high], \
                        low < high), or choice (a list); step quantises uniform and int_uniform; zero_probability \
                        gives 0 instead of a draw that often.",
                    "properties": {
                        "uniform": pair,
                        "log_uniform": pair,
                        "int_uniform": pair,
                        "choice": { "type": "array", "items": one, "minItems": 1, "uniqueItems": true },
                        "step": { "type": "number", "exclusiveMinimum": 0 },
                        "zero_probability": { "type": "number", "minimum": 0, "exclusiveMaximum": 1 }
                    },
                    "additionalProperties": false,
                    "oneOf": [
                        { "required": ["uniform"] },
                        { "required": ["log_uniform"] },
                        { "required": ["int_uniform"] },
                        { "required": ["choice"] }
                    ]
                }
            ]
        })
    }
}

/// `[data]`: the data set, by `layout`.
#[derive(Deserialize, JsonSchema)]
#[serde(tag = "layout", rename_all = "lowercase")]
pub(crate) enum Data {
    /// Kaggle's dog-breed layout: `root/labels.csv` (`id,breed`) and
    /// `root/train/<id>.jpg`.
    Kaggle(FileData),
    /// torchvision's ImageFolder: `root/<class>/*.jpg`.
    Folder(FileData),
    /// Generated images (no files, no downloads).
    Synthetic(SyntheticData),
}

/// `[data]` of images in files.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileData {
    /// The folder of the data, relative to the sweep file.
    #[schemars(regex(pattern = r"\S"))]
    root: String,
    /// Share of the images held out for validation (not with `folds`).
    #[schemars(extend("exclusiveMinimum" = 0, "exclusiveMaximum" = 1, "default" = 0.1))]
    valid_fraction: Option<f64>,
    /// Seed of the train/valid split (and of the folds).
    #[schemars(range(min = 0, max = i64::MAX), extend("default" = 0))]
    split_seed: Option<u64>,
    /// k-fold cross-validation instead of one split: each configuration
    /// trains once per fold.
    #[schemars(range(min = 2, max = 1000))]
    folds: Option<u64>,
    /// Leave out the images that cannot be used (truncated, not a JPEG or
    /// PNG, unreadable) instead of stopping: the run warns and records which.
    #[schemars(extend("default" = false))]
    skip_bad_images: Option<bool>,
    /// A split file (relative to the sweep file): `id,set` (`train` or
    /// `valid`), or `id,set,fold` with `folds`, as `sweep split --out` writes;
    /// instead of valid_fraction, split_seed and split_method.
    #[schemars(regex(pattern = r"\S"))]
    split: Option<String>,
    /// How the train/valid split is drawn [default: shuffle].
    split_method: Option<SplitMethod>,
}

/// How the train/valid split is drawn from `split_seed`.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SplitMethod {
    /// A seeded shuffle; train = round(n·(1 − valid_fraction)).
    Shuffle,
    /// Exactly pandas' `df.sample(frac=1 - valid_fraction,
    /// random_state=split_seed)` (numpy's legacy RandomState); not with folds.
    Pandas,
}

/// `[data]` of generated images.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyntheticData {
    /// Share of the images held out for validation (not with `folds`).
    #[schemars(extend("exclusiveMinimum" = 0, "exclusiveMaximum" = 1, "default" = 0.1))]
    valid_fraction: Option<f64>,
    /// Seed of the train/valid split (and of the folds).
    #[schemars(range(min = 0, max = i64::MAX), extend("default" = 0))]
    split_seed: Option<u64>,
    /// k-fold cross-validation instead of one split: each configuration
    /// trains once per fold.
    #[schemars(range(min = 2, max = 1000))]
    folds: Option<u64>,
    /// A split file (relative to the sweep file; ids are the images'
    /// indices): `id,set`, or `id,set,fold` with `folds`.
    #[schemars(regex(pattern = r"\S"))]
    split: Option<String>,
    /// How the train/valid split is drawn [default: shuffle].
    split_method: Option<SplitMethod>,
    /// Number of classes.
    #[schemars(range(min = 2, max = 10_000), extend("default" = 4))]
    classes: Option<u64>,
    /// Number of images, spread evenly over the classes (at least `classes`).
    #[schemars(range(min = 4, max = 10_000_000), extend("default" = 200))]
    images: Option<u64>,
    /// Image width in pixels.
    #[schemars(range(min = 8, max = 8192), extend("default" = 64))]
    width: Option<u64>,
    /// Image height in pixels.
    #[schemars(range(min = 8, max = 8192), extend("default" = 64))]
    height: Option<u64>,
    /// Seed of the generator.
    #[schemars(range(min = 0, max = i64::MAX), extend("default" = 0))]
    seed: Option<u64>,
}

/// `[model]`: the frozen backbone.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Model {
    /// The architecture.
    #[schemars(extend("default" = "resnet50"))]
    backbone: Option<Backbone>,
    /// A `.safetensors` or `.pth` file in torchvision's tensor names
    /// (relative to the sweep file), `hub:<owner>/<repo>` (its
    /// `model.safetensors` on the Hugging Face hub), `random` or `random:SEED`.
    #[schemars(regex(pattern = r"^(random(:[0-9]+)?|hub:.*/.*|.*[^/]\.(safetensors|pth|pt|bin))$"))]
    weights: String,
    /// Resize (shorter side) and centre-crop size in pixels.
    #[schemars(range(min = 32, max = 4096), extend("default" = 224))]
    image_size: Option<u64>,
    /// Normalisation mean (in `channel_order`: R, G, B by default) of pixels
    /// in 0-1: numbers, or fractions in quotes (`"1/255"`) [default: the
    /// weights file's metadata `mean`, else ImageNet's].
    #[schemars(extend("default" = [0.485, 0.456, 0.406]))]
    mean: Option<[Fraction; 3]>,
    /// Normalisation standard deviation (in `channel_order`): numbers > 0, or
    /// fractions in quotes (`"1/255"`) [default: the weights file's metadata
    /// `std`, else ImageNet's].
    #[schemars(extend("default" = [0.229, 0.224, 0.225]))]
    std: Option<[PositiveFraction; 3]>,
    /// The order of the colour channels the weights expect: `bgr` for
    /// Caffe's and Keras' ResNet-50 [default: the weights file's metadata
    /// `channel_order`, else `rgb`].
    channel_order: Option<ChannelOrder>,
    /// `mean`, `std` and `channel_order` at once (then none of them may be
    /// written): `torchvision` (RGB, ImageNet's mean and std), `caffe` (BGR,
    /// mean [103.939, 116.779, 123.68] of pixels in 0-255, std 1: Caffe's and
    /// Keras' ResNet-50).
    preset: Option<Preset>,
    /// Precision of the backbone pass.
    #[schemars(extend("default" = "f32"))]
    dtype: Option<DType>,
    /// How the feature cache stores the features: `f16` halves the entry on
    /// disk and in memory (rows converted to f32 a batch at a time when
    /// training) [default: f32].
    feature_dtype: Option<FeatureDType>,
    /// Neither use nor check the architecture and normalisation a
    /// safetensors file declares in its metadata (`arch`, `mean`, `std`)
    /// [default: false].
    ignore_weights_metadata: Option<bool>,
    /// Before the backbone pass, check on 32 of the images that the weights'
    /// batch norms see what they were trained on (a wrong normalisation
    /// stops the run); `false` skips it, as `sweep run --no-sanity-check`
    /// does [default: true].
    sanity_check: Option<bool>,
}

/// A number, or a fraction of two decimals in a string (`"1/255"`).
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum Fraction {
    /// A number.
    Number(f64),
    /// `"A/B"`.
    Text(#[schemars(regex(pattern = r"^\s*[-+]?[0-9]+(\.[0-9]*)?\s*/\s*[0-9]*[1-9][0-9]*(\.[0-9]*)?\s*$"))] String),
}

/// A number > 0, or a fraction of two positive decimals in a string (`"1/255"`).
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum PositiveFraction {
    /// A number > 0.
    Number(Positive),
    /// `"A/B"`.
    Text(
        #[schemars(regex(pattern = r"^\s*[+]?[0-9]*[1-9][0-9]*(\.[0-9]*)?\s*/\s*[0-9]*[1-9][0-9]*(\.[0-9]*)?\s*$"))]
        String,
    ),
}

/// A number > 0.
#[derive(Deserialize, JsonSchema)]
#[schemars(extend("exclusiveMinimum" = 0))]
pub(crate) struct Positive(f64);

/// A backbone architecture, in torchvision's names.
#[derive(Deserialize, JsonSchema)]
pub(crate) enum Backbone {
    /// ResNet-18 (512 features).
    #[serde(rename = "resnet18")]
    Resnet18,
    /// ResNet-34 (512 features).
    #[serde(rename = "resnet34")]
    Resnet34,
    /// ResNet-50 (2048 features), the stride on the 3x3 convolution (torchvision's).
    #[serde(rename = "resnet50")]
    Resnet50,
    /// ResNet-50 (2048 features), the stride on the first 1x1 convolution (the original paper's).
    #[serde(rename = "resnet50-v1")]
    Resnet50V1,
}

/// The order of the colour channels.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChannelOrder {
    /// Red, green, blue (torchvision's).
    Rgb,
    /// Blue, green, red (Caffe's).
    Bgr,
}

/// A named preprocessing.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Preset {
    /// RGB, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225].
    Torchvision,
    /// BGR, mean [103.939, 116.779, 123.68] / 255, std 1/255.
    Caffe,
}

/// The precision of the backbone pass.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DType {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

/// How cached features are stored.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FeatureDType {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
}

/// `[train]`, and each of `[[configs]]`: head-training settings.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Train {
    #[schemars(extend("default" = 16))]
    batch_size: Option<BatchSize>,
    #[schemars(extend("default" = 2))]
    workers: Option<Workers>,
    #[schemars(extend("default" = 0.01))]
    lr: Option<Lr>,
    #[schemars(extend("default" = 0.9))]
    momentum: Option<Momentum>,
    #[schemars(extend("default" = 14))]
    epochs: Option<Epochs>,
    #[schemars(extend("default" = "sgd"))]
    optimizer: Option<Optimizer>,
    #[schemars(extend("default" = 0.0))]
    weight_decay: Option<WeightDecay>,
    #[schemars(extend("default" = 15))]
    step_size: Option<StepSize>,
    #[schemars(extend("default" = 0.1))]
    gamma: Option<Gamma>,
    #[schemars(extend("default" = 0))]
    seed: Option<Seed>,
    #[schemars(extend("default" = "cross_entropy"))]
    loss: Option<Loss>,
}

/// `[grid]`: each `[train]` key with a list of values (or one value).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Grid {
    batch_size: Option<Axis<BatchSize>>,
    workers: Option<Axis<Workers>>,
    lr: Option<Axis<Lr>>,
    momentum: Option<Axis<Momentum>>,
    epochs: Option<Axis<Epochs>>,
    optimizer: Option<Axis<Optimizer>>,
    weight_decay: Option<Axis<WeightDecay>>,
    step_size: Option<Axis<StepSize>>,
    gamma: Option<Axis<Gamma>>,
    seed: Option<Axis<Seed>>,
    loss: Option<Axis<Loss>>,
}

/// One axis of the grid: distinct values, or a single value.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Axis<T> {
    /// A one-point axis.
    One(T),
    /// The values, in order.
    Many(Vec<T>),
}

impl<T: JsonSchema> JsonSchema for Axis<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Axis_of_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = generator.subschema_for::<T>();
        json_schema!({
            "anyOf": [one, { "type": "array", "items": one, "minItems": 1, "uniqueItems": true }]
        })
    }
}

/// Mini-batch size of head training.
#[derive(Deserialize, JsonSchema)]
pub(crate) struct BatchSize(#[schemars(range(min = 1, max = 1_048_576))] u64);

/// Threads decoding images for the backbone pass: speed only, never results.
#[derive(Deserialize, JsonSchema)]
pub(crate) struct Workers(#[schemars(range(min = 0, max = 1024))] u64);

/// Base learning rate (> 0).
#[derive(Deserialize, JsonSchema)]
pub(crate) struct Lr(#[schemars(extend("exclusiveMinimum" = 0))] f64);

/// SGD momentum (>= 0 and < 1).
#[derive(Deserialize, JsonSchema)]
pub(crate) struct Momentum(#[schemars(extend("minimum" = 0, "exclusiveMaximum" = 1))] f64);

/// Number of epochs.
#[derive(Deserialize, JsonSchema)]
pub(crate) struct Epochs(#[schemars(range(min = 1, max = 100_000))] u64);

/// The optimizer: SGD with momentum, as `torch.optim.SGD`.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Optimizer {
    /// Stochastic gradient descent with momentum.
    Sgd,
}

/// L2 penalty added to the gradient (>= 0).
#[derive(Deserialize, JsonSchema)]
pub(crate) struct WeightDecay(#[schemars(extend("minimum" = 0))] f64);

/// StepLR: epochs between learning-rate decays.
#[derive(Deserialize, JsonSchema)]
pub(crate) struct StepSize(#[schemars(range(min = 1, max = 100_000))] u64);

/// StepLR: the factor of each decay (> 0 and <= 1).
#[derive(Deserialize, JsonSchema)]
pub(crate) struct Gamma(#[schemars(extend("exclusiveMinimum" = 0, "maximum" = 1))] f64);

/// Seed of the head's initialisation and of the shuffling.
#[derive(Deserialize, JsonSchema)]
pub(crate) struct Seed(#[schemars(range(min = 0, max = i64::MAX))] u64);

/// The loss.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Loss {
    /// Cross-entropy (softmax), as `nn.CrossEntropyLoss`.
    CrossEntropy,
    /// Multi-class hinge, as `nn.MultiMarginLoss`.
    MultiMargin,
}

/// The JSON Schema (draft 2020-12) of sweep files, as pretty JSON with a
/// final newline: the text of `sweeps/sweep.schema.json`.
///
/// Object keys are sorted, whatever order serde_json's maps keep.
pub fn json_schema() -> String {
    let mut text = serde_json::to_string_pretty(&schema_value()).unwrap_or_default();
    text.push('\n');
    text
}

/// The schema as a JSON value: no `null` anywhere (sweep files have no
/// nulls, and a key left out is how a setting keeps its default), keys
/// sorted, each description's paragraphs on one line.
pub(crate) fn schema_value() -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut value = generator.into_root_schema_for::<SweepFile>().to_value();
    remove_nulls(&mut value);
    tidy(value)
}

/// Drops the `null` that schemars allows for an `Option`: `"type": [T, "null"]`
/// becomes `T`, and `"anyOf": [S, {"type": "null"}]` becomes `S` merged
/// into its parent.
fn remove_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".to_owned(), only);
                }
            }
            let is_null =
                |s: &Value| s.get("type").is_some_and(|t| t == "null") && s.as_object().is_some_and(|o| o.len() == 1);
            if let Some(Value::Array(any)) = map.get("anyOf") {
                if any.len() == 2 && any.iter().any(is_null) {
                    let other = any.iter().find(|s| !is_null(s)).cloned();
                    map.remove("anyOf");
                    if let Some(Value::Object(inner)) = other {
                        for (k, v) in inner {
                            map.entry(k).or_insert(v);
                        }
                    }
                }
            }
            map.values_mut().for_each(remove_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(remove_nulls),
        _ => {}
    }
}

/// `value` with every object's keys inserted in sorted order, and the line
/// breaks of a doc comment's paragraph turned into spaces in descriptions.
fn tidy(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| match v {
                        Value::String(text) if k == "description" => {
                            let paragraphs: Vec<String> = text.split("\n\n").map(|p| p.replace('\n', " ")).collect();
                            (k, Value::String(paragraphs.join("\n\n")))
                        }
                        v => (k, tidy(v)),
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(tidy).collect()),
        other => other,
    }
}

/// The keys each section of a sweep file may hold, as the schema declares them.
pub(crate) struct Keys {
    /// The top level.
    pub(crate) top: Vec<String>,
    /// `[data]` by layout name, `layout` included.
    pub(crate) data: Vec<(String, Vec<String>)>,
    /// `[model]`.
    pub(crate) model: Vec<String>,
}

impl Keys {
    /// `[data]`'s keys with `layout`, or with any layout when it is unknown.
    pub(crate) fn data(&self, layout: Option<&str>) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for (name, names) in &self.data {
            if layout.is_none_or(|l| l == name) {
                for key in names {
                    if !keys.contains(&key.as_str()) {
                        keys.push(key);
                    }
                }
            }
        }
        keys
    }
}

/// The keys of every section, read once from the generated schema.
pub(crate) fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let root = schema_value();
        let names = |schema: &Value| -> Vec<String> {
            schema.get("properties").and_then(Value::as_object).map(|p| p.keys().cloned().collect()).unwrap_or_default()
        };
        let def = |name: &str| root.pointer(&format!("/$defs/{name}")).cloned().unwrap_or_default();
        let data = def("Data")
            .get("oneOf")
            .and_then(Value::as_array)
            .map(|variants| {
                variants
                    .iter()
                    .map(|v| {
                        let layout = v.pointer("/properties/layout/const").and_then(Value::as_str).unwrap_or_default();
                        (layout.to_owned(), names(v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Keys { top: names(&root), data, model: names(&def("Model")) }
    })
}
