//! Process-wide counters, rendered in Prometheus text format. Names come from here.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub events_ingested_total: AtomicU64,
    pub ingest_requests_total: AtomicU64,
    pub ingest_rejected_total: AtomicU64,
    pub ingest_overloaded_total: AtomicU64,
    pub events_processed_total: AtomicU64,
    pub events_duplicate_total: AtomicU64,
    pub events_invalid_total: AtomicU64,
    pub checkpoints_total: AtomicU64,
    pub checkpoint_failures_total: AtomicU64,
    pub parquet_files_written_total: AtomicU64,
    pub meter_queries_total: AtomicU64,
    pub sql_queries_total: AtomicU64,
    pub sql_tables_sent_total: AtomicU64,
    /// A gauge, not rendered with the counters: estimated bytes of the events partitions hold.
    pub held_event_bytes: AtomicU64,
    /// A gauge: estimated bytes of the meters' minute states no committed checkpoint holds.
    pub live_window_bytes: AtomicU64,
    /// A gauge: the epoch of the newest checkpoint this node committed, or loaded at its start.
    pub checkpoint_epoch: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition of every counter, the given counters kept elsewhere
    /// (name, help, value) and the given gauges.
    pub fn render(&self, more: &[(&str, &str, u64)], gauges: &[(&str, &str, f64)]) -> String {
        let counters: [(&str, &AtomicU64, &str); 13] = [
            (
                "metron_events_ingested_total",
                &self.events_ingested_total,
                "Events acknowledged by the ingest API.",
            ),
            (
                "metron_ingest_requests_total",
                &self.ingest_requests_total,
                "Ingest requests received.",
            ),
            (
                "metron_ingest_rejected_total",
                &self.ingest_rejected_total,
                "Ingest requests rejected as invalid.",
            ),
            (
                "metron_ingest_overloaded_total",
                &self.ingest_overloaded_total,
                "Ingest requests answered 429.",
            ),
            (
                "metron_events_processed_total",
                &self.events_processed_total,
                "Events read from the stream by partition actors.",
            ),
            (
                "metron_events_duplicate_total",
                &self.events_duplicate_total,
                "Events dropped as duplicates.",
            ),
            (
                "metron_events_invalid_total",
                &self.events_invalid_total,
                "Event-meter pairs with a validation error.",
            ),
            (
                "metron_checkpoints_total",
                &self.checkpoints_total,
                "Checkpoints committed.",
            ),
            (
                "metron_checkpoint_failures_total",
                &self.checkpoint_failures_total,
                "Checkpoints that failed and will be retried.",
            ),
            (
                "metron_parquet_files_written_total",
                &self.parquet_files_written_total,
                "Parquet files written.",
            ),
            (
                "metron_meter_queries_total",
                &self.meter_queries_total,
                "Meter queries answered.",
            ),
            (
                "metron_sql_queries_total",
                &self.sql_queries_total,
                "SQL queries answered.",
            ),
            (
                "metron_sql_tables_sent_total",
                &self.sql_tables_sent_total,
                "SQL queries' files and live rows sent to a standby, which ran the query.",
            ),
        ];
        let mut out = String::new();
        for (name, value, help) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        for (name, help, value) in more {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}
