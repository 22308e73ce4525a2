use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::segment::{FRAME_HEADER, INDEX_INTERVAL};
use super::*;

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build a tokio runtime: {e}"),
    }
}

fn config(partitions: u32) -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        partitions,
        ..EmbeddedLogConfig::default()
    }
}

fn open(dir: &Path, config: EmbeddedLogConfig) -> Arc<EmbeddedLog> {
    match EmbeddedLog::open(dir, config) {
        Ok(log) => log,
        Err(e) => panic!("open {} failed: {e}", dir.display()),
    }
}

fn payload(partition: PartitionId, i: usize) -> Bytes {
    Bytes::from(format!(
        "partition {partition} record {i} {}",
        "x".repeat(i % 17)
    ))
}

/// Every record of `partition` from `from` to its end offset, read `batch`
/// at a time, checking that offsets are contiguous.
async fn read_all(
    log: &EmbeddedLog,
    partition: PartitionId,
    from: Offset,
    batch: usize,
) -> Vec<Record> {
    let end = log.end_offset(partition).unwrap();
    let mut out = Vec::new();
    let mut next = from;
    while next < end {
        let records = log
            .read(partition, next, batch, Duration::ZERO)
            .await
            .unwrap();
        assert!(!records.is_empty(), "no records at {next} below end {end}");
        assert!(records.len() <= batch);
        for r in &records {
            assert_eq!(r.offset, next, "offsets must be contiguous");
            next += 1;
        }
        out.extend(records);
    }
    out
}

fn payloads(records: &[Record]) -> Vec<Bytes> {
    records.iter().map(|r| r.payload.clone()).collect()
}

fn segment_files(dir: &Path, partition: PartitionId) -> Vec<PathBuf> {
    let pdir = dir.join(format!("p-{partition:05}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

fn last_segment(dir: &Path, partition: PartitionId) -> PathBuf {
    segment_files(dir, partition).pop().unwrap()
}

#[test]
fn round_trip_over_several_partitions() {
    // Proves: records appended to several partitions are read back unchanged,
    // per partition and in order, with acks naming the right partition.
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let log = open(dir.path(), config(4));
        assert_eq!(log.partitions(), 4);
        let mut expected: Vec<Vec<Bytes>> = vec![Vec::new(); 4];
        for round in 0..5 {
            for p in 0..4u32 {
                let batch: Vec<Bytes> = (0..3).map(|i| payload(p, round * 3 + i)).collect();
                let ack = log.append(p, batch.clone()).await.unwrap();
                assert_eq!(ack.partition, p);
                expected[p as usize].extend(batch);
            }
        }
        for p in 0..4u32 {
            let records = read_all(&log, p, 0, 4).await;
            assert_eq!(payloads(&records), expected[p as usize]);
        }
    });
}

#[test]
fn offsets_are_contiguous_and_start_at_zero() {
    // Proves: per-partition offsets start at 0 and each ack continues exactly
    // where the previous one ended, including empty appends; end_offset is
    // the next offset to be written.
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let log = open(dir.path(), config(2));
        assert_eq!(log.end_offset(0).unwrap(), 0);
        let mut next = 0;
        for n in [1usize, 5, 0, 3, 7] {
            let batch = (0..n).map(|i| payload(0, i)).collect();
            let ack = log.append(0, batch).await.unwrap();
            assert_eq!(ack.first_offset, next);
            assert_eq!(ack.next_offset, next + n as u64);
            next = ack.next_offset;
            assert_eq!(log.end_offset(0).unwrap(), next);
        }
        // Partition 1 is independent.
        assert_eq!(log.end_offset(1).unwrap(), 0);
        let ack = log.append(1, vec![payload(1, 0)]).await.unwrap();
        assert_eq!((ack.first_offset, ack.next_offset), (0, 1));
    });
}

#[test]
fn reopen_keeps_all_data_and_offsets() {
    // Proves: after close and reopen every record is still there, end offsets
    // are restored, and new appends continue at the restored offsets.
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut expected: Vec<Vec<Bytes>> = vec![Vec::new(); 3];
    rt.block_on(async {
        let log = open(dir.path(), config(3));
        for p in 0..3u32 {
            let batch: Vec<Bytes> = (0..(p as usize + 1) * 10).map(|i| payload(p, i)).collect();
            log.append(p, batch.clone()).await.unwrap();
            expected[p as usize].extend(batch);
        }
        log.close();
    });
    rt.block_on(async {
        let log = open(dir.path(), config(3));
        for p in 0..3u32 {
            assert_eq!(
                log.end_offset(p).unwrap(),
                expected[p as usize].len() as u64
            );
            assert_eq!(
                payloads(&read_all(&log, p, 0, 7).await),
                expected[p as usize]
            );
            let ack = log.append(p, vec![payload(p, 999)]).await.unwrap();
            assert_eq!(ack.first_offset, expected[p as usize].len() as u64);
        }
    });
}

/// Appends 10 records to partition 0, damages the end of its last segment
/// with `damage`, reopens, and checks that `kept` records survive and that
/// appends continue at offset `kept` (also across one more reopen).
fn torn_tail_case(damage: impl FnOnce(&Path), kept: u64) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let originals: Vec<Bytes> = (0..10).map(|i| payload(0, i)).collect();
    rt.block_on(async {
        let log = open(dir.path(), config(1));
        for p in &originals {
            log.append(0, vec![p.clone()]).await.unwrap();
        }
    });
    damage(&last_segment(dir.path(), 0));
    rt.block_on(async {
        let log = open(dir.path(), config(1));
        assert_eq!(log.end_offset(0).unwrap(), kept);
        let records = read_all(&log, 0, 0, 100).await;
        assert_eq!(payloads(&records), originals[..kept as usize]);
        let ack = log
            .append(0, vec![Bytes::from_static(b"after repair")])
            .await
            .unwrap();
        assert_eq!(ack.first_offset, kept);
    });
    rt.block_on(async {
        let log = open(dir.path(), config(1));
        assert_eq!(log.end_offset(0).unwrap(), kept + 1);
        let records = read_all(&log, 0, 0, 100).await;
        assert_eq!(
            records.last().unwrap().payload,
            Bytes::from_static(b"after repair")
        );
    });
}

#[test]
fn torn_tail_of_garbage_is_truncated() {
    // Proves: garbage after the last complete frame (here bytes whose length
    // field points past the end of the file) is cut off on open and no record
    // is lost.
    torn_tail_case(
        |path| {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            f.write_all(b"garbage that is not a frame").unwrap();
        },
        10,
    );
}

#[test]
fn zero_filled_tail_is_truncated() {
    // Proves: a tail of zeros (a file extended but never written, as some file
    // systems leave after a crash) is not read as empty records: the crc covers
    // the length, so a zero header never validates.
    torn_tail_case(
        |path| {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            f.write_all(&[0u8; 64]).unwrap();
        },
        10,
    );
}

#[test]
fn torn_tail_shorter_than_a_header_is_truncated() {
    // Proves: a few stray bytes, too short for a frame header, are cut off.
    torn_tail_case(
        |path| {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            f.write_all(&[1, 2, 3]).unwrap();
        },
        10,
    );
}

#[test]
fn torn_tail_of_a_half_frame_is_truncated() {
    // Proves: a frame whose payload was only half written is dropped, and the
    // records before it are kept.
    torn_tail_case(
        |path| {
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            let len = f.metadata().unwrap().len();
            let last = payload(0, 9).len() as u64;
            f.set_len(len - last / 2).unwrap();
        },
        9,
    );
}

#[test]
fn torn_tail_with_a_flipped_payload_byte_is_truncated() {
    // Proves: a last frame whose payload fails its crc is dropped.
    torn_tail_case(
        |path| {
            let mut bytes = std::fs::read(path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x40;
            std::fs::write(path, bytes).unwrap();
        },
        9,
    );
}

#[test]
fn corruption_in_a_sealed_segment_is_an_error() {
    // Proves: a crc mismatch inside a segment that is not the last one is
    // reported as Corrupt with its path and position, not silently truncated.
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let cfg = EmbeddedLogConfig {
            segment_bytes_max: 128,
            ..config(1)
        };
        let log = open(dir.path(), cfg);
        for i in 0..20 {
            log.append(0, vec![payload(0, i)]).await.unwrap();
        }
    });
    let files = segment_files(dir.path(), 0);
    assert!(files.len() > 2);
    let first = &files[0];
    let mut bytes = std::fs::read(first).unwrap();
    bytes[FRAME_HEADER] ^= 0x01; // first payload byte of the first frame
    std::fs::write(first, bytes).unwrap();
    match EmbeddedLog::open(dir.path(), config(1)) {
        Err(Error::Corrupt { path, position }) => {
            assert_eq!(&path, first);
            assert_eq!(position, 0);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn segments_roll_and_reads_cross_them_from_any_offset() {
    // Proves: with a small segment_bytes_max the log rolls into many segment
    // files named by their base offsets, and reads starting at every offset
    // return the right records across segment boundaries, from disk (cache
    // disabled) and after reopen.
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let cfg = EmbeddedLogConfig {
        segment_bytes_max: 200,
        tail_cache_bytes_max: 0,
        ..config(1)
    };
    let originals: Vec<Bytes> = (0..100).map(|i| payload(0, i)).collect();
    rt.block_on(async {
        let log = open(dir.path(), cfg.clone());
        for chunk in originals.chunks(7) {
            log.append(0, chunk.to_vec()).await.unwrap();
        }
        let files = segment_files(dir.path(), 0);
        assert!(files.len() >= 10, "only {} segments", files.len());
        // Names are the base offsets and every segment respects the limit
        // (no single record here exceeds it).
        let mut expected_base = 0;
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(name, format!("{expected_base:020}.seg"));
            let len = std::fs::metadata(f).unwrap().len();
            assert!(len <= 200, "{name} has {len} bytes");
            let mut count = 0;
            let bytes = std::fs::read(f).unwrap();
            let mut pos = 0;
            while pos < bytes.len() {
                let l = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
                pos += FRAME_HEADER + l;
                count += 1;
            }
            expected_base += count;
        }
        assert_eq!(expected_base, 100);
    });
    for round in 0..2 {
        rt.block_on(async {
            let log = open(dir.path(), cfg.clone());
            for from in 0..100u64 {
                let records = log.read(0, from, 13, Duration::ZERO).await.unwrap();
                let want = (100 - from).min(13) as usize;
                assert_eq!(records.len(), want, "round {round} from {from}");
                for (k, r) in records.iter().enumerate() {
                    assert_eq!(r.offset, from + k as u64);
                    assert_eq!(r.payload, originals[(from as usize) + k]);
                }
            }
        });
    }
}

#[test]
fn sparse_index_serves_reads_from_arbitrary_offsets() {
    // Proves: a large segment gets a sparse index entry every INDEX_INTERVAL
    // records, both while writing and when rebuilt on open, and disk reads
    // starting around index entries return the right records.
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let cfg = EmbeddedLogConfig {
        tail_cache_bytes_max: 0,
        ..config(1)
    };
    let n = 2 * INDEX_INTERVAL as usize + 1000;
    let originals: Vec<Bytes> = (0..n).map(|i| Bytes::from(format!("r{i}"))).collect();
    let probes = [
        0,
        1,
        INDEX_INTERVAL - 1,
        INDEX_INTERVAL,
        INDEX_INTERVAL + 1,
        2 * INDEX_INTERVAL - 1,
        2 * INDEX_INTERVAL,
        n as u64 - 1,
    ];
    for reopen in [false, true] {
        rt.block_on(async {
            let log = open(dir.path(), cfg.clone());
            if !reopen {
                for chunk in originals.chunks(1000) {
                    log.append(0, chunk.to_vec()).await.unwrap();
                }
            }
            {
                let state = log.shared.partitions[0].state.read();
                assert_eq!(state.segments.len(), 1);
                let index = &state.segments[0].index;
                assert_eq!(index.len(), 2, "reopen={reopen}");
                assert_eq!(index[0].0, INDEX_INTERVAL);
                assert_eq!(index[1].0, 2 * INDEX_INTERVAL);
                assert_eq!(state.segments[0].seek(INDEX_INTERVAL + 5), index[0]);
                assert_eq!(state.segments[0].seek(5), (0, 0));
            }
            for from in probes {
                let records = log.read(0, from, 3, Duration::ZERO).await.unwrap();
                assert!(!records.is_empty());
                for (k, r) in records.iter().enumerate() {
                    assert_eq!(r.offset, from + k as u64);
                    assert_eq!(r.payload, originals[from as usize + k]);
                }
            }
        });
    }
}

#[test]
fn commit_deletes_covered_segments_and_older_offsets_are_gone() {
    // Proves: commit deletes exactly the segments whose records are all below
    // the committed offset (never the active one), reads below the earliest
    // kept offset fail with OffsetDeleted, kept records still read, the
    // deletion survives reopen, and committing past the end is refused.
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let cfg = EmbeddedLogConfig {
        segment_bytes_max: 120,
        ..config(1)
    };
    let originals: Vec<Bytes> = (0..60).map(|i| payload(0, i)).collect();
    rt.block_on(async {
        let log = open(dir.path(), cfg.clone());
        log.append(0, originals.clone()).await.unwrap();
        let before = segment_files(dir.path(), 0).len();
        assert!(before > 5);

        log.commit(0, 23).await.unwrap();
        let earliest = log.earliest_offset(0).unwrap();
        assert!(earliest > 0 && earliest <= 23, "earliest {earliest}");
        let files = segment_files(dir.path(), 0);
        assert!(files.len() < before);
        assert_eq!(
            files[0].file_name().unwrap().to_string_lossy(),
            format!("{earliest:020}.seg")
        );
        match log.read(0, 0, 10, Duration::ZERO).await {
            Err(Error::OffsetDeleted {
                partition: 0,
                offset: 0,
                earliest: e,
            }) => assert_eq!(e, earliest),
            other => panic!("expected OffsetDeleted, got {other:?}"),
        }
        let kept = read_all(&log, 0, earliest, 9).await;
        assert_eq!(payloads(&kept), originals[earliest as usize..]);

        // Committing everything keeps the active segment.
        log.commit(0, 60).await.unwrap();
        assert_eq!(segment_files(dir.path(), 0).len(), 1);
        assert_eq!(log.end_offset(0).unwrap(), 60);
        assert!(matches!(
            log.commit(0, 61).await,
            Err(Error::OffsetOutOfRange {
                offset: 61,
                end_offset: 60,
                ..
            })
        ));
    });
    rt.block_on(async {
        let log = open(dir.path(), cfg);
        let earliest = log.earliest_offset(0).unwrap();
        assert!(earliest > 23);
        assert_eq!(log.end_offset(0).unwrap(), 60);
        let ack = log.append(0, vec![payload(0, 60)]).await.unwrap();
        assert_eq!(ack.first_offset, 60);
        assert!(matches!(
            log.read(0, earliest - 1, 1, Duration::ZERO).await,
            Err(Error::OffsetDeleted { .. })
        ));
    });
}

#[test]
fn group_commit_shares_syncs_between_concurrent_appends() {
    // Proves: 200 appends issued concurrently from separate tasks are made
    // durable with far fewer fsyncs than appends, and each still gets its own
    // contiguous offsets.
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let log = open(dir.path(), config(2));
        let barrier = Arc::new(tokio::sync::Barrier::new(200));
        let tasks: Vec<_> = (0..200usize)
            .map(|i| {
                let log = Arc::clone(&log);
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    let p = (i % 2) as u32;
                    log.append(p, vec![payload(p, i), payload(p, i + 1000)])
                        .await
                })
            })
            .collect();
        let mut acks = Vec::new();
        for t in tasks {
            acks.push(t.await.unwrap().unwrap());
        }
        let stats = log.stats();
        assert_eq!(stats.appends, 200);
        assert_eq!(stats.records, 400);
        assert!(
            stats.syncs * 4 <= stats.appends,
            "{} syncs for {} appends",
            stats.syncs,
            stats.appends
        );
        for p in 0..2u32 {
            let mut ranges: Vec<(u64, u64)> = acks
                .iter()
                .filter(|a| a.partition == p)
                .map(|a| (a.first_offset, a.next_offset))
                .collect();
            ranges.sort_unstable();
            let mut next = 0;
            for (first, end) in ranges {
                assert_eq!((first, end), (next, next + 2));
                next = end;
            }
            assert_eq!(log.end_offset(p).unwrap(), 200);
        }
    });
}

#[test]
fn queued_appends_issued_at_once_share_one_sync() {
    // Proves: appends queued while the writer is busy are all written by the
    // next batch with a single fsync.
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let log = open(dir.path(), config(1));
        let resume = log.pause_writer().unwrap();
        let futures: Vec<_> = (0..50)
            .map(|i| log.append(0, vec![payload(0, i)]))
            .collect();
        drop(resume);
        for ack in futures::future::join_all(futures).await {
            ack.unwrap();
        }
        let stats = log.stats();
        assert_eq!(stats.appends, 50);
        assert_eq!(stats.syncs, 1);
        assert_eq!(
            stats.bytes,
            (0..50)
                .map(|i| (FRAME_HEADER + payload(0, i).len()) as u64)
                .sum::<u64>()
        );
    });
}

#[test]
fn read_waits_then_returns_empty_or_wakes_on_append() {
    // Proves: a read at the end offset waits up to max_wait and returns an
    // empty Vec on timeout, and a waiting read is woken by an append and
    // returns the new record well before its max_wait.
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let log = open(dir.path(), config(1));
        let started = Instant::now();
        let records = log
            .read(0, 0, 10, Duration::from_millis(150))
            .await
            .unwrap();
        assert!(records.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(140));

        let reader = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let started = Instant::now();
                let records = log.read(0, 0, 10, Duration::from_secs(30)).await;
                (records, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        log.append(0, vec![Bytes::from_static(b"wake up")])
            .await
            .unwrap();
        let (records, waited) = reader.await.unwrap();
        let records = records.unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].payload, Bytes::from_static(b"wake up"));
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");

        // max_records == 0 never waits.
        let started = Instant::now();
        assert!(
            log.read(0, 1, 0, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    });
}

#[test]
fn full_queue_fails_fast_with_overloaded() {
    // Proves: with the writer blocked and the queue full, append fails at
    // once with Overloaded (the 429 case), and the queued appends still
    // complete once the writer runs again.
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let cfg = EmbeddedLogConfig {
            queue_batches_max: 2,
            ..config(1)
        };
        let log = open(dir.path(), cfg);
        let resume = log.pause_writer().unwrap();
        let a = log.append(0, vec![Bytes::from_static(b"a")]);
        let b = log.append(0, vec![Bytes::from_static(b"b")]);
        match log.append(0, vec![Bytes::from_static(b"c")]).await {
            Err(Error::Overloaded { queued }) => assert_eq!(queued, 2),
            other => panic!("expected Overloaded, got {other:?}"),
        }
        drop(resume);
        assert_eq!(a.await.unwrap().first_offset, 0);
        assert_eq!(b.await.unwrap().first_offset, 1);
        // The queue drains, so appends are accepted again.
        assert_eq!(
            log.append(0, vec![Bytes::from_static(b"c")])
                .await
                .unwrap()
                .first_offset,
            2
        );
    });
}

#[test]
fn close_finishes_queued_appends_then_refuses() {
    // Proves: close waits for appends already queued and makes them durable;
    // afterwards appends and waiting reads fail with Closed while existing
    // records can still be read.
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let log = open(dir.path(), config(1));
        let resume = log.pause_writer().unwrap();
        let queued: Vec<_> = (0..5).map(|i| log.append(0, vec![payload(0, i)])).collect();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(resume);
        });
        log.close();
        releaser.join().unwrap();
        for (i, ack) in futures::future::join_all(queued)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(ack.unwrap().first_offset, i as u64);
        }
        assert!(matches!(
            log.append(0, vec![payload(0, 9)]).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            log.read(0, 5, 10, Duration::from_secs(30)).await,
            Err(Error::Closed)
        ));
        assert_eq!(read_all(&log, 0, 0, 10).await.len(), 5);
        log.close();
    });
}

#[test]
fn bad_input_is_refused_with_errors() {
    // Proves: unknown partitions, oversized records, reads past the end and
    // unusable configurations are errors, not panics, and nothing is written.
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let cfg = EmbeddedLogConfig {
            record_bytes_max: 16,
            ..config(2)
        };
        let log = open(dir.path(), cfg);
        assert!(matches!(
            log.append(2, vec![Bytes::new()]).await,
            Err(Error::UnknownPartition {
                partition: 2,
                partitions: 2
            })
        ));
        assert!(matches!(
            log.read(7, 0, 1, Duration::ZERO).await,
            Err(Error::UnknownPartition { partition: 7, .. })
        ));
        assert!(matches!(
            log.end_offset(9),
            Err(Error::UnknownPartition { .. })
        ));
        assert!(matches!(
            log.commit(9, 0).await,
            Err(Error::UnknownPartition { .. })
        ));
        assert!(matches!(
            log.append(
                0,
                vec![Bytes::from_static(b"ok"), Bytes::from(vec![0u8; 17])]
            )
            .await,
            Err(Error::RecordTooLarge { len: 17, max: 16 })
        ));
        assert_eq!(log.end_offset(0).unwrap(), 0);
        assert!(matches!(
            log.read(0, 1, 1, Duration::ZERO).await,
            Err(Error::OffsetOutOfRange {
                offset: 1,
                end_offset: 0,
                ..
            })
        ));
    });
    let other = tempfile::tempdir().unwrap();
    for cfg in [
        EmbeddedLogConfig {
            partitions: 0,
            ..EmbeddedLogConfig::default()
        },
        EmbeddedLogConfig {
            queue_batches_max: 0,
            ..EmbeddedLogConfig::default()
        },
        EmbeddedLogConfig {
            segment_bytes_max: 0,
            ..EmbeddedLogConfig::default()
        },
    ] {
        assert!(matches!(
            EmbeddedLog::open(other.path(), cfg),
            Err(Error::InvalidConfig { .. })
        ));
    }
}

#[test]
fn reopening_with_another_partition_count_fails() {
    // Proves: the partition count is persisted and reopening with a different
    // one is a PartitionCountMismatch, while the same count reopens fine.
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), config(2)));
    match EmbeddedLog::open(dir.path(), config(3)) {
        Err(Error::PartitionCountMismatch {
            persisted,
            requested,
            ..
        }) => assert_eq!((persisted, requested), (2, 3)),
        other => panic!("expected PartitionCountMismatch, got {other:?}"),
    }
    assert_eq!(open(dir.path(), config(2)).partitions(), 2);
}

#[test]
fn a_stream_directory_is_opened_once() {
    // Proves: a second EmbeddedLog on the same directory is refused with
    // Locked while the first is alive, and allowed once it is dropped.
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), config(1));
    assert!(matches!(
        EmbeddedLog::open(dir.path(), config(1)),
        Err(Error::Locked { .. })
    ));
    drop(first);
    drop(open(dir.path(), config(1)));
}

#[test]
fn tail_cache_stays_bounded_and_evicted_records_come_from_disk() {
    // Proves: the tail cache never holds more than tail_cache_bytes_max
    // across partitions, evicts the oldest records first, and records it no
    // longer holds are read from disk.
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let cfg = EmbeddedLogConfig {
            tail_cache_bytes_max: 2000,
            ..config(2)
        };
        let log = open(dir.path(), cfg);
        let mut expected: Vec<Vec<Bytes>> = vec![Vec::new(); 2];
        for i in 0..60 {
            let p = (i % 2) as u32;
            let batch = vec![payload(p, i)];
            log.append(p, batch.clone()).await.unwrap();
            expected[p as usize].extend(batch);
        }
        {
            let cache = log.shared.cache.lock();
            assert!(cache.bytes <= 2000, "cache holds {} bytes", cache.bytes);
            assert!(cache.bytes > 0);
            let first0 = cache.partitions[0].front().unwrap();
            let first1 = cache.partitions[1].front().unwrap();
            // Oldest first across partitions: the fronts were appended
            // next to each other.
            assert!(first0.record.offset > 0 && first1.record.offset > 0);
            assert!(first0.seq.abs_diff(first1.seq) <= 1);
            assert_eq!(cache.partitions[0].back().unwrap().record.offset, 29);
        }
        for p in 0..2u32 {
            assert_eq!(
                payloads(&read_all(&log, p, 0, 8).await),
                expected[p as usize]
            );
        }
    });
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        partition: u32,
        payloads: Vec<Vec<u8>>,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..3, proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..6))
            .prop_map(|(partition, payloads)| Op::Append { partition, payloads }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn appended_records_read_back_identically_across_reopens(
        ops in proptest::collection::vec(op(), 1..25),
        segment_bytes_max in 16u64..600,
        tail_cache_bytes_max in 0usize..3000,
        read_batch in 1usize..9,
    ) {
        // Proves: for random appends (empty payloads and empty batches
        // included), random segment sizes, cache sizes and reopen points,
        // acks hand out contiguous offsets and every record reads back equal
        // to what was appended, in order, before and after each reopen.
        let dir = tempfile::tempdir().unwrap();
        let cfg = EmbeddedLogConfig {
            segment_bytes_max,
            tail_cache_bytes_max,
            ..config(3)
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut model: Vec<Vec<Bytes>> = vec![Vec::new(); 3];
        let mut log = Some(open(dir.path(), cfg.clone()));
        let check = |log: &EmbeddedLog, model: &[Vec<Bytes>]| -> Result<(), TestCaseError> {
            for p in 0..3u32 {
                prop_assert_eq!(log.end_offset(p).unwrap(), model[p as usize].len() as u64);
                let records = rt.block_on(read_all(log, p, 0, read_batch));
                prop_assert_eq!(payloads(&records), model[p as usize].clone());
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Append { partition, payloads: batch } => {
                    let batch: Vec<Bytes> = batch.into_iter().map(Bytes::from).collect();
                    let current = log.as_ref().unwrap();
                    let ack = rt.block_on(current.append(partition, batch.clone())).unwrap();
                    let had = model[partition as usize].len() as u64;
                    prop_assert_eq!(ack.first_offset, had);
                    prop_assert_eq!(ack.next_offset, had + batch.len() as u64);
                    model[partition as usize].extend(batch);
                }
                Op::Reopen => {
                    check(log.as_ref().unwrap(), &model)?;
                    drop(log.take());
                    log = Some(open(dir.path(), cfg.clone()));
                }
            }
        }
        check(log.as_ref().unwrap(), &model)?;
        drop(log.take());
        let reopened = open(dir.path(), cfg);
        check(&reopened, &model)?;
    }
}

#[test]
fn failed_write_is_rolled_back_and_appends_continue() {
    // Proves: when a segment write fails half way, the appenders of that
    // batch get an Io error, the half-written bytes and any segment created
    // by the batch are removed, nothing of the batch becomes readable, and
    // later appends continue at the old end offset (also after reopen).
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let cfg = EmbeddedLogConfig {
        segment_bytes_max: 100,
        ..config(1)
    };
    let record = |i: usize| Bytes::from(format!("record {i:02} {}", "y".repeat(20)));
    let frame = (FRAME_HEADER + record(0).len()) as u64;
    rt.block_on(async {
        let log = open(dir.path(), cfg.clone());
        log.append(0, vec![record(0)]).await.unwrap();

        // Fails the write into the active segment.
        log.shared.fail_nth_write.store(1, Ordering::SeqCst);
        assert!(matches!(
            log.append(0, vec![record(90)]).await,
            Err(Error::Io { .. })
        ));
        assert_eq!(log.end_offset(0).unwrap(), 1);
        let files = segment_files(dir.path(), 0);
        assert_eq!(files.len(), 1);
        assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), frame);

        log.append(0, vec![record(1)]).await.unwrap();
        // The next record does not fit: this batch rolls to a new segment,
        // whose write fails.
        log.shared.fail_nth_write.store(1, Ordering::SeqCst);
        assert!(matches!(
            log.append(0, vec![record(91), record(92)]).await,
            Err(Error::Io { .. })
        ));
        assert_eq!(log.end_offset(0).unwrap(), 2);
        let files = segment_files(dir.path(), 0);
        assert_eq!(files.len(), 1, "the new segment must be removed: {files:?}");
        assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), 2 * frame);
        assert_eq!(
            payloads(&read_all(&log, 0, 0, 10).await),
            vec![record(0), record(1)]
        );

        let ack = log.append(0, vec![record(2), record(3)]).await.unwrap();
        assert_eq!((ack.first_offset, ack.next_offset), (2, 4));
        assert_eq!(segment_files(dir.path(), 0).len(), 2);
    });
    rt.block_on(async {
        let log = open(dir.path(), cfg);
        assert_eq!(
            payloads(&read_all(&log, 0, 0, 10).await),
            (0..4).map(record).collect::<Vec<_>>()
        );
    });
}
