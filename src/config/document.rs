//! TOML text to [`Config`], reporting every syntax, type and unknown-key error with its key
//! path and line, not only the first one.
//!
//! serde stops at the first error, so each section and each `[[table]]` element is
//! deserialized on its own, from a `toml_edit` tree that still carries the source spans. When
//! one fails, the error's span gives the offending key; that key is recorded, removed from a
//! scratch copy and the element is deserialized again, until it succeeds. The removed keys
//! are "damaged": later semantic errors under them would only repeat the same problem.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{ImDocument, InlineTable, Item, Table, Value};

use super::error::ConfigError;
use super::model::{default_data_dir, Config, SECTIONS};
use super::store::StoreConfig;

/// Upper bound of retries for one element: each retry removes a key, so this is only a guard.
const MAX_RECOVERIES: usize = 256;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Renders `route[2].jwt.leeway_s`; keys that are not bare TOML keys are quoted.
pub(crate) fn render_path(path: &[Segment]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if bare {
                    out.push_str(key);
                } else {
                    let _ = write!(out, "{key:?}");
                }
            }
            Segment::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// Where each key of the file is: key path to line, and source span to key path.
#[derive(Debug, Default)]
pub(crate) struct SourceMap {
    line_starts: Vec<usize>,
    lines: HashMap<String, usize>,
    spans: Vec<(Range<usize>, Vec<Segment>)>,
}

impl SourceMap {
    fn new(text: &str) -> SourceMap {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceMap {
            line_starts,
            ..SourceMap::default()
        }
    }

    /// 1-based line of a byte offset.
    pub(crate) fn line_of_offset(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|start| *start <= offset)
    }

    /// Line of `path`, or of its nearest ancestor that is written in the file (a defaulted key
    /// points at its table's header). Paths here use plain keys, so cutting at `.`/`[` is safe.
    pub(crate) fn line_of_path(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }

    /// The innermost key or value whose source span holds `offset`.
    fn path_at(&self, offset: usize) -> Option<&[Segment]> {
        self.spans
            .iter()
            .filter(|(span, _)| span.contains(&offset) || span.start == offset)
            .min_by_key(|(span, _)| span.len())
            .map(|(_, path)| path.as_slice())
    }

    fn record(&mut self, path: &[Segment], span: Option<Range<usize>>) {
        let Some(span) = span else { return };
        let line = self.line_of_offset(span.start);
        self.lines.entry(render_path(path)).or_insert(line);
        self.spans.push((span, path.to_vec()));
    }

    fn walk_table(&mut self, table: &Table, path: &mut Vec<Segment>) {
        self.record(path, table.span());
        for (key, item) in table.iter() {
            path.push(Segment::Key(key.to_string()));
            self.record(path, table.key(key).and_then(|k| k.span()));
            self.walk_item(item, path);
            path.pop();
        }
    }

    fn walk_item(&mut self, item: &Item, path: &mut Vec<Segment>) {
        match item {
            Item::None => {}
            Item::Value(value) => self.walk_value(value, path),
            Item::Table(table) => self.walk_table(table, path),
            Item::ArrayOfTables(tables) => {
                for (i, table) in tables.iter().enumerate() {
                    path.push(Segment::Index(i));
                    self.walk_table(table, path);
                    path.pop();
                }
            }
        }
    }

    fn walk_value(&mut self, value: &Value, path: &mut Vec<Segment>) {
        self.record(path, value.span());
        match value {
            Value::Array(array) => {
                for (i, element) in array.iter().enumerate() {
                    path.push(Segment::Index(i));
                    self.walk_value(element, path);
                    path.pop();
                }
            }
            Value::InlineTable(table) => {
                for (key, element) in table.iter() {
                    path.push(Segment::Key(key.to_string()));
                    self.record(path, table.key(key).and_then(|k| k.span()));
                    self.walk_value(element, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

/// The result of reading the TOML text.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// `None` when some element could not be built at all (semantic checks are then skipped:
    /// indexes in their paths would no longer match the file).
    pub config: Option<Config>,
    pub source: SourceMap,
    pub errors: Vec<ConfigError>,
    /// Rendered paths of keys dropped after an error.
    pub damaged: Vec<String>,
}

/// Parses `text` into a [`Config`] (without `base_dir` and derived defaults).
pub(crate) fn parse_text(text: &str) -> Parsed {
    let mut source = SourceMap::new(text);
    let document = match ImDocument::parse(text) {
        Ok(document) => document,
        Err(e) => {
            let error = syntax_error(&source, text, &e);
            return Parsed {
                config: None,
                source,
                errors: vec![error],
                damaged: Vec::new(),
            };
        }
    };
    source.walk_table(document.as_table(), &mut Vec::new());
    let mut reader = SectionReader {
        source: &source,
        errors: Vec::new(),
        damaged: Vec::new(),
        complete: true,
    };
    let config = reader.read_config(document.as_table());
    let SectionReader {
        errors,
        damaged,
        complete,
        ..
    } = reader;
    Parsed {
        config: complete.then_some(config),
        source,
        errors,
        damaged,
    }
}

/// What the store commands read: `server.data_dir` and `[store]`, nothing else.
#[derive(Debug)]
pub(crate) struct ParsedStore {
    /// `server.data_dir` as written, or its default.
    pub data_dir: PathBuf,
    /// `[store]`, or its defaults; `None` when it could not be built.
    pub store: Option<StoreConfig>,
    pub source: SourceMap,
    pub errors: Vec<ConfigError>,
}

/// Parses only `server.data_dir` and `[store]` of `text`: the rest of the file is not
/// looked at (it may hold keys this reader does not know, values `serve` would refuse, or
/// references to secrets the store commands have no business resolving). The text must
/// still be TOML.
pub(crate) fn parse_store_text(text: &str) -> ParsedStore {
    let mut source = SourceMap::new(text);
    let document = match ImDocument::parse(text) {
        Ok(document) => document,
        Err(e) => {
            let error = syntax_error(&source, text, &e);
            return ParsedStore {
                data_dir: default_data_dir(),
                store: None,
                source,
                errors: vec![error],
            };
        }
    };
    source.walk_table(document.as_table(), &mut Vec::new());
    let mut reader = SectionReader {
        source: &source,
        errors: Vec::new(),
        damaged: Vec::new(),
        complete: true,
    };
    let root = document.as_table();
    let data_dir = reader.read_data_dir(root).unwrap_or_else(default_data_dir);
    let store = match root.get("store") {
        Some(_) => reader.read_table(root, "store"),
        None => Some(StoreConfig::default()),
    };
    let errors = reader.errors;
    ParsedStore {
        data_dir,
        store,
        source,
        errors,
    }
}

fn syntax_error(source: &SourceMap, text: &str, error: &toml_edit::TomlError) -> ConfigError {
    let (line, column) = match error.span() {
        Some(span) => {
            let line = source.line_of_offset(span.start);
            let line_start = source.line_starts[line - 1];
            let column = text[line_start..span.start.min(text.len())].chars().count() + 1;
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    let detail = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let message = match column {
        Some(column) => format!("TOML syntax error at column {column}: {detail}"),
        None => format!("TOML syntax error: {detail}"),
    };
    ConfigError {
        path: String::new(),
        line,
        message,
    }
}

/// Reads sections one by one, collecting errors.
struct SectionReader<'a> {
    source: &'a SourceMap,
    errors: Vec<ConfigError>,
    damaged: Vec<String>,
    /// False once an element could not be built even after dropping bad keys.
    complete: bool,
}

impl SectionReader<'_> {
    fn read_config(&mut self, root: &Table) -> Config {
        for (key, _) in root.iter() {
            if !SECTIONS.contains(&key) {
                let path = vec![Segment::Key(key.to_string())];
                let span = root.key(key).and_then(|k| k.span());
                self.push_error(
                    &path,
                    span,
                    format!(
                        "unknown key `{key}`, expected one of {}",
                        SECTIONS.join(", ")
                    ),
                );
            }
        }
        let mut config = Config::default();
        if let Some(v) = self.read_table(root, "server") {
            config.server = v;
        }
        if let Some(v) = self.read_table(root, "limits") {
            config.limits = v;
        }
        config.upstream = self.read_array(root, "upstream");
        config.route = self.read_array(root, "route");
        config.provider = self.read_array(root, "provider");
        config.model = self.read_array(root, "model");
        config.prompt = self.read_array(root, "prompt");
        if let Some(v) = self.read_table(root, "ai") {
            config.ai = v;
        }
        if let Some(v) = self.read_table(root, "lua") {
            config.lua = v;
        }
        config.team = self.read_array(root, "team");
        config.access_policy = self.read_array(root, "access_policy");
        if let Some(v) = self.read_table(root, "store") {
            config.store = v;
        }
        if let Some(v) = self.read_table(root, "cluster") {
            config.cluster = v;
        }
        if let Some(v) = self.read_table(root, "metrics") {
            config.metrics = v;
        }
        config.webhook = self.read_array(root, "webhook");
        config.mcp_server = self.read_array(root, "mcp_server");
        if let Some(v) = self.read_table(root, "mcp") {
            config.mcp = v;
        }
        config
    }

    /// `server.data_dir` alone, whatever else `[server]` holds; `None` when absent (the
    /// default applies) or not a path.
    fn read_data_dir(&mut self, root: &Table) -> Option<PathBuf> {
        let item = root.get("server")?.as_table_like()?.get("data_dir")?;
        let path = [
            Segment::Key("server".into()),
            Segment::Key("data_dir".into()),
        ];
        self.read_element(as_value(item), &path)
    }

    /// A `[section]`; `None` when absent (the default applies) or unbuildable.
    fn read_table<T: DeserializeOwned>(&mut self, root: &Table, name: &str) -> Option<T> {
        let item = root.get(name)?;
        let path = vec![Segment::Key(name.to_string())];
        self.read_element(as_value(item), &path)
    }

    /// A `[[section]]` array (or an inline array of tables).
    fn read_array<T: DeserializeOwned>(&mut self, root: &Table, name: &str) -> Vec<T> {
        let Some(item) = root.get(name) else {
            return Vec::new();
        };
        let elements: Vec<Value> = match item {
            Item::ArrayOfTables(tables) => tables
                .iter()
                .map(|t| Value::InlineTable(t.clone().into_inline_table()))
                .collect(),
            Item::Value(Value::Array(array)) => array.iter().cloned().collect(),
            other => {
                // Not an array: let serde say what it expected, at the section's own path.
                let path = vec![Segment::Key(name.to_string())];
                self.read_element::<Vec<T>>(as_value(other), &path);
                self.complete = false;
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(elements.len());
        for (i, element) in elements.into_iter().enumerate() {
            let path = vec![Segment::Key(name.to_string()), Segment::Index(i)];
            if let Some(v) = self.read_element(element, &path) {
                out.push(v);
            }
        }
        out
    }

    /// Deserializes one element, recovering from errors by dropping the offending key.
    fn read_element<T: DeserializeOwned>(
        &mut self,
        mut value: Value,
        base: &[Segment],
    ) -> Option<T> {
        for _ in 0..MAX_RECOVERIES {
            let error = match T::deserialize(value.clone().into_deserializer()) {
                Ok(v) => return Some(v),
                Err(e) => e,
            };
            let located = error
                .span()
                .and_then(|span| self.source.path_at(span.start))
                .filter(|p| p.starts_with(base))
                .unwrap_or(base)
                .to_vec();
            let message = super::error::in_plain_words(&redact_values(error.message()));
            let (error_path, drop_path) = match missing_field(&message) {
                // The key is absent: report it under its table; drop that table if it is
                // itself optional (a nested one), else the element cannot be built.
                Some(field) => {
                    let mut path = located.clone();
                    path.push(Segment::Key(field.to_string()));
                    (path, located)
                }
                None => (located.clone(), located),
            };
            self.push_error(&error_path, error.span(), message);
            let drop_path = up_to_last_key(&drop_path[base.len()..]);
            if drop_path.is_empty() || !remove_path(&mut value, drop_path) {
                break;
            }
            let mut damaged = base.to_vec();
            damaged.extend_from_slice(drop_path);
            self.damaged.push(render_path(&damaged));
        }
        self.complete = false;
        None
    }

    fn push_error(&mut self, path: &[Segment], span: Option<Range<usize>>, message: String) {
        let rendered = render_path(path);
        let line = match span {
            Some(span) => Some(self.source.line_of_offset(span.start)),
            None => self.source.line_of_path(&rendered),
        };
        self.errors.push(ConfigError {
            path: rendered,
            line,
            message,
        });
    }
}

/// An item of the document as a value (standard tables become inline ones; spans survive).
fn as_value(item: &Item) -> Value {
    match item.clone().into_value() {
        Ok(value) => value,
        // Only `Item::None` is left, which a parsed document does not hold.
        Err(_) => Value::InlineTable(InlineTable::new()),
    }
}

/// The field name of serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// Cuts a path after its last key, so an error in `listen[1]` drops the whole `listen` array
/// (dropping one element would shift the indexes of the others).
fn up_to_last_key(path: &[Segment]) -> &[Segment] {
    match path.iter().rposition(|s| matches!(s, Segment::Key(_))) {
        Some(i) => &path[..=i],
        None => &[],
    }
}

/// Removes the key at `path` (relative to `value`); false when it is not there.
fn remove_path(value: &mut Value, path: &[Segment]) -> bool {
    let Some((Segment::Key(last), parents)) = path.split_last() else {
        return false;
    };
    let mut current = value;
    for segment in parents {
        let next = match (segment, current) {
            (Segment::Key(key), Value::InlineTable(table)) => table.get_mut(key),
            (Segment::Index(i), Value::Array(array)) => array.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return false,
        }
    }
    match current {
        Value::InlineTable(table) => table.remove(last).is_some(),
        _ => false,
    }
}

/// serde quotes the offending value in type errors (`invalid type: string "…"`); a string
/// in the wrong place may be a secret, so it is left out of the message.
fn redact_values(message: &str) -> String {
    for prefix in ["invalid type: string \"", "invalid value: string \""] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some(end) = rest.rfind("\", expected") {
                let kind = &prefix[..prefix.len() - "string \"".len()];
                return format!("{kind}a string{}", &rest[end + 1..]);
            }
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(parsed: &Parsed) -> Vec<&str> {
        parsed.errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn valid_text_parses_without_errors() {
        let parsed = parse_text("[server]\nworkers = 2\n[[route]]\nname = \"a\"\n");
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let config = parsed.config.unwrap();
        assert_eq!(config.server.workers, 2);
        assert_eq!(config.route[0].name, "a");
    }

    #[test]
    fn every_section_is_read_including_extensions() {
        let parsed = parse_text(
            "[ai]\ndefault_max_tokens = 7\n[[team]]\nname = \"t\"\ntpm = 5\nbudget_usd = 1.5\n",
        );
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let config = parsed.config.unwrap();
        assert_eq!(config.ai.default_max_tokens, 7);
        assert_eq!(config.team[0].name, "t");
        assert_eq!(config.team[0].tpm, Some(5));
        assert_eq!(config.team[0].budget_usd, Some(1.5));
    }

    #[test]
    fn access_policies_are_read_and_their_unknown_keys_named() {
        let parsed = parse_text(
            "[[access_policy]]\nteam = \"ml\"\nmax_ttl = \"8h\"\n\
             auto_approve = { models = [\"m\"], max_ttl = \"1h\", budget_usd = 5 }\n",
        );
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let policy = &parsed.config.unwrap().access_policy[0];
        assert_eq!(
            (policy.team.as_str(), policy.max_ttl.as_str()),
            ("ml", "8h")
        );
        let auto = policy.auto_approve.as_ref().unwrap();
        assert_eq!(auto.budget_usd, Some(5.0));
        assert_eq!(auto.max_ttl.as_deref(), Some("1h"));

        let parsed = parse_text(
            "[[access_policy]]\nteam = \"ml\"\nmax_ttl = \"8h\"\n\
             auto_approve = { model = [\"m\"] }\n",
        );
        assert_eq!(paths(&parsed), ["access_policy[0].auto_approve.model"]);
    }

    #[test]
    fn syntax_error_reports_its_line_and_column() {
        let parsed = parse_text("[server]\nworkers = 2\nlisten = [\"a\"\nx = 1\n");
        assert_eq!(parsed.errors.len(), 1);
        let error = &parsed.errors[0];
        assert_eq!(error.line, Some(4));
        assert!(
            error.message.contains("syntax error at column"),
            "{}",
            error.message
        );
        assert!(parsed.config.is_none());
    }

    #[test]
    fn unknown_top_level_key_is_an_error_with_its_line() {
        let parsed = parse_text("[server]\n\n[bogus]\nx = 1\n");
        assert_eq!(paths(&parsed), ["bogus"]);
        assert_eq!(parsed.errors[0].line, Some(3));
    }

    #[test]
    fn unknown_key_in_nested_inline_table_names_the_full_path() {
        let text = "[[route]]\nname = \"a\"\n\n[[route]]\nname = \"b\"\n\
                    jwt = { issuer = \"i\", isuser = \"typo\" }\n";
        let parsed = parse_text(text);
        assert_eq!(paths(&parsed), ["route[1].jwt.isuser"]);
        assert_eq!(parsed.errors[0].line, Some(6));
        assert!(parsed.errors[0].message.contains("unknown field `isuser`"));
    }

    #[test]
    fn unknown_key_in_sub_table_names_the_full_path() {
        let parsed =
            parse_text("[server]\nworkers = 1\n[server.tls]\ncert = \"c\"\nkeyy = \"k\"\n");
        assert_eq!(paths(&parsed), ["server.tls.keyy"]);
        assert_eq!(parsed.errors[0].line, Some(5));
    }

    #[test]
    fn type_error_names_the_key_and_line() {
        let parsed = parse_text("[limits]\nidle_timeout_ms = 5\nmax_body_bytes = \"big\"\n");
        assert_eq!(paths(&parsed), ["limits.max_body_bytes"]);
        assert_eq!(parsed.errors[0].line, Some(3));
    }

    #[test]
    fn type_error_in_array_element_names_the_index() {
        let parsed = parse_text("[server]\nlisten = [\"127.0.0.1:1\", 8080]\n");
        assert_eq!(paths(&parsed), ["server.listen[1]"]);
        assert_eq!(parsed.damaged, ["server.listen"]);
    }

    #[test]
    fn bad_enum_value_names_the_key() {
        let parsed = parse_text("[ai]\nauth = \"apikey\"\n");
        assert_eq!(paths(&parsed), ["ai.auth"]);
        assert!(parsed.errors[0].message.contains("unknown variant"));
    }

    #[test]
    fn log_format_takes_text_or_json_and_names_the_key_otherwise() {
        let parsed = parse_text("[server]\nlog_format = \"xml\"\n");
        assert_eq!(paths(&parsed), ["server.log_format"]);
        assert!(parsed.errors[0].message.contains("unknown variant"));
        let parsed = parse_text("[server]\nlog_format = \"json\"\n");
        assert!(parsed.errors.is_empty());
        let config = parsed.config.unwrap();
        assert_eq!(config.server.log_format, crate::config::LogFormat::Json);
        let parsed = parse_text("[server]\n");
        assert_eq!(
            parsed.config.unwrap().server.log_format,
            crate::config::LogFormat::Text
        );
    }

    #[test]
    fn several_errors_in_one_table_are_all_reported() {
        let parsed = parse_text("[server]\nworkerz = 1\nlisten = 5\nadmin_listen = 7\n");
        assert_eq!(
            paths(&parsed),
            ["server.workerz", "server.listen", "server.admin_listen"]
        );
        assert!(parsed.config.is_some());
    }

    #[test]
    fn errors_across_sections_are_all_reported() {
        let text = "[limits]\nbad = 1\n[[upstream]]\nname = 1\n[[upstream]]\ntls = \"yes\"\n[lua]\nx = 1\n";
        let parsed = parse_text(text);
        assert_eq!(
            paths(&parsed),
            ["limits.bad", "upstream[0].name", "upstream[1].tls", "lua.x"]
        );
    }

    #[test]
    fn missing_required_key_is_reported_at_its_path() {
        let parsed = parse_text("[[provider]]\nname = \"p\"\n");
        assert_eq!(paths(&parsed), ["provider[0].kind"]);
        assert_eq!(parsed.errors[0].line, Some(1));
        assert!(parsed.config.is_none());
    }

    #[test]
    fn missing_key_in_nested_table_keeps_the_element() {
        let parsed = parse_text("[[upstream]]\nname = \"u\"\ncredential = { header = \"x\" }\n");
        assert_eq!(paths(&parsed), ["upstream[0].credential.secret"]);
        assert_eq!(parsed.errors[0].line, Some(3));
        assert!(parsed.config.unwrap().upstream[0].credential.is_none());
    }

    #[test]
    fn section_of_wrong_shape_is_an_error_at_the_section() {
        let parsed = parse_text("route = 5\n");
        assert_eq!(paths(&parsed), ["route"]);
        assert!(parsed.config.is_none());
    }

    #[test]
    fn misplaced_string_value_is_not_echoed() {
        let parsed = parse_text("[[upstream]]\ncredential = \"Bearer sk-live-123\"\n");
        assert_eq!(paths(&parsed), ["upstream[0].credential"]);
        assert!(
            !parsed.errors[0].message.contains("sk-live"),
            "{}",
            parsed.errors[0].message
        );
    }

    #[test]
    fn line_of_path_falls_back_to_the_table_header() {
        let parsed = parse_text("[server]\nworkers = 1\n\n[[route]]\nname = \"a\"\n");
        assert_eq!(parsed.source.line_of_path("route[0].upstream"), Some(4));
        assert_eq!(parsed.source.line_of_path("server.workers"), Some(2));
    }

    #[test]
    fn render_path_quotes_unusual_keys() {
        let path = [
            Segment::Key("route".into()),
            Segment::Index(0),
            Segment::Key("a.b".into()),
        ];
        assert_eq!(render_path(&path), "route[0].\"a.b\"");
    }
}
