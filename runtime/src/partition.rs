//! Routing rows to partitions by license.
//!
//! The function is Kafka's murmur2 ([`seedwatch_schemas::partition`]), the one
//! the collectors' producer uses: a license's state lives in one task whether
//! the partitions are in-process (`run --partitions N`) or a topic's.

use seedwatch_schemas::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use seedwatch_schemas::arrow::compute::{cast, take_record_batch};
use seedwatch_schemas::arrow::datatypes::DataType;
use seedwatch_schemas::arrow::error::ArrowError;
use seedwatch_schemas::partition::partition_for;
use seedwatch_schemas::EventBatch;

/// The partition of `license` among `partitions`.
pub fn partition_of(license: &str, partitions: usize) -> usize {
    partition_for(license.as_bytes(), partitions.max(1) as i32) as usize
}

/// Split `events` by the partition of each row's license: one entry per
/// partition that has rows, rows in their original order.
pub fn split(events: &EventBatch, partitions: usize) -> Result<Vec<(usize, EventBatch)>, ArrowError> {
    Ok(split_batch(&events.batch, partitions)?.into_iter().map(|(p, batch)| (p, EventBatch { family: events.family, batch })).collect())
}

/// [`split`] for any batch with a `license` column (archived rows replayed at
/// warm-up, whose strings may be views).
pub fn split_batch(batch: &RecordBatch, partitions: usize) -> Result<Vec<(usize, RecordBatch)>, ArrowError> {
    if partitions <= 1 {
        return Ok(vec![(0, batch.clone())]);
    }
    let column = batch.column_by_name("license").ok_or_else(|| ArrowError::SchemaError("rows without a `license` column cannot be partitioned".into()))?;
    let utf8 = if column.data_type() == &DataType::Utf8 { column.clone() } else { cast(column, &DataType::Utf8)? };
    let license = utf8.as_string::<i32>();
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); partitions];
    // Batches hold runs of one license: hash once per run.
    let mut current: Option<(&str, usize)> = None;
    for row in 0..license.len() {
        let name = if license.is_null(row) { "" } else { license.value(row) };
        let p = match current {
            Some((n, p)) if n == name => p,
            _ => {
                let p = partition_of(name, partitions);
                current = Some((name, p));
                p
            }
        };
        rows[p].push(row as u32);
    }
    let mut out = Vec::new();
    for (p, indices) in rows.into_iter().enumerate() {
        if indices.is_empty() {
            continue;
        }
        let part = if indices.len() == license.len() { batch.clone() } else { take_record_batch(batch, &UInt32Array::from(indices))? };
        out.push((p, part));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedwatch_schemas::arrow::array::StringArray;
    use seedwatch_schemas::arrow::datatypes::{Field, Schema};
    use seedwatch_schemas::Family;
    use std::sync::Arc;

    #[test]
    fn every_row_lands_once_in_its_licenses_partition() {
        let schema = Arc::new(Schema::new(vec![Field::new("license", DataType::Utf8, true)]));
        let names = ["CA-R-0001", "CA-R-0001", "CO-402R-77", "abc", "foobar", "21", "CA-R-0001"];
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(names.to_vec()))]).expect("batch");
        let parts = split(&EventBatch { family: Family::Login, batch }, 4).expect("split");
        let mut seen = 0;
        for (p, part) in &parts {
            let col = part.batch.column(0).as_string::<i32>();
            for i in 0..col.len() {
                assert_eq!(partition_of(col.value(i), 4), *p);
            }
            seen += col.len();
        }
        assert_eq!(seen, names.len());
        // The Java client's partitions (schemas::partition's test vectors).
        assert_eq!(partition_of("abc", 4), 3);
        assert_eq!(partition_of("foobar", 4), 2);
    }
}
