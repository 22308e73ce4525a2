//! Every object-store name Metron writes comes from here; nobody formats a path by hand.

use chrono::NaiveDate;
use datafusion::object_store::path::Path as ObjectPath;

/// Prefix of the checkpoint manifests.
pub const CHECKPOINTS: &str = "checkpoints";
/// Prefix of the minute-rollup files.
pub const ROLLUPS: &str = "rollups";
/// Prefix of the raw-event files.
pub const EVENTS: &str = "events";

/// Prefix of the dedup index's runs, copied there when several nodes share a stream.
pub const DEDUP: &str = "dedup";

/// The copy of a dedup run file (`run-….dat`) whose keys have the body checksum `checksum`:
/// two runs of the same name from different nodes never share an object.
pub fn dedup_run(file_name: &str, checksum: u64) -> ObjectPath {
    let stem = file_name.strip_suffix(".dat").unwrap_or(file_name);
    ObjectPath::from(format!("{DEDUP}/{stem}-{checksum:016x}.dat"))
}

/// This process's mark in the name of every data file it writes: ten random characters,
/// made once per process. Two processes never write the same name, so a node that lost its
/// leases while paused (and has not noticed yet) cannot overwrite the files of the node that
/// took over, even at the same checkpoint epoch; only the create-only manifest decides which
/// files count.
pub fn writer() -> &'static str {
    static WRITER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    WRITER.get_or_init(|| {
        let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
        id.get(id.len().saturating_sub(10)..)
            .unwrap_or(&id)
            .to_owned()
    })
}

/// A minute-rollup file of one meter, written by checkpoint `epoch`.
pub fn rollup_file(namespace: &str, meter_id: &str, epoch: u64, seq: u32) -> ObjectPath {
    ObjectPath::from(format!(
        "{ROLLUPS}/namespace={namespace}/meter={meter_id}/e{epoch:020}-{seq:05}-{}.parquet",
        writer()
    ))
}

/// An hourly-rollup file of one meter (rows per hour: see `manifest::RollupFile::hourly`),
/// written by checkpoint `epoch`.
pub fn hourly_rollup_file(namespace: &str, meter_id: &str, epoch: u64, seq: u32) -> ObjectPath {
    ObjectPath::from(format!(
        "{ROLLUPS}/namespace={namespace}/meter={meter_id}/hourly/e{epoch:020}-{seq:05}-{}.parquet",
        writer()
    ))
}

/// A raw-event file of one partition and one day (UTC), written by checkpoint `epoch`.
pub fn event_file(
    namespace: &str,
    day: NaiveDate,
    epoch: u64,
    partition: u32,
    seq: u32,
) -> ObjectPath {
    ObjectPath::from(format!(
        "{EVENTS}/namespace={namespace}/day={day}/e{epoch:020}-p{partition:05}-{seq:03}-{}.parquet",
        writer()
    ))
}

/// The manifest of checkpoint `epoch`.
pub fn manifest(epoch: u64) -> ObjectPath {
    ObjectPath::from(format!("{CHECKPOINTS}/manifest-{epoch:020}.json"))
}

/// The epoch of a manifest path, if it is one.
pub fn manifest_epoch(path: &ObjectPath) -> Option<u64> {
    let name = path.filename()?;
    name.strip_prefix("manifest-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_round_trip() {
        let path = manifest(42);
        assert_eq!(
            path.as_ref(),
            "checkpoints/manifest-00000000000000000042.json"
        );
        assert_eq!(manifest_epoch(&path), Some(42));
        assert_eq!(
            manifest_epoch(&ObjectPath::from("checkpoints/other.json")),
            None
        );
        let day = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap_or_default();
        assert_eq!(
            event_file("default", day, 3, 1, 0).as_ref(),
            format!(
                "events/namespace=default/day=2024-01-02/e00000000000000000003-p00001-000-{}.parquet",
                writer()
            )
        );
        assert_eq!(writer().len(), 10);
        assert_eq!(writer(), writer(), "one mark per process");
    }
}
