//! SQL functions seedwatch adds to DataFusion, for rules, exceptions and analysts' queries
//! alike (`seedwatch query` registers them).

use std::net::IpAddr;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use ipnet::IpNet;

/// Register every seedwatch function on `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ip_in_range_udf());
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

}
