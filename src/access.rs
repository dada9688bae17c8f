//! Who sees what: roles from an access file (YAML), each naming the licenses or locations it
//! sees and what it may do besides reading them.
//!
//! ```yaml
//! locations: locations.csv          # resolves `locations:` of the roles (relative to this file)
//! roles:
//!   soc:
//!     all: true                     # every license, and the dead letters
//!     may: [report, export, triage]
//!   west-region:
//!     locations: [oakland, sacramento]
//!     licenses: [C10-000011006]
//!     may: [report]
//! ```
//!
//! A role is enforced below SQL: the session's tables are views filtered by license (see
//! [`seedwatch_archive::Visibility`]), and every statement is read-only. Without an access
//! file there is one user, who sees everything (an archive on one analyst's disk).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use seedwatch_archive::Visibility;
use serde::Deserialize;

/// An access file that cannot be used, or a role that may not do something.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The file is unusable: names file, line and field.
    #[error("{}:{line}: {message}", file.display())]
    Config {
        /// The access file (or the locations file it names).
        file: PathBuf,
        /// 1-based line (0: the whole file).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file could not be read.
    #[error("reading access file {}", file.display())]
    Read {
        /// The access file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The locations file a role needs did not load.
    #[error(transparent)]
    Locations(#[from] seedwatch_detect::DetectError),
    /// An access file was given without a role, or the role is not in it.
    #[error("{0}")]
    NoRole(String),
    /// The role may not do this.
    #[error("role `{role}` may not {action} (add `{permission}` to its `may:` in {})", file.display())]
    Denied {
        /// The role.
        role: String,
        /// What was asked.
        action: &'static str,
        /// The permission it lacks.
        permission: Permission,
        /// The access file.
        file: PathBuf,
    },
}

/// What a role may do besides reading what it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Run the review reports (`seedwatch report`).
    Report,
    /// Export events or findings out of the archive (`seedwatch export`).
    Export,
    /// Change a finding's status (`seedwatch findings ack|resolve|dismiss`).
    Triage,
    /// Change the archive as a whole: `archive prune|compact|migrate`, `rules backfill`. Only
    /// for a role that sees all: these touch every tenant's rows.
    Maintain,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::Report => "report",
            Permission::Export => "export",
            Permission::Triage => "triage",
            Permission::Maintain => "maintain",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    /// locations.csv, for roles that name locations (relative to the access file).
    #[serde(default)]
    locations: Option<PathBuf>,
    roles: BTreeMap<String, RoleConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleConfig {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    licenses: Vec<String>,
    #[serde(default)]
    locations: Vec<String>,
    #[serde(default)]
    may: Vec<Permission>,
}

/// The caller's role: what it sees and may do.
#[derive(Debug, Clone)]
pub struct Role {
    /// Its name in the access file (`-` without one).
    pub name: String,
    /// The rows it sees.
    pub visibility: Visibility,
    may: BTreeSet<Permission>,
    /// The access file, for error messages (`None`: no access file, everything allowed).
    file: Option<PathBuf>,
}

impl Role {
    /// The one user of an archive without an access file: sees and may do everything.
    pub fn unrestricted() -> Self {
        Self { name: "-".into(), visibility: Visibility::All, may: BTreeSet::new(), file: None }
    }

    /// Load role `name` from the access file at `path`. Every role in the file is checked,
    /// not only the one asked for, so a mistake anywhere is found at once.
    pub fn load(path: &Path, name: Option<&str>) -> Result<Self, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read { file: path.to_path_buf(), source })?;
        let config_err = |line: usize, message: String| AccessError::Config { file: path.to_path_buf(), line, message };
        let file: AccessFile = serde_yaml::from_str(&text).map_err(|e| config_err(e.location().map_or(0, |l| l.line()), e.to_string()))?;
        let locations = match &file.locations {
            Some(csv) => {
                let csv = if csv.is_relative() { path.parent().unwrap_or(Path::new(".")).join(csv) } else { csv.clone() };
                Some(seedwatch_detect::reference::load_locations(&csv)?)
            }
            None => None,
        };
        let mut roles = BTreeMap::new();
        for (role, config) in &file.roles {
            let line = line_of(&text, role);
            let err = |message: String| config_err(line, format!("role `{role}`: {message}"));
            if config.all && !(config.licenses.is_empty() && config.locations.is_empty()) {
                return Err(err("field `all`: a role that sees all names no licenses or locations".into()));
            }
            if !config.all && config.may.contains(&Permission::Maintain) {
                return Err(err("field `may`: `maintain` changes every tenant's rows; only a role with `all: true` may have it".into()));
            }
            if !config.all && config.licenses.is_empty() && config.locations.is_empty() {
                return Err(err("sees nothing: give `all: true`, `licenses:` or `locations:`".into()));
            }
            let visibility = if config.all {
                Visibility::All
            } else {
                let mut licenses: BTreeSet<String> = config.licenses.iter().cloned().collect();
                if !config.locations.is_empty() {
                    let known = locations.as_ref().ok_or_else(|| err("field `locations`: the access file names no `locations:` file (locations.csv) to look them up in".into()))?;
                    for location in &config.locations {
                        let found = known.get(location).ok_or_else(|| err(format!("field `locations`: `{location}` is not in the locations file")))?;
                        licenses.insert(found.row.license.clone());
                    }
                }
                Visibility::Licenses(licenses)
            };
            roles.insert(role.clone(), Self { name: role.clone(), visibility, may: config.may.iter().copied().collect(), file: Some(path.to_path_buf()) });
        }
        let name = name.ok_or_else(|| AccessError::NoRole(format!("an access file is given ({}): name a role with --role or SEEDWATCH_ROLE", path.display())))?;
        roles.remove(name).ok_or_else(|| {
            let known: Vec<&String> = file.roles.keys().collect();
            AccessError::NoRole(format!("role `{name}` is not in {} (roles: {known:?})", path.display()))
        })
    }

    /// The role for a command: from `access` (a file) and `role`, or unrestricted without a file.
    pub fn resolve(access: Option<&Path>, role: Option<&str>) -> Result<Self, AccessError> {
        match (access, role) {
            (Some(path), role) => Self::load(path, role),
            (None, Some(role)) => Err(AccessError::NoRole(format!("role `{role}` given without an access file: give --access FILE or SEEDWATCH_ACCESS"))),
            (None, None) => Ok(Self::unrestricted()),
        }
    }

    /// Whether the role may `permission`; the error names what to change.
    pub fn require(&self, permission: Permission, action: &'static str) -> Result<(), AccessError> {
        match &self.file {
            None => Ok(()),
            Some(_) if self.may.contains(&permission) => Ok(()),
            Some(file) => Err(AccessError::Denied { role: self.name.clone(), action, permission, file: file.clone() }),
        }
    }

    /// Whether the role sees `license`.
    pub fn sees(&self, license: &str) -> bool {
        match &self.visibility {
            Visibility::All => true,
            Visibility::Licenses(licenses) => licenses.contains(license),
        }
    }
}

/// The 1-based line where `key:` is first written as a mapping key (0 if not found).
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with(':')) || t.strip_prefix(&format!("\"{key}\"")).is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    const LOCATIONS: &str = "location,license,state,system,timezone,open,close\noakland,C10-1,CA,metrc,America/Los_Angeles,09:00,21:00\ndenver,402R-2,CO,metrc,America/Denver,08:00,22:00\n";

    #[test]
    fn roles_resolve_locations_to_licenses_and_permissions_are_checked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(dir.path(), "locations.csv", LOCATIONS);
        let access = write(dir.path(), "access.yaml", "locations: locations.csv\nroles:\n  soc:\n    all: true\n    may: [report, export, triage]\n  west:\n    locations: [oakland]\n    licenses: [X-9]\n    may: [report]\n");
        let west = Role::load(&access, Some("west")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(west.visibility, Visibility::Licenses(["C10-1".to_string(), "X-9".to_string()].into_iter().collect()));
        assert!(west.sees("C10-1") && !west.sees("402R-2"));
        assert!(west.require(Permission::Report, "run reports").is_ok());
        let denied = west.require(Permission::Export, "export").map_err(|e| e.to_string());
        assert_eq!(denied, Err(format!("role `west` may not export (add `export` to its `may:` in {})", access.display())));
        let soc = Role::load(&access, Some("soc")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(soc.visibility, Visibility::All);
        assert!(Role::unrestricted().require(Permission::Triage, "triage").is_ok());
    }

    #[test]
    fn mistakes_name_the_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(dir.path(), "locations.csv", LOCATIONS);
        let cases = [
            ("roles:\n  a:\n    all: true\n    mayy: [report]\n", "access.yaml:4:", "mayy"),
            ("roles:\n  a:\n    all: true\n    may: [delete]\n", "access.yaml:4:", "delete"),
            ("roles:\n  ok:\n    all: true\n  b:\n    all: true\n    licenses: [X]\n", "access.yaml:4: role `b`: field `all`", "no licenses"),
            ("roles:\n  b:\n    may: [report]\n", "access.yaml:2: role `b`", "sees nothing"),
            ("roles:\n  b:\n    locations: [oakland]\n", "access.yaml:2: role `b`: field `locations`", "no `locations:` file"),
            ("locations: locations.csv\nroles:\n  b:\n    locations: [paris]\n", "access.yaml:3: role `b`: field `locations`", "`paris`"),
        ];
        for (text, starts, mentions) in cases {
            let path = write(dir.path(), "access.yaml", text);
            let error = Role::load(&path, Some("b")).map(|_| ()).map_err(|e| e.to_string()).err().unwrap_or_default();
            let shown = error.replace(&format!("{}/", dir.path().display()), "");
            assert!(shown.starts_with(starts) && shown.contains(mentions), "{text:?}: {shown}");
        }
        let path = write(dir.path(), "access.yaml", "roles:\n  soc:\n    all: true\n");
        assert!(Role::load(&path, None).is_err_and(|e| e.to_string().contains("--role")));
        assert!(Role::load(&path, Some("nobody")).is_err_and(|e| e.to_string().contains("`nobody` is not in")));
        assert!(Role::resolve(None, Some("soc")).is_err());
    }
}
