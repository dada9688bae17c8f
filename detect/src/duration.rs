//! Durations in configuration: `90s`, `10m`, `1h`, `3d`, `2w`, or a sum like `1h30m`.

/// Parse a duration into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            _ => return Err(format!("`{text}` is not a duration (use e.g. 90s, 10m, 1h, 3d)")),
        };
        let n: i64 = number.parse().map_err(|_| format!("`{text}` is not a duration (a number must precede `{c}`)"))?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(|| format!("`{text}` is too long"))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("`{text}` has no unit (use s, m, h, d or w)"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("3d"), Ok(259_200_000));
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("ten minutes").is_err());
        assert!(parse_duration_ms("").is_err());
    }
}
