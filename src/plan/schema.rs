//! The plan format as a JSON Schema, for editors (`# yaml-language-server: $schema=...`) and
//! `reactbatch schema`.
//!
//! The types below mirror the plan file; the schema is derived from them with schemars, and a
//! test checks that their field names equal the loader's key lists ([`super::load`],
//! [`super::settings`], [`super::targets`], [`super::fields::Field`]), so the schema and the
//! loader cannot drift apart. Numeric bounds come from the same constants the loader uses.
//!
//! The schema checks *shape* (keys, types, enums, obvious patterns); the loader stays the
//! authority on meaning (does the target exist, is the row complete for its provider, do
//! includes resolve). It never rejects a plan the loader accepts, with one deliberate
//! exception: id-like values must be strings or numbers (a YAML `true` as a message id is
//! almost certainly a mistake). Draft-07 is used because it is what YAML editors support best.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use super::settings::{MAX_BURST, MAX_CONCURRENCY, MAX_RETRIES};

/// Where the committed copy of the schema lives in the repository (examples point at it).
pub const SCHEMA_PATH: &str = "schema/plan.schema.json";

/// The plan's JSON Schema, pretty-printed, with a trailing newline.
pub fn plan_schema_json() -> String {
    let generator = SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<PlanFile>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// A reactbatch plan: targets, defaults, settings and rows (and includes of more rows). A
/// `--targets` file is a plan holding only `targets:`; an included YAML file holds `rows:`
/// and `include:`.
#[derive(JsonSchema)]
#[schemars(title = "reactbatch plan", deny_unknown_fields)]
#[allow(dead_code)]
pub struct PlanFile {
    /// The plan format version: `1` (optional).
    version: Option<Version>,
    /// Where requests go, by name; rows pick one with `target:`.
    #[schemars(extend("propertyNames" = { "pattern": "^[A-Za-z0-9._-]{1,128}$" }))]
    targets: Option<BTreeMap<String, TargetSpec>>,
    /// Fields every row gets unless it sets them itself.
    defaults: Option<RowSpec>,
    /// Run settings; each is also a `run` flag, and the flag wins.
    settings: Option<SettingsSpec>,
    /// The rows, applied in order (includes follow, in order).
    rows: Option<Vec<RowSpec>>,
    /// More rows: `.csv` files (a header naming row fields) or `.yaml` files with `rows:`,
    /// relative to this file.
    include: Option<Include>,
}

/// `1`.
struct Version;

impl JsonSchema for Version {
    fn schema_name() -> Cow<'static, str> {
        "Version".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "const": 1 })
    }
}

/// A value kept as text by the loader: ids may be written as numbers (`message_id: 1001`).
struct Scalar;

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number"] })
    }
}

/// One file name or a list of them.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Include {
    One(String),
    Many(Vec<String>),
}

/// A target: one provider account or channel.
#[derive(JsonSchema)]
#[serde(tag = "provider", rename_all = "lowercase")]
#[allow(dead_code)]
enum TargetSpec {
    /// Kommo (amojo) chats API; requests are HMAC-signed with the channel secret.
    Kommo(KommoTarget),
    /// Ogmma API; requests carry the API key as a bearer token.
    Ogmma(OgmmaTarget),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct KommoTarget {
    /// The channel's scope id (`A-Z a-z 0-9 . _ ~ -`). May be omitted when every row for the
    /// target gives its own `scope_id`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._~-]{1,256}$"))]
    scope_id: Option<String>,
    /// The channel secret: `{ env: NAME }` or `{ file: PATH }`, never the value itself.
    secret: SecretRefSpec,
    /// Default `user.id` for rows that give none.
    user_id: Option<Scalar>,
    /// Default `user.ref_id` for rows that give none.
    user_ref_id: Option<Scalar>,
    /// Default `https://amojo.kommo.com`; `scheme://host[:port]` only.
    base_url: Option<BaseUrl>,
    /// Default: the provider's documented limit (7/s).
    rate: Option<RateSpec>,
    /// Share one pace with the other targets naming the same group (one provider only), or
    /// `own` for a pace of its own. Default: targets with the same `scope_id`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,128}$"))]
    limit_group: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct OgmmaTarget {
    /// The channel id (`A-Z a-z 0-9 . _ ~ -`). May be omitted when every row for the target
    /// gives its own `channel_id`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._~-]{1,256}$"))]
    channel_id: Option<String>,
    /// The API key: `{ env: NAME }` or `{ file: PATH }`, never the value itself.
    api_key: SecretRefSpec,
    /// Default `https://oapi.ogmma.com.br`; `scheme://host[:port]` only.
    base_url: Option<BaseUrl>,
    /// Default: the provider's documented limit (60/min).
    rate: Option<RateSpec>,
    /// Share one pace with the other targets naming the same group (one provider only), or
    /// `own` for a pace of its own. Default: targets with the same `api_key` reference.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,128}$"))]
    limit_group: Option<String>,
}

/// A secret reference. A literal secret in a plan is an error.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum SecretRefSpec {
    Env(EnvRef),
    File(FileRef),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct EnvRef {
    /// The environment variable holding the secret.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    env: String,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct FileRef {
    /// A file holding the secret, relative to this plan.
    #[schemars(length(min = 1))]
    file: String,
}

/// `http(s)://host[:port]`, no path, query or credentials.
struct BaseUrl;

impl JsonSchema for BaseUrl {
    fn schema_name() -> Cow<'static, str> {
        "BaseUrl".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^https?://[^/?#@\\s]+/?$" })
    }
}

/// `N/s`, `N/min`, `N/h` or `unlimited` (sandbox rehearsals).
struct RateSpec;

impl JsonSchema for RateSpec {
    fn schema_name() -> Cow<'static, str> {
        "Rate".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Requests per unit of time: `7/s`, `60/min`, `1000/h`, or `unlimited` (sandbox rehearsals).",
            "type": "string",
            "pattern": "^\\s*(unlimited|0*[1-9][0-9]*\\s*/\\s*(s|sec|second|m|min|minute|h|hour))\\s*$"
        })
    }
}

/// A duration: `500ms`, `10s`, `2m`, `1h`.
struct DurationSpec;

impl JsonSchema for DurationSpec {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^\\s*[0-9]+(ms|s|m|min|h)\\s*$" })
    }
}

/// What a row does to the message.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum ActionSpec {
    React,
    Unreact,
}

/// A row (or `defaults:`): one reaction to apply or remove.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct RowSpec {
    /// The target's name; may be omitted when the plan has one target.
    target: Option<String>,
    /// `react` (default) or `unreact`.
    action: Option<ActionSpec>,
    /// The emoji to set (a react needs one).
    emoji: Option<Scalar>,
    /// The provider's message id (Kommo `id`, Ogmma `messageId`).
    message_id: Option<Scalar>,
    /// Kommo: the integration-side message id.
    msgid: Option<Scalar>,
    /// Kommo: the conversation id.
    conversation_id: Option<Scalar>,
    /// Kommo: the integration-side conversation id.
    conversation_ref_id: Option<Scalar>,
    /// Kommo: the user id the reaction is made as.
    user_id: Option<Scalar>,
    /// Kommo: the integration-side user id.
    user_ref_id: Option<Scalar>,
    /// RFC 3339; the row is `deferred` until then, e.g. `2026-12-01T09:00:00Z`.
    not_before: Option<String>,
    /// The emoji an `unreact` removes, so `undo` can restore it.
    previous_emoji: Option<Scalar>,
    /// Stable identity for `--resume` (default: derived from the row's content).
    key: Option<Scalar>,
    /// Kommo: the account (scope id) this row goes to, over its target's: one lane per
    /// account. `A-Z a-z 0-9 . _ ~ -`; empty means the target's.
    scope_id: Option<Scalar>,
    /// Ogmma: the channel this row goes to, over its target's. `A-Z a-z 0-9 . _ ~ -`; empty
    /// means the target's.
    channel_id: Option<Scalar>,
}

/// Run settings (`reactbatch run --help` describes each; the flag wins).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct SettingsSpec {
    /// Report file; a `.jsonl` ending writes JSON Lines.
    report: Option<String>,
    /// Write every signed request (secrets redacted) to this file.
    emit: Option<String>,
    /// Format of `emit`.
    emit_format: Option<EmitFormatSpec>,
    /// Per-target rate for every target.
    rate: Option<RateSpec>,
    /// Requests allowed ahead of the even schedule.
    #[schemars(range(min = 1, max = MAX_BURST))]
    burst: Option<u32>,
    /// Requests in flight at once.
    #[schemars(range(min = 1, max = MAX_CONCURRENCY))]
    concurrency: Option<usize>,
    /// Retries after the first attempt (429, 5xx, timeouts, connection errors).
    #[schemars(range(max = MAX_RETRIES))]
    retries: Option<u32>,
    /// Per-attempt timeout, 1ms to 10m.
    timeout: Option<DurationSpec>,
    /// Skip rows this earlier report shows done.
    resume: Option<String>,
    /// Refuse to start while another run holds this file.
    lock: Option<String>,
    /// Run only shard `I/N`.
    #[schemars(regex(pattern = r"^\s*[0-9]+\s*/\s*[0-9]+\s*$"))]
    shard: Option<String>,
    /// Build and sign every request, send none.
    dry_run: Option<bool>,
    /// No progress bar or status lines.
    no_progress: Option<bool>,
    /// Only what needs a human: failed rows, stopped targets and the summary line, when the exit code is not 0.
    quiet: Option<bool>,
    /// Also write the end-of-run summary as JSON to this file.
    summary_json: Option<String>,
    /// Also write the run as one self-contained HTML page to this file.
    report_html: Option<String>,
    /// A PEM file of CA certificates trusted for HTTPS in addition to the system store and
    /// the bundled roots (a private or corporate CA); relative to the plan file.
    ca_cert: Option<String>,
    /// With `resume`: also run rows whose earlier result was a final failure (400, 404, ...).
    retry_failed: Option<bool>,
    /// Replace a report that holds live results without resuming from it.
    overwrite: Option<bool>,
    /// How long a row may keep being answered 429 (the provider only limiting) before it
    /// fails, 0s to 24h (default 15m).
    rate_limit_budget: Option<DurationSpec>,
    /// A ceiling on what all lanes to one base URL send together, by base URL
    /// (`scheme://host[:port]`): `{ "https://amojo.kommo.com": 40/s }`. Kommo's own host has
    /// 50/s unless set here (`unlimited` lifts it); other hosts have none unless set.
    host_rate: Option<BTreeMap<String, RateSpec>>,
    /// Live runs: the node_exporter textfile (Prometheus text format) written atomically at
    /// the end; relative to the plan file.
    metrics_file: Option<String>,
    /// Live runs: a healthchecks-style URL (http or https) pinged at `/start` and at
    /// `/<exit code>`.
    ping_url: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum EmitFormatSpec {
    Jsonl,
    Curl,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::super::fields::Field;
    use super::*;

    fn schema() -> Value {
        serde_json::from_str(&plan_schema_json()).expect("schema is JSON")
    }

    /// The property names of the object schema at `pointer` (following a `$ref`).
    fn keys(root: &Value, pointer: &str) -> BTreeSet<String> {
        let mut node = root.pointer(pointer).unwrap_or_else(|| panic!("{pointer}"));
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            node = root.pointer(r.trim_start_matches('#')).expect("ref");
        }
        node["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{pointer} has no properties: {node}"))
            .keys()
            .cloned()
            .collect()
    }

    fn set(names: impl IntoIterator<Item = impl ToString>) -> BTreeSet<String> {
        names.into_iter().map(|n| n.to_string()).collect()
    }

    /// The variant of an internally tagged target whose `provider` is `name`.
    fn target_variant(root: &Value, name: &str) -> BTreeSet<String> {
        let def = &root["definitions"]["TargetSpec"]["oneOf"];
        let i = def
            .as_array()
            .expect("oneOf")
            .iter()
            .position(|v| v["properties"]["provider"]["const"] == name)
            .unwrap_or_else(|| panic!("no {name} variant in {def}"));
        keys(root, &format!("/definitions/TargetSpec/oneOf/{i}"))
    }

    #[test]
    fn schema_keys_equal_the_loaders_keys() {
        let root = schema();
        assert_eq!(keys(&root, ""), set(super::super::load::PLAN_KEYS));
        assert_eq!(
            keys(&root, "/definitions/SettingsSpec"),
            set(super::super::settings::KEYS)
        );
        assert_eq!(keys(&root, "/definitions/RowSpec"), set(Field::names()));
        assert_eq!(
            target_variant(&root, "kommo"),
            set(super::super::targets::KOMMO_KEYS)
        );
        assert_eq!(
            target_variant(&root, "ogmma"),
            set(super::super::targets::OGMMA_KEYS)
        );
        let secret: BTreeSet<String> = (0..2)
            .flat_map(|i| keys(&root, &format!("/definitions/SecretRefSpec/anyOf/{i}")))
            .collect();
        assert_eq!(secret, set(super::super::targets::SECRET_KEYS));
    }

    #[test]
    fn bounds_come_from_the_loaders_constants() {
        let root = schema();
        let s = &root["definitions"]["SettingsSpec"]["properties"];
        assert_eq!(s["concurrency"]["maximum"], MAX_CONCURRENCY);
        assert_eq!(s["burst"]["maximum"], MAX_BURST);
        assert_eq!(s["retries"]["maximum"], MAX_RETRIES);
    }
}
