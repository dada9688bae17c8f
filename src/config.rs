//! One configuration file for every command (YAML; `--config FILE` or `$SEEDWATCH_CONFIG`).
//!
//! Precedence, highest first: a flag on the command line, a `SEEDWATCH_<SECTION>_<KEY>`
//! variable, the file, the built-in default. The file is typed (an unknown section or key,
//! or a value of the wrong type, is an error naming the file and line); each of its settings
//! stands for one flag ([`BINDINGS`]) and becomes that flag before the command line is
//! parsed, checked by the flag's own parser. So a value means the same in the file, in the
//! environment and on the command line, and every command's `--help` stays its reference.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};

/// The variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "SEEDWATCH_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: reading the configuration file")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Unknown keys, wrong types, YAML syntax: serde's message carries the key.
    #[error("{path}:{line}: {source}")]
    Parse {
        path: String,
        line: usize,
        #[source]
        source: serde_yaml::Error,
    },
    /// A value its flag's parser refused, or one that must not be in a file.
    #[error("{origin}: {key}: {message}")]
    Value { origin: Origin, key: String, message: String },
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File { path: String, line: usize },
    Env(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File { path, line: 0 } => write!(f, "{path}"),
            Origin::File { path, line } => write!(f, "{path}:{line}"),
            Origin::Env(name) => write!(f, "${name}"),
        }
    }
}

// The file's shape. Every section and key is optional; what is left out keeps the flag's
// default. A key added here needs a line in BINDINGS and in config/seedwatch.example.yaml
// (the tests below hold the three together).

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    #[serde(deserialize_with = "or_default")]
    pub log: LogSection,
    #[serde(deserialize_with = "or_default")]
    pub archive: ArchiveSection,
    #[serde(deserialize_with = "or_default")]
    pub keys: KeysSection,
    #[serde(deserialize_with = "or_default")]
    pub rules: RulesSection,
    #[serde(deserialize_with = "or_default")]
    pub reports: ReportsSection,
    #[serde(deserialize_with = "or_default")]
    pub access: AccessSection,
    #[serde(deserialize_with = "or_default")]
    pub kafka: KafkaSection,
    #[serde(deserialize_with = "or_default")]
    pub metrics: MetricsSection,
    #[serde(deserialize_with = "or_default")]
    pub alertmanager: AlertmanagerSection,
    #[serde(deserialize_with = "or_default")]
    pub run: RunSection,
    #[serde(deserialize_with = "or_default")]
    pub detect: DetectSection,
    #[serde(deserialize_with = "or_default")]
    pub intake: IntakeSection,
    #[serde(deserialize_with = "or_default")]
    pub collect: CollectSection,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSection {
    pub root: Option<String>,
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysSection {
    pub fingerprint_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSection {
    pub dir: Option<PathBuf>,
    pub locations: Option<PathBuf>,
    pub roster: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsSection {
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSection {
    pub file: Option<PathBuf>,
    pub role: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    pub brokers: Option<String>,
    pub topic_prefix: Option<String>,
    pub partitions: Option<u32>,
    /// librdkafka settings, NAME: VALUE; never the secret ones.
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    pub addr: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerSection {
    pub url: Option<String>,
    pub hold: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    pub allowed_lateness: Option<String>,
    pub max_clock_skew: Option<String>,
    pub partitions: Option<u32>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectSection {
    pub group: Option<String>,
    pub instance_id: Option<String>,
    pub allowed_lateness: Option<String>,
    pub commit_interval: Option<String>,
    pub idle_after: Option<String>,
    pub max_buffered_rows: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeSection {
    pub listen: Option<String>,
    pub tokens: Option<PathBuf>,
    pub max_body_bytes: Option<u64>,
    pub max_inflate_ratio: Option<u64>,
    pub max_lines_per_request: Option<u64>,
    pub max_dead_letters_per_request: Option<u64>,
    pub request_timeout: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectSection {
    pub format: Option<String>,
    pub nginx_map: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
}

/// A section written with all its keys commented out (`kafka:` and nothing) is empty, not
/// an error.
fn or_default<'de, D: serde::Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Which commands a setting applies to.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Every command that has the flag (`generate` and `demo` make their own world: none).
    Every,
    /// These commands only (paths such as `collect http`), where a flag name means
    /// something else elsewhere (`--partitions` of `run` is not the topics' count).
    Only(&'static [&'static str]),
}

/// The variable that overrides a setting.
#[derive(Debug, Clone, Copy)]
pub enum Env {
    /// `SEEDWATCH_<SECTION>_<KEY>`.
    Derived,
    /// A name older than this file, kept.
    Named(&'static str),
    /// Lists and maps: the file or flags only.
    None,
}

/// One file key and the flag it stands for.
#[derive(Debug)]
pub struct Binding {
    pub key: &'static str,
    /// The flag's id (its field name in main.rs).
    pub flag: &'static str,
    pub scope: Scope,
    pub env: Env,
}

const fn bind(key: &'static str, flag: &'static str, scope: Scope) -> Binding {
    Binding { key, flag, scope, env: Env::Derived }
}

const DETECT: Scope = Scope::Only(&["detect"]);
const RUN: Scope = Scope::Only(&["run"]);
const INTAKE: Scope = Scope::Only(&["collect http"]);

/// Every key of the file, in the order `config check` prints them.
pub const BINDINGS: &[Binding] = &[
    bind("log.format", "log_format", Scope::Every),
    bind("log.level", "log_level", Scope::Every),
    bind("archive.root", "archive", Scope::Every),
    Binding { key: "archive.signing_key", flag: "signing_key", scope: Scope::Every, env: Env::Named("SEEDWATCH_SIGNING_KEY") },
    bind("keys.fingerprint_key", "fingerprint_key", Scope::Every),
    bind("rules.dir", "rules", Scope::Every),
    bind("rules.locations", "locations", Scope::Every),
    bind("rules.roster", "roster", Scope::Every),
    bind("reports.dir", "reports", Scope::Every),
    Binding { key: "access.file", flag: "access", scope: Scope::Every, env: Env::Named("SEEDWATCH_ACCESS") },
    Binding { key: "access.role", flag: "role", scope: Scope::Every, env: Env::Named("SEEDWATCH_ROLE") },
    bind("kafka.brokers", "brokers", Scope::Every),
    bind("kafka.topic_prefix", "topic_prefix", Scope::Every),
    bind("kafka.partitions", "partitions", Scope::Only(&["detect", "topics create"])),
    Binding { key: "kafka.settings", flag: "settings", scope: Scope::Every, env: Env::None },
    bind("metrics.addr", "metrics_addr", Scope::Every),
    bind("metrics.tls_cert", "metrics_tls_cert", Scope::Every),
    bind("metrics.tls_key", "metrics_tls_key", Scope::Every),
    bind("metrics.client_ca", "metrics_client_ca", Scope::Every),
    bind("metrics.token_file", "metrics_token_file", Scope::Every),
    bind("alertmanager.url", "alertmanager", Scope::Every),
    bind("alertmanager.hold", "alert_hold", Scope::Every),
    bind("run.allowed_lateness", "allowed_lateness", RUN),
    bind("run.max_clock_skew", "max_clock_skew", RUN),
    bind("run.partitions", "partitions", RUN),
    bind("detect.group", "group", DETECT),
    bind("detect.instance_id", "instance_id", DETECT),
    bind("detect.allowed_lateness", "allowed_lateness", DETECT),
    bind("detect.commit_interval", "commit_interval", DETECT),
    bind("detect.idle_after", "idle_after", DETECT),
    bind("detect.max_buffered_rows", "max_buffered_rows", DETECT),
    bind("intake.listen", "listen", INTAKE),
    bind("intake.tokens", "tokens", INTAKE),
    bind("intake.max_body_bytes", "max_body_bytes", INTAKE),
    bind("intake.max_inflate_ratio", "max_inflate_ratio", INTAKE),
    bind("intake.max_lines_per_request", "max_lines_per_request", INTAKE),
    bind("intake.max_dead_letters_per_request", "max_dead_letters_per_request", INTAKE),
    bind("intake.request_timeout", "request_timeout", INTAKE),
    bind("intake.tls_cert", "tls_cert", INTAKE),
    bind("intake.tls_key", "tls_key", INTAKE),
    bind("intake.tls_client_ca", "tls_client_ca", INTAKE),
    bind("collect.format", "format", Scope::Only(&["collect file", "collect stdin"])),
    bind("collect.nginx_map", "nginx_map", Scope::Only(&["collect file", "collect stdin"])),
    bind("collect.checkpoint", "checkpoint", Scope::Only(&["collect file"])),
];

/// Commands no setting applies to: they build their own data set from scratch.
const UNCONFIGURED: [&str; 2] = ["generate", "demo"];

impl Binding {
    fn find(key: &str) -> Option<&'static Binding> {
        BINDINGS.iter().find(|b| b.key == key)
    }

    /// The variable that overrides this setting, if any.
    pub fn env_name(&self) -> Option<String> {
        match self.env {
            Env::Derived => Some(format!("SEEDWATCH_{}", self.key.to_ascii_uppercase().replace('.', "_"))),
            Env::Named(name) => Some(name.to_string()),
            Env::None => None,
        }
    }

    /// Whether the setting applies to the command at `path` (`"collect http"`).
    pub fn covers(&self, path: &str) -> bool {
        let top = path.split(' ').next().unwrap_or_default();
        !UNCONFIGURED.contains(&top)
            && match self.scope {
                Scope::Every => true,
                Scope::Only(paths) => paths.contains(&path),
            }
    }
}

/// A setting with its value(s) as flag text, and where it came from.
#[derive(Debug, Clone)]
pub struct Setting {
    pub binding: &'static Binding,
    pub values: Vec<String>,
    pub origin: Origin,
}

/// The file (if any) with the environment's overrides laid over it.
#[derive(Debug, Default)]
pub struct Config {
    pub file: Option<PathBuf>,
    /// In [`BINDINGS`] order; a key set in neither place is absent.
    pub settings: Vec<Setting>,
}

impl Config {
    /// Read `file` (when given) and lay the `SEEDWATCH_*` variables over it.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut from_file = match file {
            Some(path) => read_file(path)?,
            None => Vec::new(),
        };
        let mut settings = Vec::new();
        for binding in BINDINGS {
            let env = binding.env_name().and_then(|name| std::env::var(&name).ok().filter(|v| !v.is_empty()).map(|v| (name, v)));
            if let Some((name, value)) = env {
                settings.push(Setting { binding, values: vec![value], origin: Origin::Env(name) });
            } else if let Some(at) = from_file.iter().position(|s| std::ptr::eq(s.binding, binding)) {
                settings.push(from_file.swap_remove(at));
            }
        }
        Ok(Config { file: file.map(Path::to_path_buf), settings })
    }

    /// The command line with the settings that apply to its command added as flags, where
    /// the command line (or a variable clap reads itself) did not already give them.
    /// `cli` is the whole command tree; `argv` starts with the program name.
    pub fn apply(&self, cli: &clap::Command, argv: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
        // A first, forgiving parse finds the command and what the command line gives;
        // a command line that does not parse is left for the real parse to explain.
        let Ok(matches) = cli.clone().ignore_errors(true).try_get_matches_from(&argv) else { return Ok(argv) };
        self.apply_parsed(cli, argv, &matches)
    }

    /// [`Config::apply`] with that forgiving parse already made (`matches`, of `argv`).
    pub fn apply_parsed(&self, cli: &clap::Command, argv: Vec<OsString>, matches: &clap::ArgMatches) -> Result<Vec<OsString>, ConfigError> {
        let (path, leaf, leaf_matches) = leaf(cli, matches);
        let mut added: Vec<OsString> = Vec::new();
        for setting in &self.settings {
            if !setting.binding.covers(&path) {
                continue;
            }
            // Global flags (--log-level) are the root's; the rest are the command's own.
            let (command, given) = if leaf.get_arguments().any(|a| a.get_id() == setting.binding.flag) {
                (leaf, leaf_matches)
            } else if cli.get_arguments().any(|a| a.get_id() == setting.binding.flag) {
                (cli, matches)
            } else {
                continue;
            };
            if matches!(given.value_source(setting.binding.flag), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
                continue;
            }
            for value in &setting.values {
                let flag = check_value(command, setting.binding.flag, value).map_err(|message| ConfigError::Value {
                    origin: setting.origin.clone(),
                    key: setting.binding.key.to_string(),
                    message,
                })?;
                // `--flag=value`: a value starting with `-` stays a value.
                added.push(format!("{flag}={value}").into());
            }
        }
        // Before a `--` (after it everything is a positional value); else at the end.
        let mut argv = argv;
        let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
        argv.splice(at..at, added);
        Ok(argv)
    }

    /// Check every setting against the commands it applies to: a value is wrong when no
    /// such command's flag takes it (an `s3://` archive is right for `run`, though
    /// `findings` works on local disk only and says so when it runs).
    pub fn check(&self, cli: &clap::Command) -> Vec<ConfigError> {
        let commands = commands(cli);
        let mut errors = Vec::new();
        for setting in &self.settings {
            let takers: Vec<&clap::Command> = commands
                .iter()
                .filter(|(path, _)| setting.binding.covers(path))
                .filter_map(|(_, c)| [*c, cli].into_iter().find(|c| c.get_arguments().any(|a| a.get_id() == setting.binding.flag)))
                .collect();
            for value in &setting.values {
                let verdicts: Vec<Result<String, String>> = takers.iter().map(|c| check_value(c, setting.binding.flag, value)).collect();
                if !verdicts.iter().any(Result::is_ok)
                    && let Some(Err(message)) = verdicts.into_iter().next()
                {
                    errors.push(ConfigError::Value { origin: setting.origin.clone(), key: setting.binding.key.to_string(), message });
                }
            }
        }
        errors
    }

    /// The effective configuration as YAML that loads again: every key, set ones with
    /// where they came from, unset ones commented out with their default; Kafka secrets
    /// from the environment listed masked.
    pub fn render(&self, cli: &clap::Command) -> String {
        let commands = commands(cli);
        let mut out = String::new();
        match &self.file {
            Some(file) => out.push_str(&format!("# effective configuration: {} and SEEDWATCH_* variables; flags override both\n", file.display())),
            None => out.push_str("# effective configuration: no file, SEEDWATCH_* variables only; flags override them\n"),
        }
        let mut section = "";
        for binding in BINDINGS {
            let (head, key) = binding.key.split_once('.').unwrap_or(("", binding.key));
            if head != section {
                section = head;
                out.push_str(&format!("{head}:\n"));
            }
            match self.settings.iter().find(|s| std::ptr::eq(s.binding, binding)) {
                Some(setting) => {
                    let shown: Vec<String> = setting.values.iter().map(|v| mask_userinfo(v)).collect();
                    out.push_str(&format!("  {key}: {}  # {}\n", yaml_value(binding, &shown), setting.origin));
                }
                None => {
                    let default = commands
                        .iter()
                        .filter(|(path, _)| binding.covers(path))
                        .filter_map(|(_, c)| [*c, cli].into_iter().find_map(|c| c.get_arguments().find(|a| a.get_id() == binding.flag)))
                        .find_map(|a| a.get_default_values().first().map(|v| v.to_string_lossy().into_owned()));
                    match default {
                        Some(default) => out.push_str(&format!("  # {key}: {}  (default)\n", yaml_value(binding, &[default]))),
                        None => out.push_str(&format!("  # {key}:  (unset)\n")),
                    }
                }
            }
            if binding.key == "kafka.settings" {
                for secret in crate::secrets::KAFKA_SECRET_SETTINGS {
                    let env = crate::secrets::kafka_secret_env(secret);
                    let file = format!("{env}_FILE");
                    if std::env::var_os(&file).is_some() {
                        out.push_str(&format!("  # {secret}: \"********\"  (from the file ${file} names)\n"));
                    } else if std::env::var_os(&env).is_some() {
                        out.push_str(&format!("  # {secret}: \"********\"  (${env})\n"));
                    }
                }
            }
        }
        out
    }
}

/// The settings of one file, with the line each is on.
fn read_file(path: &Path) -> Result<Vec<Setting>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    let parsed: ConfigFile = if text.trim().is_empty() {
        ConfigFile::default()
    } else {
        serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse { path: shown.clone(), line: source.location().map_or(0, |l| l.line()), source })?
    };
    // The typed file back as a tree: its leaves are the settings given.
    let tree = serde_yaml::to_value(&parsed).unwrap_or_default();
    let mut settings = Vec::new();
    for (section, keys) in tree.as_mapping().into_iter().flatten() {
        for (key, value) in keys.as_mapping().into_iter().flatten() {
            let (Some(section), Some(key)) = (section.as_str(), key.as_str()) else { continue };
            let name = format!("{section}.{key}");
            let origin = Origin::File { path: shown.clone(), line: line_of(&text, section, key) };
            let values = flag_values(value);
            if values.is_empty() {
                continue;
            }
            let Some(binding) = Binding::find(&name) else {
                // ConfigFile and BINDINGS disagree: a bug the tests below catch.
                return Err(ConfigError::Value { origin, key: name, message: "no flag stands for this key".into() });
            };
            if name == "kafka.settings"
                && let Some(secret) = value.as_mapping().into_iter().flatten().filter_map(|(k, _)| k.as_str()).find(|k| crate::secrets::KAFKA_SECRET_SETTINGS.contains(k))
            {
                return Err(ConfigError::Value {
                    origin,
                    key: format!("{name}.{secret}"),
                    message: format!("secrets do not go in the configuration file; {}", crate::secrets::kafka_secret_advice(secret)),
                });
            }
            settings.push(Setting { binding, values, origin });
        }
    }
    Ok(settings)
}

/// A value as flag text: scalars as they are, lists one per flag, maps as `NAME=VALUE`.
fn flag_values(value: &serde_yaml::Value) -> Vec<String> {
    use serde_yaml::Value;
    match value {
        Value::Null => Vec::new(),
        Value::Bool(b) => vec![b.to_string()],
        Value::Number(n) => vec![n.to_string()],
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(flag_values).collect(),
        Value::Mapping(map) => map.iter().filter_map(|(k, v)| Some(format!("{}={}", k.as_str()?, flag_values(v).first()?))).collect(),
        Value::Tagged(tagged) => flag_values(&tagged.value),
    }
}

/// How `config check` prints a value: JSON, which YAML reads back.
fn yaml_value(binding: &Binding, values: &[String]) -> String {
    if binding.key == "kafka.settings" {
        let map: BTreeMap<&str, &str> = values.iter().filter_map(|v| v.split_once('=')).collect();
        return serde_json::to_string(&map).unwrap_or_default();
    }
    let typed = |v: &String| match v.parse::<u64>() {
        Ok(n) if binding.flag == "partitions" || binding.flag.starts_with("max_") => serde_json::Value::from(n),
        _ => serde_json::Value::String(v.clone()),
    };
    match values {
        [one] => typed(one).to_string(),
        many => serde_json::Value::Array(many.iter().map(typed).collect()).to_string(),
    }
}

/// A URL's password masked (`http://user:********@host`): Alertmanager behind basic auth.
fn mask_userinfo(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else { return value.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, _)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:********@{}", &rest[userinfo.len() + 1..])
        }
        None => value.to_string(),
    }
}

/// The line of `key:` inside the top-level `section:` of a block-style YAML file (0: not
/// found, e.g. in flow style); serde_yaml keeps no positions for values that parse.
fn line_of(text: &str, section: &str, key: &str) -> usize {
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let code = line.split(" #").next().unwrap_or_default();
        if code.trim().is_empty() || code.trim_start().starts_with('#') {
            continue;
        }
        if !code.starts_with([' ', '\t']) {
            inside = code.trim_end().strip_suffix(':').or_else(|| code.split_once(':').map(|(k, _)| k)) == Some(section);
        } else if inside && code.trim_start().split_once(':').is_some_and(|(k, _)| k.trim().trim_matches(['"', '\'']) == key) {
            return i + 1;
        }
    }
    0
}

/// The command at the end of `matches`' subcommand chain: its path, definition and matches.
fn leaf<'a>(cli: &'a clap::Command, matches: &'a clap::ArgMatches) -> (String, &'a clap::Command, &'a clap::ArgMatches) {
    let (mut command, mut given, mut path) = (cli, matches, Vec::new());
    while let Some((name, sub)) = given.subcommand() {
        let Some(next) = command.find_subcommand(name) else { break };
        path.push(name.to_string());
        command = next;
        given = sub;
    }
    (path.join(" "), command, given)
}

/// Every command that runs (no subcommands of its own), with its path.
fn commands(cli: &clap::Command) -> Vec<(String, &clap::Command)> {
    fn walk<'a>(prefix: &str, command: &'a clap::Command, out: &mut Vec<(String, &'a clap::Command)>) {
        for sub in command.get_subcommands() {
            let path = if prefix.is_empty() { sub.get_name().to_string() } else { format!("{prefix} {}", sub.get_name()) };
            if sub.has_subcommands() {
                walk(&path, sub, out);
            } else {
                out.push((path, sub));
            }
        }
    }
    let mut out = Vec::new();
    walk("", cli, &mut out);
    out
}

/// `value` through the parser of `command`'s flag `id`: the flag's `--long` form, or the
/// parser's complaint in one line.
fn check_value(command: &clap::Command, id: &str, value: &str) -> Result<String, String> {
    let arg = command.get_arguments().find(|a| a.get_id() == id).ok_or_else(|| format!("--{id} is not a flag of this command"))?;
    let long = arg.get_long().ok_or_else(|| format!("{id} has no --long form"))?;
    let mut probe = clap::Arg::new("value").long(long.to_string()).value_parser(arg.get_value_parser().clone()).action(clap::ArgAction::Set);
    if let Some(name) = arg.get_value_names().and_then(|names| names.first()) {
        probe = probe.value_name(name.clone());
    }
    clap::Command::new("seedwatch")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from([format!("--{long}={value}")])
        .map(|_| format!("--{long}"))
        .map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("seedwatch")
            .arg(clap::Arg::new("log_level").long("log-level").global(true).default_value("warn"))
            .subcommand(
                clap::Command::new("detect")
                    .arg(clap::Arg::new("brokers").long("brokers").required(true))
                    .arg(clap::Arg::new("group").long("group").default_value("seedwatch-detect"))
                    .arg(clap::Arg::new("partitions").long("partitions").value_parser(clap::value_parser!(i32)))
                    .arg(clap::Arg::new("settings").long("kafka-setting").action(clap::ArgAction::Append)),
            )
            .subcommand(clap::Command::new("run").arg(clap::Arg::new("partitions").long("partitions").value_parser(clap::value_parser!(usize))))
            .subcommand(clap::Command::new("collect").subcommand(clap::Command::new("http").arg(clap::Arg::new("brokers").long("brokers").required(true))))
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seedwatch.yaml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn settings_become_flags_of_the_commands_they_apply_to_and_the_command_line_wins() {
        let (_dir, path) = write("kafka:\n  brokers: k:9092\n  partitions: 8\n  settings:\n    security.protocol: SSL\ndetect:\n  group: g1\nlog:\n  level: info\n");
        let config = Config::load(Some(&path)).expect("loads");
        let out = config.apply(&cli(), argv(&["seedwatch", "detect", "--group", "mine"])).expect("applies");
        let words: Vec<&str> = out.iter().filter_map(|w| w.to_str()).collect();
        assert_eq!(words, ["seedwatch", "detect", "--group", "mine", "--log-level=info", "--brokers=k:9092", "--partitions=8", "--kafka-setting=security.protocol=SSL"]);
        let m = cli().try_get_matches_from(out).expect("parses");
        let (_, detect) = m.subcommand().expect("detect");
        assert_eq!(detect.get_one::<String>("group").map(String::as_str), Some("mine"));
        // kafka.partitions is not run's --partitions (in-process partitions).
        let out = config.apply(&cli(), argv(&["seedwatch", "run"])).expect("applies");
        assert_eq!(out, argv(&["seedwatch", "run", "--log-level=info"]));
        // Before `--`, never after it.
        let out = config.apply(&cli(), argv(&["seedwatch", "collect", "http", "--", "x"])).expect("applies");
        assert_eq!(out, argv(&["seedwatch", "collect", "http", "--log-level=info", "--brokers=k:9092", "--", "x"]));
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let (_dir, path) = write("# seedwatch\nkafka:\n  brokers: k:9092\n  partitons: 8\n");
        let err = Config::load(Some(&path)).expect_err("unknown key").to_string();
        assert!(err.starts_with(&format!("{}:4: kafka: unknown field `partitons`", path.display())), "{err}");

        let (_dir, path) = write("kafka:\n  brokers: k:9092\n\n  partitions: many\n");
        let err = Config::load(Some(&path)).expect_err("wrong type").to_string();
        assert!(err.starts_with(&format!("{}:4: kafka.partitions: invalid type", path.display())), "{err}");

        let (_dir, path) = write("kafka:\n  brokers: k:9092\n  settings:\n    sasl.password: hunter2\n");
        let err = Config::load(Some(&path)).expect_err("secret").to_string();
        assert!(err.contains(":3: kafka.settings.sasl.password: secrets do not go in the configuration file; set SEEDWATCH_KAFKA_SASL_PASSWORD"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_value_the_flag_refuses_is_refused_at_its_line() {
        let (_dir, path) = write("kafka:\n  brokers: k:9092\ndetect:\n  group: g\nrun:\n  partitions: 4000000000000000000000\n");
        let err = Config::load(Some(&path)).expect_err("too big for u32").to_string();
        assert!(err.contains(":6:") || err.contains("run.partitions"), "{err}");
        let mut config = Config::load(None).expect("empty");
        let binding = Binding::find("kafka.partitions").expect("binding");
        config.settings.push(Setting { binding, values: vec!["-x".into()], origin: Origin::File { path: "f.yaml".into(), line: 9 } });
        let err = config.apply(&cli(), argv(&["seedwatch", "detect", "--brokers", "b"])).expect_err("refused").to_string();
        assert!(err.starts_with("f.yaml:9: kafka.partitions: invalid value '-x' for '--partitions"), "{err}");
        assert_eq!(config.check(&cli()).len(), 1);
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(mask_userinfo("https://soc:hunter2@am.example:9093/x@y"), "https://soc:********@am.example:9093/x@y");
        assert_eq!(mask_userinfo("http://am:9093"), "http://am:9093");
        assert_eq!(mask_userinfo("kafka:9092"), "kafka:9092");
    }

    #[test]
    fn line_of_finds_keys_in_their_section_only() {
        let text = "# c\nkafka:\n  # brokers: no\n  brokers: a  # yes\ndetect:\n  group: g\nrun:\n  partitions: 2\ndetect2:\n  partitions: 3\n";
        assert_eq!(line_of(text, "kafka", "brokers"), 4);
        assert_eq!(line_of(text, "run", "partitions"), 8);
        assert_eq!(line_of(text, "detect", "partitions"), 0);
    }

    /// The file's shape, BINDINGS and the shipped example name the same keys.
    #[test]
    fn the_example_sets_every_key_and_every_key_has_a_binding() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/seedwatch.example.yaml");
        let text = std::fs::read_to_string(&example).expect("example");
        // Uncomment every `#key: value` line (prose comments are `# text`): the example
        // documents every key.
        let full: String = text
            .lines()
            .map(|l| {
                let body = l.trim_start();
                let indent = &l[..l.len() - body.len()];
                match body.strip_prefix('#') {
                    Some(rest) if rest.split_once(':').is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')) => format!("{indent}{rest}\n"),
                    _ => format!("{l}\n"),
                }
            })
            .collect();
        let (_dir, path) = write(&full);
        let config = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
        let set: Vec<&str> = config.settings.iter().map(|s| s.binding.key).collect();
        let all: Vec<&str> = BINDINGS.iter().map(|b| b.key).collect();
        assert_eq!(set, all, "every key in config/seedwatch.example.yaml, in BINDINGS order");
        for setting in &config.settings {
            assert_ne!(setting.origin, Origin::File { path: path.display().to_string(), line: 0 }, "{} found on its line", setting.binding.key);
        }
    }
}
