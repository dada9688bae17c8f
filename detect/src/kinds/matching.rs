//! `match`: every event passing the filter is a finding (held open while `suppress` lasts,
//! so repeats update it).

use serde::Deserialize;

use super::{Context, KindConfig, KindParts};
use crate::DetectError;

/// No fields beyond the common ones.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {}

impl KindConfig for Config {
    fn compile(self, _: &Context<'_>) -> Result<KindParts, DetectError> {
        Ok(KindParts::default())
    }
}
