//! What the bench programs share: process figures from /proc and percentiles.

/// User + system CPU seconds of process `pid` and its resident memory in KiB as the
/// `/proc/<pid>/status` field `rss_field` has it (`VmRSS:` for all of it, `RssAnon:` for the
/// anonymous part).
pub fn proc_stats(pid: u32, rss_field: &str) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with(rss_field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())?;
    Some(((utime + stime) / ticks, rss_kb))
}

/// The `p` quantile (0–1) of `sorted`, nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&sorted, 0.5), 3.0);
        assert_eq!(percentile(&sorted, 1.0), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn own_process_has_cpu_and_memory() {
        let (cpu, rss) = proc_stats(std::process::id(), "VmRSS:").unwrap();
        assert!(cpu >= 0.0);
        assert!(rss > 0);
        assert!(proc_stats(std::process::id(), "NoSuchField:").is_none());
    }
}
