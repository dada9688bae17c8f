//! The per-state and per-system policy table (`rules/policy.yaml`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::duration::parse_duration_ms;
use crate::DetectError;
use seedwatch_schemas::retention::Retention;

/// One state's entries; absent ones fall back to `defaults`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatePolicyConfig {
    /// Required sync interval (`0s` for real-time).
    pub sync_interval: Option<String>,
    /// Grace period on top of the interval before a late sync is a violation.
    pub sync_grace: Option<String>,
    /// Whether the state requires MFA for every user.
    pub mfa_required: Option<bool>,
    /// API key rotation period in days.
    pub key_rotation_days: Option<u32>,
    /// Maximum session timeout.
    pub session_timeout: Option<String>,
    /// Baseline rules' parameters for this state's keys.
    #[serde(default)]
    pub baseline: Option<BaselineOverride>,
}

/// Baseline rules' parameters for the keys of one state or one system, in place of the
/// rule's own: a state whose shops swing more, a system whose integrations batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineOverride {
    /// Observed / normal ratio that fires.
    pub ratio: Option<f64>,
    /// Smallest hourly volume that can fire.
    pub min_volume: Option<f64>,
    /// Least normal level, as a share of the key's typical busiest hour.
    pub floor_of_peak: Option<f64>,
    /// Robust deviations above normal also required.
    pub min_deviation: Option<f64>,
}

impl BaselineOverride {
    fn apply(&self, b: &mut crate::rule::Baseline) {
        b.ratio = self.ratio.unwrap_or(b.ratio);
        b.min_volume = self.min_volume.unwrap_or(b.min_volume);
        b.floor_of_peak = self.floor_of_peak.unwrap_or(b.floor_of_peak);
        b.min_deviation = self.min_deviation.unwrap_or(b.min_deviation);
    }

    /// The first field out of range, with why.
    fn invalid(&self) -> Option<(&'static str, &'static str)> {
        if self.ratio.is_some_and(|r| !(r > 1.0)) {
            return Some(("ratio", "must be greater than 1"));
        }
        if self.floor_of_peak.is_some_and(|f| !(0.0..=1.0).contains(&f)) {
            return Some(("floor_of_peak", "must be between 0 and 1"));
        }
        if self.min_volume.is_some_and(|v| !(v >= 0.0)) || self.min_deviation.is_some_and(|v| !(v >= 0.0)) {
            return Some(("min_volume", "`min_volume` and `min_deviation` must not be negative"));
        }
        None
    }
}

/// One system's entries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemPolicyConfig {
    /// Failed API calls per hour before alerting.
    pub failed_api_per_hour: Option<u32>,
    /// Baseline rules' parameters for this system's keys (a state's own win).
    #[serde(default)]
    pub baseline: Option<BaselineOverride>,
}

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Values for states not listed and entries not given.
    pub defaults: StatePolicyConfig,
    /// Per tracking system.
    #[serde(default)]
    pub systems: BTreeMap<String, SystemPolicyConfig>,
    /// Per two-letter state code.
    #[serde(default)]
    pub states: BTreeMap<String, StatePolicyConfig>,
    /// How long each archive table is kept (`seedwatch archive prune`).
    #[serde(default)]
    pub retention: seedwatch_schemas::retention::RetentionConfig,
    /// Bounds on the detector's memory per rule.
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
}

/// A state's resolved policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatePolicy {
    /// Sync interval in ms.
    pub sync_interval_ms: i64,
    /// Grace in ms.
    pub sync_grace_ms: i64,
    /// MFA required.
    pub mfa_required: bool,
    /// Key rotation days.
    pub key_rotation_days: u32,
    /// Session timeout in ms.
    pub session_timeout_ms: i64,
}

/// The resolved table.
#[derive(Debug, Clone)]
pub struct Policy {
    defaults: StatePolicy,
    states: BTreeMap<String, StatePolicy>,
    systems: BTreeMap<String, SystemPolicyConfig>,
    /// `defaults.baseline`, then per state.
    baseline_defaults: Option<BaselineOverride>,
    baseline_states: BTreeMap<String, BaselineOverride>,
    retention: Retention,
    limits: crate::limits::StateLimits,
}

/// Numeric policy values a rule can refer to by name.
pub const NUMERIC_NAMES: &[&str] = &["sync_limit", "key_rotation"];
/// Per-system numbers a rule can use as a threshold.
pub const SYSTEM_NUMBER_NAMES: &[&str] = &["failed_api_per_hour"];
/// Boolean policy values a rule can refer to by name.
pub const FLAG_NAMES: &[&str] = &["mfa_required"];

impl Default for Policy {
    fn default() -> Self {
        let defaults = StatePolicy {
            sync_interval_ms: 86_400_000,
            sync_grace_ms: 0,
            mfa_required: false,
            key_rotation_days: 90,
            session_timeout_ms: 1_800_000,
        };
        Self { defaults, states: BTreeMap::new(), systems: BTreeMap::new(), baseline_defaults: None, baseline_states: BTreeMap::new(), retention: Retention::default(), limits: crate::limits::StateLimits::default() }
    }
}

impl Policy {
    /// The policy for `state` (defaults when the state is not listed).
    pub fn state(&self, state: &str) -> StatePolicy {
        self.states.get(state).copied().unwrap_or(self.defaults)
    }

    /// A numeric value by name for a state, in ms (`sync_limit` = interval + grace).
    pub fn numeric_ms(&self, name: &str, state: &str) -> Option<i64> {
        let p = self.state(state);
        match name {
            "sync_limit" => Some(p.sync_interval_ms + p.sync_grace_ms),
            "key_rotation" => Some(i64::from(p.key_rotation_days) * 86_400_000),
            _ => None,
        }
    }

    /// A boolean value by name for a state.
    pub fn flag(&self, name: &str, state: &str) -> Option<bool> {
        match name {
            "mfa_required" => Some(self.state(state).mfa_required),
            _ => None,
        }
    }

    /// The failed-API threshold of a system, when set.
    pub fn failed_api_per_hour(&self, system: &str) -> Option<u32> {
        self.systems.get(system).and_then(|s| s.failed_api_per_hour)
    }

    /// How long each archive table is kept.
    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// Bounds on what the detector remembers per rule.
    pub fn limits(&self) -> crate::limits::StateLimits {
        self.limits
    }

    /// The same policy with other limits (tests, benchmarks).
    pub fn with_limits(mut self, limits: crate::limits::StateLimits) -> Self {
        self.limits = limits;
        self
    }

    /// A baseline rule's parameters for keys of `state` on `system`: the rule's own, then
    /// `defaults.baseline`, the system's, the state's (the most specific wins).
    pub fn baseline(&self, rule: &crate::rule::Baseline, state: &str, system: &str) -> crate::rule::Baseline {
        let mut b = rule.clone();
        let layers = [self.baseline_defaults.as_ref(), self.systems.get(system).and_then(|s| s.baseline.as_ref()), self.baseline_states.get(state)];
        for layer in layers.into_iter().flatten() {
            layer.apply(&mut b);
        }
        b
    }

    /// A per-system number by name (see [`SYSTEM_NUMBER_NAMES`]).
    pub fn system_number(&self, name: &str, system: &str) -> Option<u32> {
        match name {
            "failed_api_per_hour" => self.failed_api_per_hour(system),
            _ => None,
        }
    }
}

fn resolve(file: &str, text: &str, key: &str, base: StatePolicy, c: &StatePolicyConfig) -> Result<StatePolicy, DetectError> {
    let line = crate::rule::line_of(text, key);
    let ms = |field: &str, v: &Option<String>, fallback: i64| -> Result<i64, DetectError> {
        v.as_deref().map_or(Ok(fallback), |t| {
            parse_duration_ms(t).map_err(|m| DetectError::Config { file: file.to_string(), line, message: format!("{key}: field `{field}`: {m}") })
        })
    };
    Ok(StatePolicy {
        sync_interval_ms: ms("sync_interval", &c.sync_interval, base.sync_interval_ms)?,
        sync_grace_ms: ms("sync_grace", &c.sync_grace, base.sync_grace_ms)?,
        mfa_required: c.mfa_required.unwrap_or(base.mfa_required),
        key_rotation_days: c.key_rotation_days.unwrap_or(base.key_rotation_days),
        session_timeout_ms: ms("session_timeout", &c.session_timeout, base.session_timeout_ms)?,
    })
}

/// Load `policy.yaml`; a missing file gives the built-in defaults.
pub fn load_policy(path: &Path) -> Result<Policy, DetectError> {
    if !path.exists() {
        return Ok(Policy::default());
    }
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| DetectError::Config { file: file.clone(), line: 0, message: e.to_string() })?;
    let config: PolicyConfig = serde_yaml::from_str(&text).map_err(|e| DetectError::Config {
        file: file.clone(),
        line: e.location().map_or(0, |l| l.line()),
        message: e.to_string(),
    })?;
    let defaults = resolve(&file, &text, "defaults", Policy::default().defaults, &config.defaults)?;
    let mut states = BTreeMap::new();
    for (code, c) in &config.states {
        if !seedwatch_schemas::STATE_CODES.contains(&code.as_str()) {
            let line = crate::rule::line_of(&text, code);
            return Err(DetectError::Config { file, line, message: format!("states: `{code}` is not a state code") });
        }
        states.insert(code.clone(), resolve(&file, &text, code, defaults, c)?);
    }
    for system in config.systems.keys() {
        if !seedwatch_schemas::SYSTEMS.contains(&system.as_str()) {
            return Err(DetectError::Config { file, line: 0, message: format!("systems: `{system}` is not metrc or biotrack") });
        }
    }
    let overrides = std::iter::once(("defaults", config.defaults.baseline.as_ref()))
        .chain(config.systems.iter().map(|(k, c)| (k.as_str(), c.baseline.as_ref())))
        .chain(config.states.iter().map(|(k, c)| (k.as_str(), c.baseline.as_ref())));
    for (key, o) in overrides {
        if let Some((field, why)) = o.and_then(BaselineOverride::invalid) {
            let line = crate::rule::line_of(&text, key);
            return Err(DetectError::Config { file, line, message: format!("{key}: field `baseline.{field}`: {why}") });
        }
    }
    let baseline_states = config.states.iter().filter_map(|(k, c)| c.baseline.map(|b| (k.clone(), b))).collect();
    let retention = Retention::from_config(&config.retention).map_err(|(field, why)| {
        // The field's line inside the `retention:` section (the same names appear elsewhere).
        let section = crate::rule::line_of(&text, "retention");
        let line = text.lines().enumerate().skip(section).find(|(_, l)| l.trim_start().starts_with(&format!("{field}:"))).map_or(section, |(i, _)| i + 1);
        DetectError::Config { file: file.clone(), line, message: format!("retention: field `{field}`: {why}") }
    })?;
    let limits = crate::limits::StateLimits::from_config(&config.limits).map_err(|(field, why)| {
        let section = crate::rule::line_of(&text, "limits");
        let line = text.lines().enumerate().skip(section).find(|(_, l)| l.trim_start().starts_with(&format!("{field}:"))).map_or(section, |(i, _)| i + 1);
        DetectError::Config { file: file.clone(), line, message: format!("limits: field `{field}`: {why}") }
    })?;
    Ok(Policy { defaults, states, systems: config.systems, baseline_defaults: config.defaults.baseline, baseline_states, retention, limits })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_encodes_the_seed_tables() {
        let path = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from).join("../rules/policy.yaml");
        let p = load_policy(&path).unwrap_or_else(|e| panic!("{e}"));
        let h = 3_600_000;
        assert_eq!(p.numeric_ms("sync_limit", "CA"), Some(0));
        assert_eq!(p.numeric_ms("sync_limit", "CO"), Some(24 * h + 15 * 60_000));
        assert_eq!(p.numeric_ms("sync_limit", "MI"), Some(8 * h + 15 * 60_000));
        assert_eq!(p.numeric_ms("sync_limit", "NV"), Some(4 * h + 15 * 60_000));
        assert_eq!(p.numeric_ms("sync_limit", "MA"), Some(96 * h));
        assert_eq!(p.numeric_ms("sync_limit", "IL"), Some(24 * h));
        assert_eq!((p.flag("mfa_required", "CA"), p.flag("mfa_required", "CO")), (Some(true), Some(false)));
        assert_eq!((p.state("CO").key_rotation_days, p.state("MA").key_rotation_days, p.state("OR").key_rotation_days), (60, 120, 90));
        assert_eq!((p.failed_api_per_hour("metrc"), p.failed_api_per_hour("biotrack")), (Some(10), Some(5)));
    }

    #[test]
    fn baseline_parameters_resolve_rule_then_defaults_then_system_then_state() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("policy.yaml");
        let yaml = "defaults: {baseline: {min_volume: 10}}\nsystems:\n  biotrack: {baseline: {ratio: 3.0, min_deviation: 6}}\nstates:\n  NM: {baseline: {ratio: 4.0}}\n";
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
        let p = load_policy(&path).unwrap_or_else(|e| panic!("{e}"));
        let rule = crate::rule::Baseline { measure: None, ratio: 2.0, history_days: 28, min_samples: 7, min_volume: 0.0, floor_of_peak: 0.1, min_deviation: 4.0 };
        let got = |state, system| {
            let b = p.baseline(&rule, state, system);
            (b.ratio, b.min_volume, b.min_deviation, b.floor_of_peak)
        };
        assert_eq!(got("CA", "metrc"), (2.0, 10.0, 4.0, 0.1));
        assert_eq!(got("CO", "biotrack"), (3.0, 10.0, 6.0, 0.1));
        assert_eq!(got("NM", "biotrack"), (4.0, 10.0, 6.0, 0.1));
    }

    #[test]
    fn bad_entries_name_the_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "defaults:\n  sync_interval: 24h\nstates:\n  CA: {sync_interval: soon}\n").unwrap_or_else(|e| panic!("{e}"));
        let e = load_policy(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("policy.yaml:4:") && e.contains("sync_interval"), "{e}");
        std::fs::write(&path, "defaults: {}\nstates:\n  CO: {sync_interval: 15m}\n  CA: {baseline: {ratio: 0.5}}\n").unwrap_or_else(|e| panic!("{e}"));
        let e = load_policy(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("policy.yaml:4:") && e.contains("baseline.ratio"), "{e}");
        std::fs::write(&path, "defaults: {}\nstates:\n  XX: {}\n").unwrap_or_else(|e| panic!("{e}"));
        let e = load_policy(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(":3:") && e.contains("XX"), "{e}");
        std::fs::write(&path, "defaults: {}\nlimits:\n  max_values_per_key: 64\n  max_keys_per_rule: 0\n").unwrap_or_else(|e| panic!("{e}"));
        let e = load_policy(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("policy.yaml:4:") && e.contains("limits: field `max_keys_per_rule`: must be at least 1"), "{e}");
        std::fs::write(&path, "defaults: {}\nlimits:\n  max_keys: 5\n").unwrap_or_else(|e| panic!("{e}"));
        let e = load_policy(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("policy.yaml:3:") && e.contains("max_keys"), "{e}");
    }

    #[test]
    fn the_shipped_limits_are_the_defaults_written_out() {
        let path = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from).join("../rules/policy.yaml");
        let p = load_policy(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.limits(), crate::limits::StateLimits::default());
    }
}
