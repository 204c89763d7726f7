//! Loading and merging the configuration layers, remembering where every value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{Config, paths};

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// mpm's built-in default.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An `MPM_*` environment variable (its name).
    Env(String),
    /// A command-line flag (its name).
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "env {v}"),
            Origin::Flag(n) => write!(f, "flag {n}"),
        }
    }
}

/// A configuration error. `Display` gives the one line the user sees.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file that is not valid YAML, or a value out of range, at a position.
    #[error("{}:{line}:{col}: {message}", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        col: u64,
        /// What is wrong.
        message: String,
    },
    /// A file that cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A bad `MPM_*` variable.
    #[error("{var}: {message}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A bad command-line value.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag.
        flag: String,
        /// What is wrong.
        message: String,
    },
    /// `profile` names no known profile.
    #[error("unknown profile {name:?} (known: {known})")]
    UnknownProfile {
        /// The name given.
        name: String,
        /// The profiles there are, comma-separated.
        known: String,
    },
    /// Any other inconsistency.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Values given on the command line, applied last.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config PATH`: one more file, applied after the environment.
    pub config_file: Option<PathBuf>,
    /// (dotted key, value, flag name) triples, e.g. `("profile", "codex", "--profile")`.
    pub values: Vec<(String, Value, String)>,
}

impl Overrides {
    /// Set the dotted `key` to `value`, reported as coming from `flag`.
    pub fn set(&mut self, key: &str, value: impl Into<Value>, flag: &str) {
        self.values
            .push((key.to_string(), value.into(), flag.to_string()));
    }
}

/// The merged configuration, plus the origin of every leaf (dotted path) and the files read.
#[derive(Debug, Clone)]
pub struct LayeredConfig {
    /// The merged configuration.
    pub config: Config,
    /// Where each leaf (dotted path) came from.
    pub origins: BTreeMap<String, Origin>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// One-line notices for the user (an untrusted project file that was skipped).
    pub notices: Vec<String>,
    merged: Value,
}

impl LayeredConfig {
    /// One `key: value  # origin` line per leaf, in key order.
    pub fn show(&self) -> String {
        let mut out = String::new();
        let mut leaves = Vec::new();
        collect_leaves(&self.merged, String::new(), &mut leaves);
        let width = leaves
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .max()
            .unwrap_or(0)
            .min(90);
        for (key, value) in leaves {
            let origin = self
                .origin_of(&key)
                .map(|o| o.to_string())
                .unwrap_or_else(|| "default".into());
            let left = format!("{key}: {value}");
            out.push_str(&format!("{left:<width$}  # {origin}\n"));
        }
        out
    }

    /// The merged tree with each leaf as `{"value": ..., "origin": ...}`.
    pub fn show_json(&self) -> Value {
        let mut leaves = Vec::new();
        collect_leaves(&self.merged, String::new(), &mut leaves);
        let mut map = Map::new();
        for (key, _) in leaves {
            let value = lookup(&self.merged, &key).cloned().unwrap_or(Value::Null);
            let origin = self
                .origin_of(&key)
                .map(|o| o.to_string())
                .unwrap_or_else(|| "default".into());
            map.insert(key, serde_json::json!({"value": value, "origin": origin}));
        }
        Value::Object(map)
    }

    /// The origin of a dotted key (the nearest recorded ancestor's for a leaf inside a replaced value).
    pub fn origin_of(&self, key: &str) -> Option<&Origin> {
        let mut k = key;
        loop {
            if let Some(o) = self.origins.get(k) {
                return Some(o);
            }
            k = &k[..k.rfind('.')?];
        }
    }
}

/// Load with the real environment: XDG user file, `./.mpm/config.yaml`, `MPM_*` variables, then flags.
pub fn load(overrides: &Overrides) -> Result<LayeredConfig, ConfigError> {
    let user = paths::config_dir().join("config.yaml");
    let project = PathBuf::from(crate::trust::PROJECT_FILE);
    // A project file that chooses programs is skipped until trusted (`crate::trust`).
    let notice = crate::trust::check_project(Path::new("."), &crate::trust::record_path())
        .unwrap_or_else(|e| Some(format!("ignoring {}: {e}", crate::trust::PROJECT_FILE)));
    let files = match &notice {
        None => vec![user, project],
        Some(_) => vec![user],
    };
    let mut layered = load_from(&files, std::env::vars(), overrides)?;
    layered.notices.extend(notice);
    Ok(layered)
}

/// Load from explicit files (missing ones are skipped), environment pairs and overrides.
pub fn load_from(
    files: &[PathBuf],
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<LayeredConfig, ConfigError> {
    let default =
        serde_json::to_value(Config::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let mut merged = default;
    let mut origins = BTreeMap::new();
    let mut read = Vec::new();

    for path in files {
        if let Some(layer) = read_file_layer(path, false)? {
            merge(
                &mut merged,
                layer,
                "",
                &Origin::File(path.clone()),
                &mut origins,
            );
            read.push(path.clone());
        }
    }

    let mut env: Vec<(String, String)> =
        env.into_iter().filter(|(k, _)| is_config_var(k)).collect();
    env.sort();
    for (var, raw) in env {
        let key = env_key(&var);
        let value = parse_scalar(&raw);
        let layer = nest(&key, value);
        check_layer(&layer).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        merge(
            &mut merged,
            layer,
            "",
            &Origin::Env(var.clone()),
            &mut origins,
        );
    }

    if let Some(path) = &overrides.config_file {
        let layer = read_file_layer(path, true)?.unwrap_or(Value::Object(Map::new()));
        merge(
            &mut merged,
            layer,
            "",
            &Origin::File(path.clone()),
            &mut origins,
        );
        read.push(path.clone());
    }

    for (key, value, flag) in &overrides.values {
        let layer = nest(key, value.clone());
        check_layer(&layer).map_err(|message| ConfigError::Flag {
            flag: flag.clone(),
            message,
        })?;
        merge(
            &mut merged,
            layer,
            "",
            &Origin::Flag(flag.clone()),
            &mut origins,
        );
    }

    let config: Config =
        serde_json::from_value(merged.clone()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(LayeredConfig {
        config,
        origins,
        files: read,
        notices: Vec::new(),
        merged,
    })
}

/// `MPM_SECTION__KEY=value` sets `section.key`; `MPM_PROFILE` sets `profile`. Other `MPM_*` variables
/// (`MPM_SOCKET`, `MPM_LOG`, ...) are not configuration keys.
fn is_config_var(var: &str) -> bool {
    var == "MPM_PROFILE" || (var.starts_with("MPM_") && var.contains("__"))
}

fn env_key(var: &str) -> String {
    var["MPM_".len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

fn parse_scalar(raw: &str) -> Value {
    match serde_saphyr::from_str::<Value>(raw) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null | Value::Array(_))) => v,
        _ => Value::String(raw.to_string()),
    }
}

fn nest(key: &str, value: Value) -> Value {
    key.rsplit('.').fold(value, |inner, part| {
        let mut m = Map::new();
        m.insert(part.to_string(), inner);
        Value::Object(m)
    })
}

/// Check one layer alone against the schema; Err is a message without position.
fn check_layer(layer: &Value) -> Result<(), String> {
    serde_json::from_value::<Config>(layer.clone())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Read one YAML file as a layer: typed check first (for positions), then as a generic tree.
/// Returns None when the file does not exist and `required` is false.
fn read_file_layer(path: &Path, required: bool) -> Result<Option<Value>, ConfigError> {
    let text = match read_utf8(path) {
        Ok(t) => t,
        Err(ConfigError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && !required =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if text.trim().is_empty() {
        return Ok(Some(Value::Object(Map::new())));
    }
    if let Err(e) = serde_saphyr::from_str::<Config>(&text) {
        return Err(yaml_error(path, &e));
    }
    let value: Value = serde_saphyr::from_str(&text).map_err(|e| yaml_error(path, &e))?;
    match value {
        Value::Object(_) => Ok(Some(value)),
        Value::Null => Ok(Some(Value::Object(Map::new()))),
        _ => Err(ConfigError::Yaml {
            path: path.to_path_buf(),
            line: 1,
            col: 1,
            message: "the configuration must be a mapping".into(),
        }),
    }
}

/// Read a text file; bytes that are not UTF-8 are a `file:line:col` error at the first bad byte
/// (the column counts characters, as the YAML parser's positions do).
pub(crate) fn read_utf8(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // The prefix is valid UTF-8 by construction.
        let good = std::str::from_utf8(good).unwrap_or_default();
        let line = good.matches('\n').count() as u64 + 1;
        let col = good.rsplit('\n').next().unwrap_or("").chars().count() as u64 + 1;
        ConfigError::Yaml {
            path: path.to_path_buf(),
            line,
            col,
            message: "invalid UTF-8 (a YAML file must be UTF-8 text)".into(),
        }
    })
}

/// A `file:line:col: message` error from a serde-saphyr error.
pub(crate) fn yaml_error(path: &Path, e: &serde_saphyr::Error) -> ConfigError {
    let (line, col) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    ConfigError::Yaml {
        path: path.to_path_buf(),
        line,
        col,
        message: first_line_message(e),
    }
}

/// serde-saphyr renders a snippet after the message; keep the first meaningful line, without the
/// position it repeats.
pub(crate) fn first_line_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid YAML");
    let line = match line.find(" at line ") {
        Some(i) => &line[..i],
        None => line,
    };
    let line = line.trim_start_matches("error: ");
    // Drop a leading "line N column M: " that repeats the position we print in front.
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.find(": ").map(|i| &rest[i + 2..]))
    {
        Some(rest) if line[5..].starts_with(|c: char| c.is_ascii_digit()) => rest.to_string(),
        _ => line.to_string(),
    }
}

fn merge(
    base: &mut Value,
    overlay: Value,
    path: &str,
    origin: &Origin,
    origins: &mut BTreeMap<String, Origin>,
) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v, &child, origin, origins),
                    None => {
                        set_origin(&child, origin, origins);
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => {
            *slot = v;
            set_origin(path, origin, origins);
        }
    }
}

fn set_origin(path: &str, origin: &Origin, origins: &mut BTreeMap<String, Origin>) {
    let prefix = format!("{path}.");
    origins.retain(|k, _| !k.starts_with(&prefix));
    origins.insert(path.to_string(), origin.clone());
}

fn collect_leaves(v: &Value, path: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                collect_leaves(child, p, out);
            }
        }
        other => out.push((path, other.to_string())),
    }
}

fn lookup<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(v, |cur, part| cur.get(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_alone() {
        let c = load_from(&[], Vec::new(), &Overrides::default()).unwrap();
        assert_eq!(c.config, Config::default());
        assert_eq!(c.origin_of("executor.max_parallel"), None);
        assert!(c.show().contains("executor.max_parallel: 4"));
    }

    #[test]
    fn layers_apply_in_order_with_origins() {
        let dir = tempfile::tempdir().unwrap();
        let user = write(
            dir.path(),
            "user.yaml",
            "executor:\n  max_parallel: 8\n  timeout_secs: 10\n",
        );
        let project = write(
            dir.path(),
            "project.yaml",
            "executor:\n  timeout_secs: 20\n",
        );
        let env = vec![
            ("MPM_EXECUTOR__RATE_PER_MINUTE".to_string(), "5".to_string()),
            ("MPM_SOCKET".to_string(), "/x".to_string()),
        ];
        let mut ov = Overrides::default();
        ov.set("profile", "codex", "--profile");
        let c = load_from(&[user.clone(), project.clone()], env, &ov).unwrap();
        assert_eq!(c.config.executor.max_parallel, 8);
        assert_eq!(c.config.executor.timeout_secs, 20);
        assert_eq!(c.config.executor.rate_per_minute, 5);
        assert_eq!(c.config.profile, "codex");
        assert_eq!(
            c.origin_of("executor.max_parallel"),
            Some(&Origin::File(user))
        );
        assert_eq!(
            c.origin_of("executor.timeout_secs"),
            Some(&Origin::File(project))
        );
        assert_eq!(
            c.origin_of("executor.rate_per_minute"),
            Some(&Origin::Env("MPM_EXECUTOR__RATE_PER_MINUTE".into()))
        );
        assert_eq!(
            c.origin_of("profile"),
            Some(&Origin::Flag("--profile".into()))
        );
        let shown = c.show();
        assert!(
            shown.contains("# env MPM_EXECUTOR__RATE_PER_MINUTE"),
            "{shown}"
        );
        assert!(shown.contains("# flag --profile"), "{shown}");
    }

    #[test]
    fn built_in_agent_overridden_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "c.yaml",
            "agents:\n  qa:\n    timeout_secs: 7\n  custom:\n    argv: [echo, '{task}']\n",
        );
        let c = load_from(&[f], Vec::new(), &Overrides::default()).unwrap();
        let qa = &c.config.agents["qa"];
        assert_eq!(qa.timeout_secs, Some(7));
        assert!(
            qa.aliases.contains(&"QA".to_string()),
            "aliases kept from the built-in"
        );
        assert_eq!(c.config.agents["custom"].argv, vec!["echo", "{task}"]);
    }

    #[test]
    fn bad_yaml_names_file_line_col() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "bad.yaml", "executor:\n  max_parallel: [1\n");
        let e = load_from(std::slice::from_ref(&f), Vec::new(), &Overrides::default()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{}:", f.display())), "{msg}");
        assert!(
            matches!(e, ConfigError::Yaml { line, .. } if line >= 2),
            "{msg}"
        );
    }

    #[test]
    fn unknown_key_and_wrong_type_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "bad.yaml", "executor:\n  max_paralel: 3\n");
        let e = load_from(std::slice::from_ref(&f), Vec::new(), &Overrides::default()).unwrap_err();
        match &e {
            ConfigError::Yaml { line, message, .. } => {
                assert_eq!(*line, 2, "{e}");
                assert!(message.contains("max_paralel"), "{e}");
            }
            other => panic!("{other}"),
        }
        let g = write(dir.path(), "bad2.yaml", "limits:\n  interval_ms: soon\n");
        let e = load_from(&[g], Vec::new(), &Overrides::default()).unwrap_err();
        assert!(matches!(e, ConfigError::Yaml { line: 2, .. }), "{e}");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let env = vec![("MPM_EXECUTOR__MAX_PARALLEL".to_string(), "many".to_string())];
        let e = load_from(&[], env, &Overrides::default()).unwrap_err();
        assert!(
            e.to_string().starts_with("MPM_EXECUTOR__MAX_PARALLEL: "),
            "{e}"
        );
    }

    #[test]
    fn invalid_utf8_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, b"log:\n  level: \"\xc3\xa9\xff\"\n").unwrap();
        let e = load_from(std::slice::from_ref(&p), Vec::new(), &Overrides::default()).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Yaml {
                    line: 2,
                    col: 12,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn values_out_of_range_are_located_or_named() {
        let dir = tempfile::tempdir().unwrap();
        for (yaml, line, col) in [
            ("run:\n  grace_secs: 1e308\n", 2, 15),
            ("executor:\n  max_parallel: 0\n", 2, 17),
            ("limits:\n  interval_ms: 0\n", 2, 16),
            ("limits:\n  cpu: {warning_percent: .nan}\n", 2, 26),
            ("daemon:\n  stop_grace_secs: -1\n", 2, 20),
            ("agents:\n  qa:\n    timeout_secs: 0\n", 3, 19),
            ("limits:\n  memory_mb: {hard: 99999999999999}\n", 2, 21),
        ] {
            let f = write(dir.path(), "r.yaml", yaml);
            let e =
                load_from(std::slice::from_ref(&f), Vec::new(), &Overrides::default()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("out of range"), "{yaml:?}: {msg}");
            assert!(
                msg.starts_with(&format!("{}:{line}:{col}: ", f.display())),
                "{yaml:?}: {msg}"
            );
        }
        for (var, value) in [
            ("MPM_RUN__GRACE_SECS", "1e308"),
            ("MPM_RUN__GRACE_SECS", "-0.5"),
            ("MPM_EXECUTOR__TIMEOUT_SECS", "0"),
            ("MPM_DAEMON__MAX_FRAME_BYTES", "1"),
        ] {
            let env = vec![(var.to_string(), value.to_string())];
            let e = load_from(&[], env, &Overrides::default()).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{var}: ")) && msg.contains("out of range"),
                "{msg}"
            );
        }
        // In range stays accepted, at both ends.
        let env = vec![
            ("MPM_RUN__GRACE_SECS".to_string(), "3600".to_string()),
            ("MPM_EXECUTOR__MAX_PARALLEL".to_string(), "1".to_string()),
        ];
        let c = load_from(&[], env, &Overrides::default()).unwrap();
        assert_eq!(c.config.run.grace_secs, 3600.0);
    }

    #[test]
    fn missing_explicit_config_is_an_error() {
        let ov = Overrides {
            config_file: Some(PathBuf::from("/nonexistent/mpm.yaml")),
            values: vec![],
        };
        assert!(matches!(
            load_from(&[], Vec::new(), &ov),
            Err(ConfigError::Io { .. })
        ));
    }
}
