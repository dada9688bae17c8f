//! Rule files: typed configuration, validated and compiled once at load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::logical_expr::ExprSchemable;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use seedwatch_schemas::arrow_schema::event_schema;
use seedwatch_schemas::{Family, Severity};
use serde::Deserialize;

use crate::exception::CompiledException;
use crate::DetectError;

/// What kind of evaluation a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleType {
    /// Every event passing the filter is a finding.
    Match,
    /// N events (or distinct values) per group key within a sliding window.
    Threshold,
    /// An event outside its location's business hours (locations.csv, local time, DST-aware).
    Schedule,
    /// An event joined against a reference table (roster.csv): use by a terminated user.
    Reference,
    /// Nothing passing the filter for a key for longer than a limit (event time).
    Absence,
    /// A value of `field` not seen for the key within `history` (after a learning period).
    NewValue,
    /// Volume in the current hour at least `ratio` times the key's normal level for that hour.
    Baseline,
    /// A gauge (`field`, e.g. pending transactions) rising over its last `points`
    /// readings within `window` and ending at or above `above`.
    Trend,
}

impl RuleType {
    /// As written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Self::Match => "match",
            Self::Threshold => "threshold",
            Self::Schedule => "schedule",
            Self::Reference => "reference",
            Self::Absence => "absence",
            Self::NewValue => "new_value",
            Self::Baseline => "baseline",
            Self::Trend => "trend",
        }
    }
}

pub use crate::kinds::absence::{Absence, LadderStep, Limit, LimitConfig};
pub use crate::kinds::baseline::Baseline;
pub use crate::kinds::new_value::NewValue;
pub use crate::kinds::reference::ReferenceConfig;
pub use crate::kinds::threshold::ThresholdConfig;
pub use crate::kinds::trend::Trend;

/// Raise a finding's severity where a policy flag holds for its state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalateConfig {
    /// A boolean policy value, e.g. `mfa_required`.
    pub policy: String,
    /// The severity where it is true.
    pub severity: Severity,
}

/// A per-row check applied after the SQL filter, for rules that need reference data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCondition {
    /// Nothing beyond the filter.
    None,
    /// The event's local time is outside its location's business hours.
    OutsideHours,
    /// The user in this column was terminated at or before the event.
    TerminatedUser {
        /// Column index of the user.
        column: usize,
    },
}

/// The fields every rule has, as written in YAML. The fields of its `type` are read by
/// that kind's module ([`crate::kinds`]); a key neither knows is an error.
#[derive(Debug, Clone, Deserialize)]
pub struct RuleConfig {
    /// Stable id, `<family>.<name>` (part of the interface: alerts and SQL use it).
    pub id: String,
    /// One-line human title.
    pub title: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: Severity,
    /// The family whose events the rule reads.
    pub family: String,
    /// The kind of evaluation.
    #[serde(rename = "type")]
    pub rule_type: RuleType,
    /// SQL boolean expression over the family's columns; `true` when omitted.
    #[serde(default)]
    pub filter: Option<String>,
    /// Columns that form the group key (`license` is always added).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Column naming what the finding is about; defaults to the last `group_by` column.
    /// Where it is empty in an event (an admin acting on their own account), the actor is.
    #[serde(default)]
    pub subject: Option<String>,
    /// Column naming who acted; defaults to `actor` for audit rules and `user` for login
    /// and API rules (sync events name no one).
    #[serde(default)]
    pub actor: Option<String>,
    /// How long repeats update the same finding; defaults to the window, or 1h.
    #[serde(default)]
    pub suppress: Option<String>,
    /// Free-form labels (seed sections, tactics).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Exceptions to this rule alone (as in `exceptions.yaml`, without `rules`).
    #[serde(default)]
    pub except: Vec<crate::exception::ExceptionConfig>,
    /// Longer explanation for analysts.
    #[serde(default)]
    pub description: Option<String>,
    /// Raise the severity where a policy flag holds.
    #[serde(default)]
    pub escalate: Option<EscalateConfig>,
}

/// A rule ready to run: filter compiled, durations parsed, columns resolved.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Rule id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Severity of its findings.
    pub severity: Severity,
    /// Family it reads.
    pub family: Family,
    /// Match or threshold.
    pub rule_type: RuleType,
    /// The filter, compiled against the family schema.
    pub filter: Arc<dyn PhysicalExpr>,
    /// The filter's SQL text, for warm-up queries and for display.
    pub filter_sql: String,
    /// Exceptions: rows passing the filter that one of these holds for are dropped (and counted).
    pub exceptions: Vec<CompiledException>,
    /// Group key column indices (license first).
    pub group_by: Vec<usize>,
    /// Subject column index.
    pub subject: usize,
    /// Actor column index, when the family's events name who acted.
    pub actor: Option<usize>,
    /// Threshold per system (`None` key: all systems).
    pub threshold: ThresholdConfig,
    /// Window length in ms (0 for match rules).
    pub window_ms: i64,
    /// Distinct-count column index.
    pub distinct: Option<usize>,
    /// Suppression window in ms.
    pub suppress_ms: i64,
    /// Labels.
    pub tags: Vec<String>,
    /// Check against reference data after the filter.
    pub condition: RowCondition,
    /// Absence parameters (absence rules only).
    pub absence: Option<Absence>,
    /// New-value parameters (new_value rules only).
    pub new_value: Option<NewValue>,
    /// Baseline parameters (baseline rules only).
    pub baseline: Option<Baseline>,
    /// Trend parameters (trend rules only).
    pub trend: Option<Trend>,
    /// (policy flag, severity) escalation.
    pub escalate: Option<(String, Severity)>,
    /// Where the rule came from.
    pub file: PathBuf,
}

impl CompiledRule {
    /// SQL of the events the rule evaluates: its filter, less its exceptions.
    pub fn evaluated_sql(&self) -> String {
        if self.exceptions.is_empty() {
            return self.filter_sql.clone();
        }
        let except: Vec<String> = self.exceptions.iter().map(|e| format!("({})", e.sql)).collect();
        format!("({}) AND NOT COALESCE({}, false)", self.filter_sql, except.join(" OR "))
    }

    /// Events (or distinct values) needed for `system`; `None` means the rule never fires there.
    pub fn threshold_for(&self, system: &str, policy: &crate::policy::Policy) -> Option<u32> {
        match &self.threshold {
            ThresholdConfig::All(n) => Some(*n),
            ThresholdConfig::Policy { policy: name } => policy.system_number(name, system),
            ThresholdConfig::PerSystem(m) => m.get(system).copied(),
        }
    }
}

/// The 1-based line on which `key:` first appears in a YAML text (0 if absent).
pub(crate) fn line_of(text: &str, key: &str) -> usize {
    let needle = format!("{key}:");
    text.lines()
        .position(|l| l.trim_start().trim_start_matches("- ").starts_with(&needle))
        .map_or(0, |i| i + 1)
}

/// Compile a SQL boolean expression over a family's columns.
pub(crate) fn compile_filter(ctx: &SessionContext, schema: &datafusion::arrow::datatypes::SchemaRef, sql: &str) -> Result<Arc<dyn PhysicalExpr>, String> {
    let flat = |e: datafusion::error::DataFusionError| e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(flat)?;
    let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(flat)?;
    let data_type = expr.get_type(&df_schema).map_err(flat)?;
    if data_type != DataType::Boolean {
        return Err(format!("must be a boolean expression, this one is {data_type}"));
    }
    ctx.create_physical_expr(expr, &df_schema).map_err(flat)
}

/// A serde_yaml error as a configuration error at its line.
pub(crate) fn yaml_error(file: &str, e: &serde_yaml::Error) -> DetectError {
    DetectError::Config { file: file.to_string(), line: e.location().map_or(0, |l| l.line()), message: e.to_string() }
}

/// Parse and compile one rule file's text.
pub fn compile_rule(file: &Path, text: &str, ctx: &SessionContext) -> Result<CompiledRule, DetectError> {
    let name = file.display().to_string();
    let err = |key: &str, message: String| DetectError::Config { file: name.clone(), line: line_of(text, key), message };
    let config: RuleConfig = serde_yaml::from_str(text).map_err(|e| yaml_error(&name, &e))?;
    let family: Family = config
        .family
        .parse()
        .map_err(|_| err("family", format!("field `family`: unknown family `{}` (expected login, api, sync or audit)", config.family)))?;
    if !config.id.starts_with(&format!("{}.", family.as_str())) {
        return Err(err("id", format!("field `id`: `{}` must start with `{}.`", config.id, family.as_str())));
    }
    let schema = event_schema(family);
    let cx = crate::kinds::Context { family, schema: &schema, sql: ctx, err: &err };
    let (parts, kind_fields) = crate::kinds::compile(config.rule_type, &name, text, &cx)?;
    let mapping: serde_yaml::Mapping = serde_yaml::from_str(text).map_err(|e| yaml_error(&name, &e))?;
    let common = crate::kinds::struct_fields::<RuleConfig>();
    for key in mapping.keys().filter_map(|k| k.as_str()) {
        if !common.contains(&key) && !kind_fields.contains(&key) {
            let theirs = if kind_fields.is_empty() { "none of its own".to_string() } else { kind_fields.join(", ") };
            return Err(err(key, format!("field `{key}`: unknown for a `{}` rule (its fields: {theirs}; every rule's: {})", config.rule_type.name(), common.join(", "))));
        }
    }

    let mut group_by = vec![cx.column("group_by", "license")?];
    for col in &config.group_by {
        let i = cx.column("group_by", col)?;
        if !group_by.contains(&i) {
            group_by.push(i);
        }
    }
    let subject = match &config.subject {
        Some(col) => cx.column("subject", col)?,
        None => *group_by.last().unwrap_or(&0),
    };
    let actor = match (&config.actor, family) {
        (Some(col), _) => Some(cx.column("actor", col)?),
        (None, Family::Audit) => schema.index_of("actor").ok(),
        (None, Family::Login | Family::Api) => schema.index_of("user").ok(),
        (None, Family::Sync) => None,
    };
    let suppress = cx.duration("suppress", &config.suppress)?;
    let escalate = match &config.escalate {
        Some(e) if !crate::policy::FLAG_NAMES.contains(&e.policy.as_str()) => {
            return Err(err("escalate", format!("field `escalate`: unknown policy flag `{}` (known: {})", e.policy, crate::policy::FLAG_NAMES.join(", "))));
        }
        Some(e) => Some((e.policy.clone(), e.severity)),
        None => None,
    };
    let sql = config.filter.clone().unwrap_or_else(|| "true".into());
    // DataFusion messages can span lines; compile_filter flattens them, as a configuration error is one line.
    let filter = compile_filter(ctx, &schema, &sql).map_err(|m| err("filter", format!("field `filter`: {m}")))?;

    let mut rule = CompiledRule {
        id: config.id,
        title: config.title,
        severity: config.severity,
        family,
        rule_type: config.rule_type,
        filter,
        filter_sql: sql,
        exceptions: Vec::new(),
        group_by,
        subject,
        actor,
        threshold: parts.threshold,
        window_ms: parts.window_ms,
        distinct: parts.distinct,
        suppress_ms: suppress.or((parts.window_ms > 0).then_some(parts.window_ms)).unwrap_or(3_600_000),
        tags: config.tags,
        condition: parts.condition,
        absence: parts.absence,
        new_value: parts.new_value,
        baseline: parts.baseline,
        trend: parts.trend,
        escalate,
        file: file.to_path_buf(),
    };
    for except in &config.except {
        let line = crate::exception::id_line(text, &except.id);
        if !except.rules.is_empty() {
            return Err(DetectError::Config { file: name.clone(), line, message: format!("field `except`: exception `{}` is on this rule; `rules` goes in exceptions.yaml", except.id) });
        }
        attach_exception(&mut rule, except, &name, line, true, ctx)?;
    }
    Ok(rule)
}

/// Compile `config` for `rule` and add it; `Ok(false)` when it does not apply (a pattern
/// matched an absence rule, or a family without one of its columns). Where the rule was
/// `named`, that is an error instead.
fn attach_exception(rule: &mut CompiledRule, config: &crate::exception::ExceptionConfig, file: &str, line: usize, named: bool, ctx: &SessionContext) -> Result<bool, DetectError> {
    let err = |message: String| DetectError::Config { file: file.to_string(), line, message };
    if rule.absence.is_some() {
        // Excepting the events that prove a key alive would raise silences, not quiet them.
        return if named { Err(err(format!("exception `{}`: `{}` is an absence rule; exceptions apply to the events a rule fires on (tune its limit or ladder instead)", config.id, rule.id))) } else { Ok(false) };
    }
    let schema = event_schema(rule.family);
    let actor = rule.actor.map(|i| schema.field(i).name().as_str());
    let sql = match crate::exception::predicate_sql(config, |c| schema.index_of(c).is_ok(), actor) {
        Ok(Some(sql)) => sql,
        Ok(None) if named => return Err(err(format!("exception `{}`: the {} table of rule `{}` lacks a column it names", config.id, rule.family, rule.id))),
        Ok(None) => return Ok(false),
        Err((field, message)) => return Err(err(format!("field `{field}` of exception `{}`: {message}", config.id))),
    };
    let predicate = compile_filter(ctx, &schema, &sql).map_err(|m| err(format!("field `where` of exception `{}`: {m}", config.id)))?;
    let expires_ms = crate::exception::parse_end(&config.expires).unwrap_or(i64::MAX);
    rule.exceptions.push(CompiledException {
        id: config.id.as_str().into(),
        origin: format!("{file}:{line}"),
        reason: config.reason.clone(),
        owner: config.owner.clone(),
        expires_ms,
        sql,
        predicate,
    });
    Ok(true)
}

/// A session that knows seedwatch's SQL functions, for compiling filters.
pub fn rule_context() -> SessionContext {
    let ctx = SessionContext::new();
    seedwatch_schemas::sql_functions::register(&ctx);
    ctx
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DetectError> {
    let io = |e: std::io::Error| DetectError::Config { file: dir.display().to_string(), line: 0, message: e.to_string() };
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(io)?.collect::<Result<_, _>>().map_err(io)?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.file_stem().is_some_and(|s| s == "policy" || s == "exceptions") {
            // The policy table and the exceptions live beside the rules but are not rules.
            continue;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
    Ok(())
}

/// Load and compile every `*.yaml` rule under `dir` (recursively), sorted by id.
pub fn load_rules(dir: &Path) -> Result<Vec<CompiledRule>, DetectError> {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files)?;
    if files.is_empty() {
        return Err(DetectError::Config { file: dir.display().to_string(), line: 0, message: "no rule files (*.yaml) found".into() });
    }
    let ctx = rule_context();
    let mut rules = Vec::with_capacity(files.len());
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| DetectError::Config { file: file.display().to_string(), line: 0, message: e.to_string() })?;
        let rule = compile_rule(&file, &text, &ctx)?;
        if let Some(other) = seen.insert(rule.id.clone(), file.clone()) {
            return Err(DetectError::Config {
                file: file.display().to_string(),
                line: line_of(&text, "id"),
                message: format!("field `id`: `{}` is already defined in {}", rule.id, other.display()),
            });
        }
        rules.push(rule);
    }
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    let exceptions = dir.join("exceptions.yaml");
    if exceptions.is_file() {
        attach_exceptions_file(&exceptions, &mut rules, &ctx)?;
    }
    Ok(rules)
}

/// Attach each exception of `exceptions.yaml` to the rules its `rules` patterns cover.
fn attach_exceptions_file(path: &Path, rules: &mut [CompiledRule], ctx: &SessionContext) -> Result<(), DetectError> {
    let file = path.display().to_string();
    let configs = crate::exception::load_file(path).map_err(|(line, message)| DetectError::Config { file: file.clone(), line, message })?;
    for (config, line) in configs {
        let mut applied = 0;
        for pattern in &config.rules {
            let named = !pattern.ends_with('*');
            let mut covered = 0;
            for rule in rules.iter_mut().filter(|r| crate::exception::covers(pattern, &r.id)) {
                covered += 1;
                if rule.exceptions.iter().any(|e| *e.id == *config.id) {
                    continue;
                }
                applied += usize::from(attach_exception(rule, &config, &file, line, named, ctx)?);
            }
            if covered == 0 {
                return Err(DetectError::Config { file, line, message: format!("field `rules` of exception `{}`: `{pattern}` matches no rule", config.id) });
            }
        }
        if applied == 0 {
            return Err(DetectError::Config { file, line, message: format!("exception `{}` applies to none of its rules (their tables lack a column it names)", config.id) });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<CompiledRule, String> {
        compile_rule(Path::new("r.yaml"), text, &rule_context()).map_err(|e| e.to_string())
    }

    const GOOD: &str = "id: login.failed_burst\ntitle: t\nseverity: high\nfamily: login\ntype: threshold\nfilter: \"outcome = 'failure'\"\ngroup_by: [user]\nthreshold: 3\nwindow: 1h\n";

    #[test]
    fn compiles_a_threshold_rule_with_license_in_the_key() {
        let rule = compile(GOOD).unwrap_or_else(|e| panic!("{e}"));
        let schema = event_schema(Family::Login);
        let names: Vec<&str> = rule.group_by.iter().map(|i| schema.field(*i).name().as_str()).collect();
        assert_eq!(names, ["license", "user"]);
        let p = crate::policy::Policy::default();
        assert_eq!((rule.window_ms, rule.suppress_ms, rule.threshold_for("metrc", &p)), (3_600_000, 3_600_000, Some(3)));
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let cases = [
            (GOOD.replace("window: 1h", "window: 1h\nwindwo: 2h"), "r.yaml:10", "windwo"),
            (GOOD.replace("outcome = 'failure'", "outcome = = 'failure'"), "r.yaml:6", "filter"),
            (GOOD.replace("outcome = 'failure'", "no_such_column = 1"), "r.yaml:6", "filter"),
            (GOOD.replace("outcome = 'failure'", "status"), "r.yaml:6", "filter"),
            (GOOD.replace("group_by: [user]", "group_by: [usr]"), "r.yaml:7", "group_by"),
            (GOOD.replace("window: 1h", "window: soon"), "r.yaml:9", "window"),
            (GOOD.replace("severity: high", "severity: scary"), "r.yaml:3", "severity"),
            (GOOD.replace("threshold: 3", "threshold: 0"), "r.yaml:8", "threshold"),
            (GOOD.replace("id: login.", "id: api."), "r.yaml:1", "id"),
        ];
        for (text, location, field) in cases {
            let e = compile(&text).err().unwrap_or_else(|| panic!("accepted:\n{text}"));
            assert!(e.starts_with(location) && e.contains(field), "{e}");
        }
    }

    #[test]
    fn trend_rules_need_an_integer_gauge_a_level_and_a_window() {
        let good = "id: sync.backlog\ntitle: t\nseverity: high\nfamily: sync\ntype: trend\nfield: pending\nabove: 40\npoints: 4\nwindow: 3h\n";
        let rule = compile(good).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((rule.trend.map(|t| (t.above, t.points)), rule.window_ms), (Some((40, 4)), 3 * 3_600_000));
        let cases = [
            (good.replace("field: pending\n", ""), "r.yaml:5", "field"),
            (good.replace("field: pending", "field: integration"), "r.yaml:6", "integer"),
            (good.replace("above: 40\n", ""), "r.yaml:5", "above"),
            (good.replace("points: 4", "points: 1"), "r.yaml:8", "points"),
            (good.replace("points: 4", "points: 4\nsustained: 5"), "r.yaml:9", "sustained"),
            (good.replace("window: 3h\n", ""), "r.yaml:5", "window"),
            (good.replace("type: trend", "type: match"), "r.yaml:6", "field"),
        ];
        for (text, location, word) in cases {
            let e = compile(&text).err().unwrap_or_else(|| panic!("accepted:\n{text}"));
            assert!(e.starts_with(location) && e.contains(word), "{e}");
        }
    }

    #[test]
    fn each_kind_reads_its_own_fields_and_names_a_foreign_one() {
        let base = "id: api.k\ntitle: t\nseverity: low\nfamily: api\n";
        let kinds = [
            ("match", ""),
            ("threshold", "threshold: 3\nwindow: 1h\n"),
            ("schedule", ""),
            ("reference", "reference: {table: roster, condition: terminated}\n"),
            ("absence", "limit: 4h\n"),
            ("new_value", "field: src_ip\n"),
            ("baseline", "measure: records\n"),
            ("trend", "field: records\nabove: 10\nwindow: 1h\n"),
        ];
        for (kind, fields) in kinds {
            let text = format!("{base}type: {kind}\n{fields}");
            let rule = compile(&text).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(rule.rule_type.name(), kind);
            // A field of another kind: one line, at its line, naming it and the kind.
            let foreign = if kind == "baseline" { "learning: 7d" } else { "min_samples: 3" };
            let e = compile(&format!("{text}{foreign}\n")).err().unwrap_or_default();
            let line = text.lines().count() + 1;
            assert!(e.starts_with(&format!("r.yaml:{line}:")) && e.contains(&format!("unknown for a `{kind}` rule")), "{kind}: {e}");
        }
        assert_eq!(crate::kinds::struct_fields::<crate::kinds::threshold::Config>(), ["threshold", "window", "distinct"]);
    }

    #[test]
    fn per_system_thresholds_and_exceptions() {
        let text = GOOD.replace("threshold: 3", "threshold: {metrc: 10, biotrack: 5}")
            + "except:\n  - id: svc\n    reason: the sync robot\n    owner: it\n    expires: 2027-01-01\n    users: [\"svc-o'brien\"]\n";
        let rule = compile(&text).unwrap_or_else(|e| panic!("{e}"));
        let p = crate::policy::Policy::default();
        assert_eq!((rule.threshold_for("metrc", &p), rule.threshold_for("biotrack", &p), rule.threshold_for("x", &p)), (Some(10), Some(5), None));
        assert!(rule.exceptions[0].sql.contains("user IN ('svc-o''brien')"), "{}", rule.exceptions[0].sql);
        assert!(rule.evaluated_sql().contains("AND NOT COALESCE("), "{}", rule.evaluated_sql());
        let e = compile(&text.replace("    users:", "    rules: ['*']\n    users:")).err().unwrap_or_default();
        assert!(e.starts_with("r.yaml:11") && e.contains("`rules` goes in exceptions.yaml"), "{e}");
        let e = compile(&text.replace("    users:", "    keys: [k]\n    users:")).err().unwrap_or_default();
        assert!(e.starts_with("r.yaml:11") && e.contains("lacks a column"), "{e}");
    }
}
