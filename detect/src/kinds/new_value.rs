//! `new_value`: a value of `field` (an IP, an integration) not seen for the key within
//! `history`, after a learning period from the key's first sighting.

use serde::Deserialize;

use super::{Context, KindConfig, KindParts};
use crate::DetectError;

/// The compiled parameters of a `new_value` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewValue {
    /// Column whose values are tracked per key.
    pub field: usize,
    /// A value unseen for this long counts as new again.
    pub history_ms: i64,
    /// A key's first sighting starts a quiet period of this length.
    pub learning_ms: i64,
}

/// The fields of a `new_value` rule.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The column whose values are tracked.
    #[serde(default)]
    pub field: Option<String>,
    /// How long a value stays known (default 90d).
    #[serde(default)]
    pub history: Option<String>,
    /// Quiet period after a key's first sighting (default 7d).
    #[serde(default)]
    pub learning: Option<String>,
}

impl KindConfig for Config {
    fn compile(self, cx: &Context<'_>) -> Result<KindParts, DetectError> {
        let field = self.field.as_deref().ok_or_else(|| (cx.err)("type", "a `new_value` rule needs field `field`".into()))?;
        let new_value = NewValue {
            field: cx.column("field", field)?,
            history_ms: cx.duration("history", &self.history)?.unwrap_or(90 * 86_400_000),
            learning_ms: cx.duration("learning", &self.learning)?.unwrap_or(7 * 86_400_000),
        };
        Ok(KindParts { new_value: Some(new_value), ..KindParts::default() })
    }
}
