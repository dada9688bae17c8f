//! Values from logs made safe to show. The archive keeps what a sender wrote, byte for
//! byte (it is evidence); what is printed to an analyst's terminal or opened in a
//! spreadsheet is neutralised here, because a user name is attacker-chosen text:
//! `\x1b]52;…` rewrites the clipboard, `\x1b[2J` clears the screen, a bidi override
//! (U+202E) reorders what is read, and a CSV cell starting with `=` is a formula.
//!
//! Control characters (C0, DEL, C1) and bidi controls become visible escapes
//! (`\u{1b}`, `\n`); the rest of the text is unchanged. In CSV, a string cell
//! starting with `=`, `+`, `-` or `@` gets a leading `'` (OWASP's advice for CSV
//! injection), which spreadsheets show as text.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::ArchiveError;

/// Where a value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A terminal: control characters escaped.
    Terminal,
    /// A CSV cell: control characters escaped and formulas defused.
    Csv,
}

/// `text` safe to print: control and bidi characters as visible escapes; borrowed
/// unchanged when it holds none (the common case costs one byte scan).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(might_escape) || !text.chars().any(is_hostile) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_hostile(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` safe for a CSV cell opened in a spreadsheet: [`printable`], and a formula's
/// first character preceded by `'`.
pub fn csv_cell(text: &str) -> Cow<'_, str> {
    let shown = printable(text);
    if shown.starts_with(['=', '+', '-', '@']) {
        Cow::Owned(format!("'{shown}"))
    } else {
        shown
    }
}

/// JSON text with the characters its writer leaves raw but a terminal acts on (C1
/// controls such as U+009B, a CSI, and bidi controls) written as `\u` escapes: the
/// same JSON value, safe to print. JSON escapes C0 controls itself.
pub fn json_text(json: String) -> String {
    if !json.bytes().any(|b| b == 0xc2 || b == 0xe2) || !json.chars().any(|c| c > '\u{7f}' && is_hostile(c)) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c > '\u{7f}' && is_hostile(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A byte that starts or is a character [`printable`] may rewrite: ASCII controls,
/// DEL, the lead byte of C1 controls (U+0080..U+009F) and of the bidi controls (U+2xxx).
fn might_escape(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xe2
}

fn is_hostile(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `batch` ready for `target`: nested columns (a finding's `evidence` list) as text,
/// since CSV has none and a terminal shows them so anyway, and every string column
/// neutralised. Columns with nothing to change are passed on as they are.
pub fn printable_batch(batch: &RecordBatch, target: Target) -> Result<RecordBatch, ArchiveError> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    let cell = match target {
        Target::Terminal => printable,
        Target::Csv => csv_cell,
    };
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let text = match field.data_type() {
            t if t.is_nested() => Some(nested_as_text(column.as_ref(), cell)?),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => strings_rewritten(column, cell)?,
            DataType::Dictionary(_, values) if matches!(values.as_ref(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => strings_rewritten(column, cell)?,
            _ => None,
        };
        match text {
            Some(text) => {
                fields.push(Field::new(field.name(), DataType::Utf8, true));
                columns.push(text);
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(Arc::clone(column));
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| ArchiveError::Query(e.to_string()))
}

fn format_err(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Query(e.to_string())
}

fn nested_as_text(column: &dyn Array, cell: fn(&str) -> Cow<'_, str>) -> Result<ArrayRef, ArchiveError> {
    let formatter = ArrayFormatter::try_new(column, &FormatOptions::default()).map_err(format_err)?;
    let mut text = StringBuilder::with_capacity(column.len(), column.len() * 16);
    for row in 0..column.len() {
        if column.is_null(row) {
            text.append_null();
        } else {
            text.append_value(cell(&formatter.value(row).to_string()));
        }
    }
    Ok(Arc::new(text.finish()))
}

/// The string column rewritten by `cell`, or `None` when no value changes.
fn strings_rewritten(column: &ArrayRef, cell: fn(&str) -> Cow<'_, str>) -> Result<Option<ArrayRef>, ArchiveError> {
    let utf8 = datafusion::arrow::compute::cast(column, &DataType::Utf8).map_err(format_err)?;
    let strings = utf8.as_string::<i32>();
    if !strings.iter().flatten().any(|s| matches!(cell(s), Cow::Owned(_))) {
        return Ok(None);
    }
    let mut text = StringBuilder::with_capacity(strings.len(), strings.value_data().len() + 64);
    for value in strings.iter() {
        match value {
            Some(s) => text.append_value(cell(s)),
            None => text.append_null(),
        }
    }
    Ok(Some(Arc::new(text.finish())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, ListBuilder, StringArray, StringViewArray};

    #[test]
    fn control_and_bidi_characters_become_visible_escapes() {
        assert_eq!(printable("mallory\x1b]52;c;ZXZpbA==\x07"), "mallory\\u{1b}]52;c;ZXZpbA==\\u{7}");
        assert_eq!(printable("a\nb\tc\rd\x7f"), "a\\nb\\tc\\rd\\u{7f}");
        assert_eq!(printable("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(printable("admin\u{202e}nimda"), "admin\\u{202e}nimda");
        // Text that merely shares a lead byte is left alone.
        assert_eq!(printable("café – ü €"), "café – ü €");
        assert!(matches!(printable("203.0.113.9"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_keeps_its_value_and_loses_what_a_terminal_acts_on() {
        let json = serde_json::json!({"user": "a\u{9b}31m\u{202e}b ü €"}).to_string();
        let shown = json_text(json.clone());
        assert_eq!(shown, r#"{"user":"a\u009b31m\u202eb ü €"}"#);
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.to_string(), json, "the same value");
    }

    #[test]
    fn a_csv_formula_is_shown_as_text() {
        assert_eq!(csv_cell("=HYPERLINK(\"http://evil\")"), "'=HYPERLINK(\"http://evil\")");
        assert_eq!(csv_cell("+1"), "'+1");
        assert_eq!(csv_cell("-2+3"), "'-2+3");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("alice=admin"), "alice=admin");
    }

    #[test]
    fn only_string_and_nested_columns_are_rewritten() {
        let mut evidence = ListBuilder::new(StringBuilder::new());
        evidence.values().append_value("e\x1b[2J");
        evidence.append(true);
        evidence.append(false);
        let users: ArrayRef = Arc::new(StringViewArray::from(vec![Some("=cmd|' /C calc'!A0"), None]));
        let ips: ArrayRef = Arc::new(StringArray::from(vec!["10.0.0.1", "10.0.0.2"]));
        let counts: ArrayRef = Arc::new(Int64Array::from(vec![-5, 7]));
        let evidence: ArrayRef = Arc::new(evidence.finish());
        let schema = Schema::new(vec![
            Field::new("user", DataType::Utf8View, true),
            Field::new("ip", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
            Field::new("evidence", evidence.data_type().clone(), true),
        ]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![users, Arc::clone(&ips), Arc::clone(&counts), evidence]).unwrap_or_else(|e| panic!("{e}"));
        let shown = printable_batch(&batch, Target::Csv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shown.column(0).as_string::<i32>().value(0), "'=cmd|' /C calc'!A0");
        assert!(shown.column(0).is_null(1));
        assert!(Arc::ptr_eq(shown.column(1), &ips), "a clean column is passed on, not copied");
        assert!(Arc::ptr_eq(shown.column(2), &counts), "numbers are not text");
        assert_eq!(shown.column(3).as_string::<i32>().value(0), "[e\\u{1b}[2J]");
        assert!(shown.column(3).is_null(1));
        let terminal = printable_batch(&batch, Target::Terminal).unwrap_or_else(|e| panic!("{e}"));
        assert!(Arc::ptr_eq(terminal.column(0), batch.column(0)), "no formula check on a terminal");
    }
}
