//! Event time per license.
//!
//! Each license (a location's state licence) has its own watermark: the newest
//! event time seen for it as of the last [`crate::Detector::advance`]. Lateness,
//! the closing of suppression windows and the forgetting of idle keys are judged
//! against the event's own license, so a location whose collector was offline
//! for hours delivers its backlog in its own event time: it is neither "late"
//! behind every other site's newer events, nor does it make their events late.
//! Silence (absence rules) is still judged against the task's time, the newest
//! event of any license, since a silent location has no time of its own.

use foldhash::{HashMap, HashMapExt};

use datafusion::arrow::array::{Array, PrimitiveArray, StringArray};
use datafusion::arrow::datatypes::TimestampMillisecondType;

/// A license's index in [`LicenseClock`]: small, so per-key state can carry it.
pub(crate) type LicenseId = u32;

#[derive(Debug, Clone, Copy)]
struct LicenseTime {
    /// Newest event time as of the last `commit`: what lateness is judged against.
    watermark: i64,
    /// Newest event time seen since (committed at the next `advance`).
    newest: i64,
}

const UNSEEN: LicenseTime = LicenseTime { watermark: i64::MIN, newest: i64::MIN };

/// Interned licenses and their watermarks.
#[derive(Debug)]
pub(crate) struct LicenseClock {
    ids: HashMap<Box<str>, LicenseId>,
    times: Vec<LicenseTime>,
    /// Ids of retired licenses, given to the next new ones.
    free: Vec<LicenseId>,
    /// The newest committed watermark of any license.
    max: i64,
}

impl Default for LicenseClock {
    fn default() -> Self {
        Self { ids: HashMap::new(), times: Vec::new(), free: Vec::new(), max: i64::MIN }
    }
}

impl LicenseClock {
    /// The id of `license`, interning it on first sight.
    pub(crate) fn intern(&mut self, license: &str) -> LicenseId {
        if let Some(id) = self.ids.get(license) {
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.times[id as usize] = UNSEEN;
                id
            }
            None => {
                self.times.push(UNSEEN);
                (self.times.len() - 1) as LicenseId
            }
        };
        self.ids.insert(Box::from(license), id);
        id
    }

    /// Licenses tracked.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Forget licenses no key refers to (`in_use`) whose newest time is before `horizon`,
    /// then, while more than `max` remain, those idle longest: a sender naming made-up
    /// licenses would otherwise grow the clock, which every `advance` walks. A forgotten
    /// license seen again starts afresh, with no watermark. Returns licenses forgotten.
    pub(crate) fn retire(&mut self, horizon: i64, max: usize, in_use: &std::collections::HashSet<LicenseId>) -> usize {
        let newest = |t: &LicenseTime| t.watermark.max(t.newest);
        let mut cut = horizon;
        if self.ids.len() > max {
            let mut times: Vec<i64> = self.ids.values().filter(|id| !in_use.contains(id)).map(|id| newest(&self.times[*id as usize])).collect();
            let keep = crate::limits::keep_after_eviction(max).saturating_sub(self.ids.len() - times.len());
            if let Some(t) = crate::limits::cutoff(&mut times, keep) {
                // `cutoff` is the newest time to go; `cut` is the first to stay.
                cut = cut.max(t.saturating_add(1));
            }
        }
        let before = self.ids.len();
        let (times, free) = (&mut self.times, &mut self.free);
        self.ids.retain(|_, id| {
            let t = &mut times[*id as usize];
            if newest(t) >= cut || in_use.contains(id) {
                return true;
            }
            *t = UNSEEN;
            free.push(*id);
            false
        });
        before - self.ids.len()
    }

    /// The id of a license already interned (every license of a batch is, once
    /// [`LicenseClock::observe`] has seen it).
    pub(crate) fn get(&self, license: &str) -> Option<LicenseId> {
        self.ids.get(license).copied()
    }

    /// The license's watermark; `i64::MIN` before its first `advance`.
    pub(crate) fn watermark(&self, id: LicenseId) -> i64 {
        self.times.get(id as usize).map_or(i64::MIN, |t| t.watermark)
    }

    /// Intern every license of a batch and mark which rows are on time: not older
    /// than their license's watermark minus `allowed_lateness_ms`. Rows on time
    /// raise their license's newest time. Returns the mask (`None` when every row
    /// is on time, the usual case) and the number of late rows.
    pub(crate) fn observe(
        &mut self,
        license: &StringArray,
        time: &PrimitiveArray<TimestampMillisecondType>,
        allowed_lateness_ms: i64,
    ) -> (Option<Vec<bool>>, u64) {
        let mut on_time: Option<Vec<bool>> = None;
        let mut late = 0;
        // Batches hold runs of one license: look it up once per run, not per row.
        let mut current: Option<(&str, LicenseId)> = None;
        for row in 0..time.len() {
            let name = if license.is_null(row) { "" } else { license.value(row) };
            let id = match current {
                Some((n, id)) if n == name => id,
                _ => {
                    let id = self.intern(name);
                    current = Some((name, id));
                    id
                }
            };
            let t = time.value(row);
            let lt = &mut self.times[id as usize];
            if lt.watermark != i64::MIN && t < lt.watermark.saturating_sub(allowed_lateness_ms) {
                late += 1;
                on_time.get_or_insert_with(|| vec![true; time.len()])[row] = false;
                continue;
            }
            lt.newest = lt.newest.max(t);
        }
        (on_time, late)
    }

    /// Raise a license's newest time without judging lateness (warm-up replay).
    pub(crate) fn saw(&mut self, license: &str, time: i64) {
        let id = self.intern(license);
        let lt = &mut self.times[id as usize];
        lt.newest = lt.newest.max(time);
    }

    /// Make every license's newest time its watermark (called by `advance`).
    pub(crate) fn commit(&mut self) {
        for t in &mut self.times {
            t.watermark = t.watermark.max(t.newest);
            self.max = self.max.max(t.watermark);
        }
    }

    /// Forget every license's time (keeping the ids that per-key state refers to).
    pub(crate) fn forget_times(&mut self) {
        for t in &mut self.times {
            *t = UNSEEN;
        }
        self.max = i64::MIN;
    }

    /// The newest watermark of any license.
    pub(crate) fn max_watermark(&self) -> i64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::TimestampMillisecondArray;

    #[test]
    fn lateness_is_judged_against_the_rows_own_license() {
        let mut clock = LicenseClock::default();
        let licenses = StringArray::from(vec!["A", "B"]);
        let (mask, late) = clock.observe(&licenses, &TimestampMillisecondArray::from(vec![10_000, 1_000]), 0);
        assert_eq!((mask, late), (None, 0));
        clock.commit();
        // B's backlog far behind A is on time for B; A going back is late.
        let licenses = StringArray::from(vec!["B", "A", "B"]);
        let (mask, late) = clock.observe(&licenses, &TimestampMillisecondArray::from(vec![1_500, 9_000, 500]), 0);
        assert_eq!((mask, late), (Some(vec![true, false, false]), 2));
        clock.commit();
        assert_eq!(clock.watermark(clock.get("B").unwrap_or(99)), 1_500);
        assert_eq!(clock.watermark(clock.get("A").unwrap_or(99)), 10_000);
        assert_eq!(clock.max_watermark(), 10_000);
    }

    #[test]
    fn idle_licenses_no_key_refers_to_are_retired_and_their_ids_reused() {
        let mut clock = LicenseClock::default();
        let names: Vec<String> = (0..10).map(|i| format!("L{i}")).collect();
        let licenses = StringArray::from(names.clone());
        clock.observe(&licenses, &TimestampMillisecondArray::from((0..10).map(|i| i * 1_000).collect::<Vec<i64>>()), 0);
        clock.commit();
        let in_use: std::collections::HashSet<LicenseId> = [clock.get("L0").unwrap_or(99)].into_iter().collect();
        // Idle before 5 s: L1..L4 go, L0 stays because a key refers to it.
        assert_eq!(clock.retire(5_000, 100, &in_use), 4);
        assert!(clock.get("L0").is_some() && clock.get("L3").is_none() && clock.get("L5").is_some());
        // Over a cap of 4: the idle longest go (L0 is pinned) until four remain.
        assert_eq!(clock.retire(i64::MIN, 4, &in_use), 2);
        assert_eq!(clock.len(), 4);
        assert!(["L0", "L7", "L8", "L9"].iter().all(|l| clock.get(l).is_some()), "{clock:?}");
        // A new license takes a freed id, with no time of its own.
        let id = clock.intern("new");
        assert!(id < 10, "{id}");
        assert_eq!(clock.watermark(id), i64::MIN);
    }
}
