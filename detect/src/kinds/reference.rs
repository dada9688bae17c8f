//! `reference`: an event joined against a reference table (roster.csv): use by a
//! terminated user.

use serde::Deserialize;

use super::{Context, KindConfig, KindParts};
use crate::rule::RowCondition;
use crate::DetectError;

/// The join of a `reference` rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceConfig {
    /// The reference table; only `roster` today.
    pub table: String,
    /// The event column holding the roster's `user`.
    #[serde(default = "default_reference_column")]
    pub column: String,
    /// When a joined event fires; only `terminated` (at or after `terminated_at`) today.
    pub condition: String,
}

fn default_reference_column() -> String {
    "user".into()
}

/// The fields of a `reference` rule.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The join.
    #[serde(default)]
    pub reference: Option<ReferenceConfig>,
}

impl KindConfig for Config {
    fn compile(self, cx: &Context<'_>) -> Result<KindParts, DetectError> {
        let reference = self.reference.ok_or_else(|| (cx.err)("type", "a `reference` rule needs field `reference` (`table: roster`, `condition: terminated`)".into()))?;
        if reference.table != "roster" || reference.condition != "terminated" {
            return Err((cx.err)("reference", "field `reference`: supported is `table: roster` with `condition: terminated`".into()));
        }
        let column = cx.column("reference", &reference.column)?;
        Ok(KindParts { condition: RowCondition::TerminatedUser { column }, ..KindParts::default() })
    }
}
