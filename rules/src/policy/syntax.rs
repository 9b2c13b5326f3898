//! The policy file as written (TOML), before validation. Fields that need checking beyond their
//! type keep their position ([`Spanned`]) so errors can name the line.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    pub version: Spanned<u32>,
    #[serde(default)]
    pub name: Option<String>,
    /// Offset of the plant's local time from UTC, for `hours` windows (`"+01:00"`).
    #[serde(default)]
    pub utc_offset: Option<Spanned<String>>,
    /// How long repeats of one alert fold together unless a rule says otherwise.
    #[serde(default)]
    pub default_window: Option<Spanned<String>>,
    #[serde(default, rename = "asset")]
    pub assets: Vec<AssetSyntax>,
    #[serde(default)]
    pub groups: GroupsSyntax,
    #[serde(default, rename = "allow")]
    pub allows: Vec<Spanned<RuleSyntax>>,
    #[serde(default, rename = "alert")]
    pub alerts: Vec<Spanned<RuleSyntax>>,
    #[serde(default)]
    pub detectors: DetectorsSyntax,
}

/// `[groups]`: group name to member asset names.
pub(super) type GroupsSyntax = std::collections::BTreeMap<String, Spanned<Vec<Spanned<String>>>>;

/// `[detectors]`: built-in rule id to its settings.
pub(super) type DetectorsSyntax = std::collections::BTreeMap<Spanned<String>, TuningSyntax>;

/// `[[asset]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AssetSyntax {
    pub name: Spanned<String>,
    #[serde(default)]
    pub address: Option<Spanned<String>>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
    #[serde(default)]
    pub units: Vec<Spanned<u16>>,
    #[serde(default)]
    pub role: Option<Spanned<String>>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub criticality: Option<Spanned<String>>,
    /// Version 2: the Ethernet addresses the asset answers from (`"00:1d:9c:12:34:56"`).
    #[serde(default)]
    pub macs: Option<Spanned<Vec<Spanned<String>>>>,
    /// Version 2: the connections per period the asset normally takes (`"6/min"`).
    #[serde(default)]
    pub connection_rate: Option<Spanned<String>>,
    /// Version 2: the requests per period the asset normally answers (`"40/s"`).
    #[serde(default)]
    pub request_rate: Option<Spanned<String>>,
}

/// A list given as one item or many. (Untagged enums lose inner positions, so errors about an
/// item point at the whole field.)
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

/// A function given by code or by name, class or `code/sub-function`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum FunctionItem {
    Code(u16),
    Name(String),
}

/// An address range: a number or `"start-end"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RangeItem {
    Address(u32),
    Range(String),
}

/// `{ min = .., max = .. }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BoundsSyntax {
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
}

/// `{ holding_registers = "0-3", min = .., max = .. }` (or `input_registers`; neither: the
/// registers no other entry names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RangeBoundsSyntax {
    #[serde(default)]
    pub holding_registers: Option<OneOrMany<RangeItem>>,
    #[serde(default)]
    pub input_registers: Option<OneOrMany<RangeItem>>,
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
}

/// `[[allow]]` and `[[alert]]`: what traffic a rule covers, plus (for alerts) what to raise.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSyntax {
    #[serde(default)]
    pub name: Option<String>,
    pub from: Spanned<OneOrMany<String>>,
    pub to: Spanned<OneOrMany<String>>,
    #[serde(default)]
    pub units: Option<Spanned<Vec<Spanned<u16>>>>,
    pub functions: Spanned<OneOrMany<FunctionItem>>,
    #[serde(default)]
    pub coils: Option<Spanned<OneOrMany<RangeItem>>>,
    #[serde(default)]
    pub discrete_inputs: Option<Spanned<OneOrMany<RangeItem>>>,
    #[serde(default)]
    pub holding_registers: Option<Spanned<OneOrMany<RangeItem>>>,
    #[serde(default)]
    pub input_registers: Option<Spanned<OneOrMany<RangeItem>>>,
    #[serde(default)]
    pub write_values: Option<Spanned<BoundsSyntax>>,
    #[serde(default)]
    /// One `{ min, max }` (with or without a register range) or a list of them: read as a
    /// value first, so a mistake inside names its entry rather than failing as a whole.
    pub read_values: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub rate: Option<Spanned<String>>,
    #[serde(default)]
    pub hours: Option<Spanned<String>>,
    #[serde(default)]
    pub days: Option<Spanned<Vec<Spanned<String>>>>,
    // Only for [[alert]].
    #[serde(default)]
    pub severity: Option<Spanned<String>>,
    #[serde(default)]
    pub technique: Option<Spanned<OneOrMany<String>>>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub window: Option<Spanned<String>>,
    #[serde(default)]
    pub threshold: Option<Spanned<u32>>,
}

/// `[detectors."rule.id"]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TuningSyntax {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub severity: Option<Spanned<String>>,
    #[serde(default)]
    pub window: Option<Spanned<String>>,
    #[serde(default)]
    pub threshold: Option<Spanned<u32>>,
    #[serde(default)]
    pub suppress: Option<Spanned<OneOrMany<String>>>,
}
