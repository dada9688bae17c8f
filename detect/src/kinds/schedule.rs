//! `schedule`: an event outside its location's business hours (locations.csv, local time,
//! DST-aware).

use serde::Deserialize;

use super::{Context, KindConfig, KindParts};
use crate::rule::RowCondition;
use crate::DetectError;

/// No fields beyond the common ones: the hours come from locations.csv.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {}

impl KindConfig for Config {
    fn compile(self, _: &Context<'_>) -> Result<KindParts, DetectError> {
        Ok(KindParts { condition: RowCondition::OutsideHours, ..KindParts::default() })
    }
}
