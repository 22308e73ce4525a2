//! Object roots for tests, one per backend: the storage suite runs each case on a local
//! directory and, when `METRON_TEST_S3_ENDPOINT` names an S3-compatible server
//! (`./scripts/test` starts moto on loopback), on a fresh prefix of a bucket there.
//! With `CI` set and no endpoint, asking for the roots fails: CI never skips S3 silently.

use super::{ObjectRoot, StorageOptions};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// The variable naming the S3-compatible server (`http://127.0.0.1:5555`).
pub const ENDPOINT_VAR: &str = "METRON_TEST_S3_ENDPOINT";
/// The bucket tests write under, one prefix per test (created if missing).
pub const BUCKET: &str = "metron-test";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "CI is set but {ENDPOINT_VAR} is not: the S3 backend must run (./scripts/test starts moto)"
    )]
    EndpointMissing,
    #[error("cannot create bucket {bucket} at {endpoint}: {reason}")]
    Bucket {
        bucket: String,
        endpoint: String,
        reason: String,
    },
    #[error(transparent)]
    Objects(#[from] super::Error),
}

/// One root per backend: `("local", root under local_dir)` and, when the endpoint is set,
/// `("s3", root on s3://metron-test/<test>-<ulid>)`. Prints that S3 was skipped when it is.
pub fn roots(local_dir: &Path, test: &str) -> Result<Vec<(&'static str, ObjectRoot)>, Error> {
    let mut roots = vec![("local", ObjectRoot::local(local_dir.to_owned())?)];
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.is_empty() => {
            let prefix = format!("{test}-{}", ulid::Ulid::new()).to_lowercase();
            roots.push(("s3", s3_root(&endpoint, &prefix)?));
        }
        _ if std::env::var_os("CI").is_some() => return Err(Error::EndpointMissing),
        _ => eprintln!("{test}: skipped the S3 backend ({ENDPOINT_VAR} is not set)"),
    }
    Ok(roots)
}

/// The options of a root on the test server: moto takes any credentials.
pub fn s3_options(endpoint: &str, url: Option<String>) -> StorageOptions {
    StorageOptions {
        url,
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".to_owned()),
        access_key_id: Some("test".to_owned()),
        secret_access_key: Some("test".to_owned()),
        allow_http: Some(true),
    }
}

/// A root on `s3://metron-test/<prefix>` of the server at `endpoint`.
pub fn s3_root(endpoint: &str, prefix: &str) -> Result<ObjectRoot, Error> {
    create_bucket(endpoint, BUCKET)?;
    Ok(ObjectRoot::s3(BUCKET, prefix, &s3_options(endpoint, None))?)
}

/// Creates a bucket on a loopback S3-compatible server (plain HTTP, unsigned, as moto
/// accepts); one that exists already is fine.
pub fn create_bucket(endpoint: &str, bucket: &str) -> Result<(), Error> {
    let fail = |reason: String| Error::Bucket {
        bucket: bucket.to_owned(),
        endpoint: endpoint.to_owned(),
        reason,
    };
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| fail("the test endpoint must be http://host:port".to_owned()))?
        .trim_end_matches('/');
    let address = authority
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".to_owned()))?;
    let timeout = Duration::from_secs(10);
    let mut stream =
        TcpStream::connect_timeout(&address, timeout).map_err(|e| fail(e.to_string()))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| fail(e.to_string()))?;
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| fail(e.to_string()))?;
    let status = String::from_utf8_lossy(&head[..n]);
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    match code {
        "200" | "409" => Ok(()),
        _ => Err(fail(format!("answered {:?}", status.lines().next()))),
    }
}
