//! SQL functions seedwatch adds to DataFusion, for rules, exceptions and analysts' queries
//! alike (`seedwatch query` registers them).

use std::net::IpAddr;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use ipnet::IpNet;

/// Register every seedwatch function on `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ip_in_range_udf());
    ctx.register_udf(local_time_udf());
}

/// An address or a range: `203.0.113.0/24`, `2001:db8::/32`, or `198.51.100.7` (one host).
pub fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>().ok().or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// `ip_in_range(ip, range)`: whether an address lies in a range (`10.0.0.0/8`). An
/// unparsable or null address is not in any range.
pub fn ip_in_range_udf() -> ScalarUDF {
    let f = |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let plan_error = |m: &str| datafusion::error::DataFusionError::Plan(format!("ip_in_range: {m}"));
        let [ip, range] = args else { return Err(plan_error("takes (ip, range)")) };
        let net = match range {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(r))) => parse_net(r).ok_or_else(|| plan_error(&format!("`{r}` is not a range")))?,
            _ => return Err(plan_error("the range must be a text literal")),
        };
        let contains = |text: Option<&str>| Some(text.and_then(|t| t.parse::<IpAddr>().ok()).is_some_and(|a| net.contains(&a)));
        Ok(match ip {
            ColumnarValue::Scalar(s) => {
                let text = match s {
                    ScalarValue::Utf8(v) => v.as_deref(),
                    _ => None,
                };
                ColumnarValue::Scalar(ScalarValue::Boolean(contains(text)))
            }
            ColumnarValue::Array(a) => {
                let a = a.as_string_opt::<i32>().ok_or_else(|| plan_error("the address must be text"))?;
                let out: BooleanArray = a.iter().map(contains).collect();
                ColumnarValue::Array(Arc::new(out) as ArrayRef)
            }
        })
    };
    create_udf("ip_in_range", vec![DataType::Utf8, DataType::Utf8], DataType::Boolean, Volatility::Immutable, Arc::new(f))
}

/// `local_time(time, timezone)`: the wall-clock time `HH:MM` of an instant in an IANA
/// timezone given per row (`America/Denver`, as `locations.csv` has it), so business hours
/// can be compared in SQL: `local_time(time, l.timezone) >= l.open`. Null for a null time
/// or an unknown timezone.
pub fn local_time_udf() -> ScalarUDF {
    let f = |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let plan_error = |m: &str| datafusion::error::DataFusionError::Plan(format!("local_time: {m}"));
        let [time, zone] = args else { return Err(plan_error("takes (time, timezone)")) };
        let rows = [time, zone].iter().find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        });
        let (time, zone) = (time.to_array(rows.unwrap_or(1))?, zone.to_array(rows.unwrap_or(1))?);
        let time = datafusion::arrow::compute::cast(&time, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let zone = datafusion::arrow::compute::cast(&zone, &DataType::Utf8)?;
        let (time, zone) = (time.as_primitive::<TimestampMillisecondType>(), zone.as_string::<i32>());
        // Rows of one location repeat its zone: parse once per run of equal names.
        let mut last: Option<(&str, Option<chrono_tz::Tz>)> = None;
        let out: StringArray = time
            .iter()
            .zip(zone.iter())
            .map(|(t, z)| {
                let (t, z) = (t?, z?);
                let tz = match last {
                    Some((name, tz)) if name == z => tz,
                    _ => {
                        let tz = z.parse::<chrono_tz::Tz>().ok();
                        last = Some((z, tz));
                        tz
                    }
                }?;
                Some(chrono::DateTime::from_timestamp_millis(t)?.with_timezone(&tz).format("%H:%M").to_string())
            })
            .collect();
        Ok(if rows.is_some() { ColumnarValue::Array(Arc::new(out) as ArrayRef) } else { ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?) })
    };
    create_udf("local_time", vec![DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), DataType::Utf8], DataType::Utf8, Volatility::Immutable, Arc::new(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, StringArray};

    #[test]
    fn ranges_contain_addresses_and_bare_addresses_are_single_hosts() {
        let udf = ip_in_range_udf();
        let ips: ArrayRef = Arc::new(StringArray::from(vec![Some("203.0.113.9"), Some("203.0.114.1"), None, Some("not-an-ip"), Some("2001:db8::1")]));
        let call = |range: &str| {
            let args = datafusion::logical_expr::ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(ips.clone()), ColumnarValue::Scalar(ScalarValue::Utf8(Some(range.into())))],
                arg_fields: vec![],
                number_rows: ips.len(),
                return_field: Arc::new(datafusion::arrow::datatypes::Field::new("r", DataType::Boolean, true)),
                config_options: Arc::new(Default::default()),
            };
            let out = udf.invoke_with_args(args).and_then(|v| v.into_array(ips.len())).unwrap_or_else(|e| panic!("{e}"));
            out.as_boolean().iter().map(|v| v.unwrap_or(false)).collect::<Vec<_>>()
        };
        assert_eq!(call("203.0.113.0/24"), [true, false, false, false, false]);
        assert_eq!(call("203.0.113.9"), [true, false, false, false, false]);
        assert_eq!(call("2001:db8::/32"), [false, false, false, false, true]);
    }

    #[test]
    fn local_time_is_the_wall_clock_of_each_rows_zone_across_dst() {
        let udf = local_time_udf();
        // 2026-11-01 08:30 UTC: 01:30 PDT (before the change) ... 2026-11-01 10:30 UTC: 02:30 PST.
        let times = datafusion::arrow::array::TimestampMillisecondArray::from(vec![Some(1_793_521_800_000), Some(1_793_529_000_000), Some(1_793_529_000_000), None, Some(0)]).with_timezone("UTC");
        let zones: ArrayRef = Arc::new(StringArray::from(vec![Some("America/Los_Angeles"), Some("America/Los_Angeles"), Some("America/Denver"), Some("UTC"), Some("Mars/Olympus")]));
        let args = datafusion::logical_expr::ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(Arc::new(times)), ColumnarValue::Array(zones)],
            arg_fields: vec![],
            number_rows: 5,
            return_field: Arc::new(datafusion::arrow::datatypes::Field::new("r", DataType::Utf8, true)),
            config_options: Arc::new(Default::default()),
        };
        let out = udf.invoke_with_args(args).and_then(|v| v.into_array(5)).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<Option<&str>> = out.as_string::<i32>().iter().collect();
        assert_eq!(got, [Some("01:30"), Some("02:30"), Some("03:30"), None, None]);
    }
}
