//! The tables of a SQL request in transit between nodes: a standby runs a SQL query itself
//! over the Parquet files the holder names and the live rows the holder sends (see
//! `metron_api::standby`), so that the holder only gathers what it alone has.
//!
//! Layout: the magic `MSQT1\n`, a 4-byte big-endian length, a JSON header
//! `{"root": <the holder's object root URL>, "tables": [{"name", "urls", "groupBy", "batches",
//! "bytes", "xxh3"}]}` and its XXH3-64 (8 bytes, big-endian), then each table's live rows: for
//! each batch, an Arrow IPC record batch message and its body, of the lengths `batches` gives,
//! `bytes` in all, whose XXH3-64 is `xxh3`.
//!
//! Nothing in it is trusted: a malformed body is an error, never a panic. Schemas do not travel:
//! a table is `events` ([`crate::events::schema`]) or a meter's rollups
//! ([`crate::rollups::schema`] of the `groupBy` keys), so Arrow never reads a schema from the
//! wire (its schema reader recurses into whatever nesting it is given, and a forged one overflows
//! the stack). Each part is checked against its checksum before it is read, and Arrow's batch
//! reader, which panics on some malformed messages (a buffer past the body's end), runs under
//! `catch_unwind`.

use super::{Error, Result, SqlTable};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::{
    DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
};
use datafusion::arrow::ipc::{MetadataVersion, reader::read_record_batch, root_as_message};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use xxhash_rust::xxh3::xxh3_64;

const MAGIC: &[u8] = b"MSQT1\n";

/// The media type of an encoded body.
pub const CONTENT_TYPE: &str = "application/vnd.metron.sql-tables";

/// The most batches or bytes one table's part of a body may declare (a forged header must not
/// make the reader allocate what it declares).
const BATCHES_MAX: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Header {
    root: String,
    tables: Vec<TableHeader>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TableHeader {
    name: String,
    urls: Vec<String>,
    /// `None`: the `events` table; else a meter's rollups with these group-by keys.
    group_by: Option<Vec<String>>,
    /// Each batch's message and body lengths.
    batches: Vec<(u64, u64)>,
    bytes: u64,
    xxh3: u64,
}

fn malformed(reason: impl std::fmt::Display) -> Error {
    Error::Wire(reason.to_string())
}

/// The schema a table of this kind has: see the module docs.
fn schema_of(group_by: Option<&[String]>) -> SchemaRef {
    match group_by {
        None => crate::events::schema(),
        Some(keys) => crate::rollups::schema(keys),
    }
}

/// The group-by keys of a meter table's schema, `None` for `events`; an error for a schema
/// that is neither (it could not be rebuilt on the other side).
fn kind_of(table: &SqlTable) -> Result<Option<Vec<String>>> {
    if table.schema == crate::events::schema() {
        return Ok(None);
    }
    let keys: Vec<String> = table
        .schema
        .fields()
        .iter()
        .filter_map(|f| f.name().strip_prefix("group_").map(str::to_owned))
        .collect();
    if table.schema == crate::rollups::schema(&keys) {
        Ok(Some(keys))
    } else {
        Err(malformed(format!(
            "table {} is neither events nor a meter's rollups",
            table.name
        )))
    }
}

/// Encodes `tables`, read from the object root at `root` (its URL).
pub fn encode(root: &str, tables: &[SqlTable]) -> Result<Vec<u8>> {
    let generator = IpcDataGenerator::default();
    let options = IpcWriteOptions::default();
    let mut context = IpcWriteContext::default();
    let mut headers = Vec::with_capacity(tables.len());
    let mut bodies = Vec::with_capacity(tables.len());
    for table in tables {
        let group_by = kind_of(table)?;
        let mut body = Vec::new();
        let mut batches = Vec::with_capacity(table.live.len());
        for batch in &table.live {
            let mut tracker = DictionaryTracker::new(false);
            let (dictionaries, encoded) =
                generator.encode(batch, &mut tracker, &options, &mut context)?;
            if !dictionaries.is_empty() {
                return Err(malformed(format!(
                    "table {}: dictionary columns",
                    table.name
                )));
            }
            batches.push((
                encoded.ipc_message.len() as u64,
                encoded.arrow_data.len() as u64,
            ));
            body.extend_from_slice(&encoded.ipc_message);
            body.extend_from_slice(&encoded.arrow_data);
        }
        headers.push(TableHeader {
            name: table.name.clone(),
            urls: table.urls.clone(),
            group_by,
            batches,
            bytes: body.len() as u64,
            xxh3: xxh3_64(&body),
        });
        bodies.push(body);
    }
    frame(root, headers, bodies)
}

fn frame(root: &str, tables: Vec<TableHeader>, bodies: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    let header = serde_json::to_vec(&Header {
        root: root.to_owned(),
        tables,
    })
    .map_err(malformed)?;
    let header_len = u32::try_from(header.len()).map_err(|_| malformed("header too large"))?;
    let mut out = Vec::with_capacity(
        MAGIC.len() + 12 + header.len() + bodies.iter().map(Vec::len).sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&xxh3_64(&header).to_be_bytes());
    for body in bodies {
        out.extend_from_slice(&body);
    }
    Ok(out)
}

/// Decodes what [`encode`] wrote: the root URL and the tables.
pub fn decode(bytes: &[u8]) -> Result<(String, Vec<SqlTable>)> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("not an encoding of SQL tables"))?;
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| malformed("truncated before the header"))?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(malformed("truncated in the header"));
    }
    let (header, rest) = rest.split_at(len);
    let (sum, mut rest) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| malformed("truncated after the header"))?;
    if u64::from_be_bytes(*sum) != xxh3_64(header) {
        return Err(malformed("the header's checksum does not match"));
    }
    let header: Header = serde_json::from_slice(header).map_err(malformed)?;
    let mut tables = Vec::with_capacity(header.tables.len().min(BATCHES_MAX));
    for table in header.tables {
        let n = usize::try_from(table.bytes).map_err(malformed)?;
        if rest.len() < n {
            return Err(malformed(format!("truncated in table {}", table.name)));
        }
        let (body, tail) = rest.split_at(n);
        rest = tail;
        if xxh3_64(body) != table.xxh3 {
            return Err(malformed(format!(
                "table {}: checksum mismatch",
                table.name
            )));
        }
        let schema = schema_of(table.group_by.as_deref());
        let live = read_batches(&table.name, &schema, &table.batches, body)?;
        tables.push(SqlTable {
            name: table.name,
            schema,
            urls: table.urls,
            live,
        });
    }
    if !rest.is_empty() {
        return Err(malformed("bytes after the last table"));
    }
    Ok((header.root, tables))
}

/// The batches of one table's part, read with the schema rebuilt here.
fn read_batches(
    name: &str,
    schema: &SchemaRef,
    lengths: &[(u64, u64)],
    mut body: &[u8],
) -> Result<Vec<RecordBatch>> {
    if lengths.len() > BATCHES_MAX {
        return Err(malformed(format!("table {name}: too many batches")));
    }
    let mut batches = Vec::with_capacity(lengths.len());
    for &(message_len, data_len) in lengths {
        let (Ok(message_len), Ok(data_len)) =
            (usize::try_from(message_len), usize::try_from(data_len))
        else {
            return Err(malformed(format!("table {name}: a batch too large")));
        };
        if body.len() < message_len.saturating_add(data_len) {
            return Err(malformed(format!("table {name}: a batch past its end")));
        }
        let (message, tail) = body.split_at(message_len);
        let (data, tail) = tail.split_at(data_len);
        body = tail;
        let read = std::panic::catch_unwind(|| -> Result<RecordBatch> {
            let message = root_as_message(message).map_err(malformed)?;
            let batch = message
                .header_as_record_batch()
                .ok_or_else(|| malformed("a message that is not a record batch"))?;
            let data = Buffer::from(data);
            Ok(read_record_batch(
                &data,
                batch,
                schema.clone(),
                &HashMap::new(),
                None,
                &MetadataVersion::V5,
            )?)
        });
        let batch =
            read.map_err(|_| malformed(format!("table {name}: Arrow could not read a batch")))??;
        batches.push(batch);
    }
    if !body.is_empty() {
        return Err(malformed(format!("table {name}: bytes after its batches")));
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, ArrayRef, Decimal256Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::i256;
    use std::sync::Arc;

    /// A meter table with two rows (group-by `model`) and an empty `events` table.
    fn tables() -> Vec<SqlTable> {
        let keys = vec!["model".to_owned()];
        let schema = crate::rollups::schema(&keys);
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "subject" => Arc::new(StringArray::from(vec!["a", "b"])),
                    "group_model" => Arc::new(StringArray::from(vec![Some("x"), None])),
                    "value" => Arc::new(
                        Decimal256Array::from(vec![Some(i256::from(7)), None])
                            .with_precision_and_scale(
                                crate::rollups::VALUE_PRECISION,
                                crate::rollups::VALUE_SCALE,
                            )
                            .expect("decimal"),
                    ),
                    "count" | "latest_ms" => Arc::new(Int64Array::from(vec![Some(1), None])),
                    _ => datafusion::arrow::array::new_null_array(f.data_type(), 2),
                }
            })
            .collect();
        // `minute` is not nullable: a real minute column.
        let mut columns = columns;
        columns[0] = Arc::new(
            datafusion::arrow::array::TimestampMillisecondArray::from(vec![60_000, 120_000])
                .with_timezone("UTC"),
        );
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
        assert_eq!(batch.column(0).null_count(), 0);
        vec![
            SqlTable {
                name: "meter_calls".into(),
                schema,
                urls: vec![
                    "s3://bucket/p/r1.parquet".into(),
                    "s3://bucket/p/r2.parquet".into(),
                ],
                live: vec![batch.clone(), batch.slice(1, 1)],
            },
            SqlTable {
                name: "events".into(),
                schema: crate::events::schema(),
                urls: Vec::new(),
                live: Vec::new(),
            },
        ]
    }

    // Proves a round trip keeps every table's name, files, schema and rows, empty tables
    // included.
    #[test]
    fn tables_survive_a_round_trip() {
        let sent = tables();
        let bytes = encode("s3://bucket/p", &sent).expect("encode");
        let (root, got) = decode(&bytes).expect("decode");
        assert_eq!(root, "s3://bucket/p");
        assert_eq!(got.len(), sent.len());
        for (got, sent) in got.iter().zip(&sent) {
            assert_eq!(got.name, sent.name);
            assert_eq!(got.urls, sent.urls);
            assert_eq!(got.schema, sent.schema);
            assert_eq!(got.live, sent.live);
        }
    }

    // Proves every truncation and every changed byte of a body is an error, not a panic.
    #[test]
    fn malformed_bodies_are_errors() {
        let bytes = encode("file:///data", &tables()).expect("encode");
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut]).is_err(),
                "a body cut at {cut} decoded"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x5a;
            assert!(
                decode(&flipped).is_err(),
                "a body with byte {i} changed decoded"
            );
        }
    }

    // Proves rows whose checksums match but which Arrow cannot read as the table's schema (a
    // batch's bytes changed, or a batch of another schema) are an error, not a panic.
    #[test]
    fn unreadable_rows_with_good_checksums_are_errors() {
        let sent = tables();
        let good = encode("file:///data", &sent[..1]).expect("encode");
        let (_, decoded) = decode(&good).expect("decode");
        assert_eq!(decoded[0].live, sent[0].live);
        let header_len = u32::from_be_bytes(good[6..10].try_into().expect("len")) as usize;
        let header: Header = serde_json::from_slice(&good[10..10 + header_len]).expect("header");
        let body = good[10 + header_len + 8..].to_vec();
        let forge = |body: Vec<u8>, group_by: Option<Vec<String>>| {
            let table = &header.tables[0];
            let forged = TableHeader {
                name: table.name.clone(),
                urls: table.urls.clone(),
                group_by,
                batches: table.batches.clone(),
                bytes: body.len() as u64,
                xxh3: xxh3_64(&body),
            };
            decode(&frame("file:///data", vec![forged], vec![body]).expect("frame"))
        };
        // The batches read as another table's schema.
        assert!(forge(body.clone(), None).is_err());
        assert!(forge(body.clone(), Some(Vec::new())).is_err());
        let mut errors = 0;
        for i in 0..body.len() {
            let mut changed = body.clone();
            changed[i] ^= 0xff;
            // Some changes leave readable rows (a value's bytes, padding): no error then.
            errors += usize::from(forge(changed, Some(vec!["model".into()])).is_err());
        }
        assert!(errors > 0, "no change made the rows unreadable");
    }
}
