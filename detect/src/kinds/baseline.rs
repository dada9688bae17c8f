//! `baseline`: volume in the current hour at least `ratio` times the key's normal level for
//! that local hour (median and MAD of past days), held against a floor that scales with
//! the key's typical busiest hour. A state or system may override the numbers
//! ([`crate::policy::BaselineOverride`]).

use datafusion::arrow::datatypes::DataType;
use serde::Deserialize;

use super::{Context, KindConfig, KindParts};
use crate::DetectError;

/// The compiled parameters of a `baseline` rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// Column summed per hour (`None`: count events).
    pub measure: Option<usize>,
    /// Observed / baseline ratio that fires (the seeds' "2x normal volume").
    pub ratio: f64,
    /// Past days of the same hour kept as samples.
    pub history_days: usize,
    /// Samples needed before the key is judged.
    pub min_samples: usize,
    /// Smallest hourly volume worth an alert.
    pub min_volume: f64,
    /// Least normal level an hour is held against, as a share of the key's typical busiest
    /// hour (the median of its daily peaks): quiet hours of a large site swing by hundreds
    /// without meaning anything, and an hour a key is usually silent in has no normal of
    /// its own. Scales with the key, where an absolute floor suits one size of site only.
    pub floor_of_peak: f64,
    /// How many robust standard deviations (1.4826 x MAD) above the median
    /// the hour must also be, so that naturally noisy keys stay quiet.
    pub min_deviation: f64,
}

/// The fields of a `baseline` rule.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The column summed per hour (omit to count events).
    #[serde(default)]
    pub measure: Option<String>,
    /// Ratio to the normal level that fires (default 2.0).
    #[serde(default)]
    pub ratio: Option<f64>,
    /// Days of the same hour kept as samples (default 28).
    #[serde(default)]
    pub history_days: Option<usize>,
    /// Samples needed before judging a key's hour (default 7).
    #[serde(default)]
    pub min_samples: Option<usize>,
    /// Smallest hourly volume that can fire (default 0).
    #[serde(default)]
    pub min_volume: Option<f64>,
    /// Least normal level, as a share of the key's typical busiest hour (default 0).
    #[serde(default)]
    pub floor_of_peak: Option<f64>,
    /// Robust deviations above normal also required (default 4).
    #[serde(default)]
    pub min_deviation: Option<f64>,
}

impl KindConfig for Config {
    fn compile(self, cx: &Context<'_>) -> Result<KindParts, DetectError> {
        let measure = self.measure.as_deref().map(|m| cx.column("measure", m)).transpose()?;
        if let Some(m) = measure {
            if cx.schema.field(m).data_type() != &DataType::Int64 {
                return Err((cx.err)("measure", "field `measure`: must be an integer column (records, bytes, ...)".into()));
            }
        }
        let ratio = self.ratio.unwrap_or(2.0);
        if !(ratio > 1.0) {
            return Err((cx.err)("ratio", "field `ratio`: must be greater than 1".into()));
        }
        let floor_of_peak = self.floor_of_peak.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&floor_of_peak) {
            return Err((cx.err)("floor_of_peak", "field `floor_of_peak`: must be between 0 and 1".into()));
        }
        let baseline = Baseline {
            measure,
            ratio,
            history_days: self.history_days.unwrap_or(28).max(1),
            min_samples: self.min_samples.unwrap_or(7).max(1),
            min_volume: self.min_volume.unwrap_or(0.0),
            floor_of_peak,
            min_deviation: self.min_deviation.unwrap_or(4.0),
        };
        Ok(KindParts { baseline: Some(baseline), ..KindParts::default() })
    }
}
