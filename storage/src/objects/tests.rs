use super::testing::roots;
use super::*;

// Objects round-trip on every backend: put, get, list under a prefix, delete (a missing
// object deleted again is fine), all relative to the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (backend, root) in roots(dir.path(), "objects-round-trip")? {
        let a = object_path("rollups/namespace=default/a.parquet");
        let b = object_path("rollups/namespace=default/b.parquet");
        root.put(&a, Bytes::from_static(b"one")).await?;
        root.put(&b, Bytes::from_static(b"two")).await?;
        root.put(&a, Bytes::from_static(b"three")).await?;
        assert_eq!(
            root.get(&a).await?,
            Bytes::from_static(b"three"),
            "{backend}"
        );
        let mut listed = root.list("rollups").await?;
        listed.sort();
        assert_eq!(listed, vec![a.clone(), b.clone()], "{backend}");
        assert!(root.list("events").await?.is_empty(), "{backend}");
        root.delete(&a).await?;
        root.delete(&a).await?;
        assert_eq!(root.list("rollups").await?, vec![b], "{backend}");
        assert!(
            matches!(root.get(&a).await, Err(Error::Store { .. })),
            "{backend}: deleted"
        );
    }
    Ok(())
}

// A create-only put never replaces an object: the second writer gets `Exists` and the
// first one's bytes stay (S3: If-None-Match; local: a hard link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_new_never_overwrites() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (backend, root) in roots(dir.path(), "put-new")? {
        let path = object_path("checkpoints/manifest-00000000000000000001.json");
        root.put_new(&path, Bytes::from_static(b"first")).await?;
        let second = root.put_new(&path, Bytes::from_static(b"second")).await;
        assert!(
            matches!(second, Err(Error::Exists { .. })),
            "{backend}: {second:?}"
        );
        assert_eq!(
            root.get(&path).await?,
            Bytes::from_static(b"first"),
            "{backend}"
        );
    }
    Ok(())
}

// The URL of an object is the root's URL and the object's path.
#[test]
fn storage_urls_name_their_root() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let default = ObjectRoot::open(&StorageOptions::default(), dir.path().join("objects"))?;
    assert!(default.url().starts_with("file:///"), "{}", default.url());
    assert!(default.url().ends_with("/objects"), "{}", default.url());

    let file = dir.path().join("elsewhere");
    let options = StorageOptions {
        url: Some(format!("file://{}", file.display())),
        ..StorageOptions::default()
    };
    let root = ObjectRoot::open(&options, dir.path().join("objects"))?;
    assert!(file.is_dir(), "file:// roots are created");
    assert!(root.url().ends_with("/elsewhere"), "{}", root.url());

    let s3 = |url: &str| {
        let options = StorageOptions {
            url: Some(url.to_owned()),
            ..testing::s3_options("http://127.0.0.1:9", None)
        };
        ObjectRoot::open(&options, dir.path().join("objects"))
    };
    let root = s3("s3://bucket/some/prefix")?;
    assert_eq!(root.url(), "s3://bucket/some/prefix");
    assert_eq!(
        root.url_of(&object_path("checkpoints/m.json")),
        "s3://bucket/some/prefix/checkpoints/m.json"
    );
    assert_eq!(s3("s3://bucket")?.url(), "s3://bucket");
    assert_eq!(s3("s3://bucket/")?.url(), "s3://bucket");
    for bad in [
        "s3:///prefix",
        "gs://bucket/x",
        "file://relative/dir",
        "/tmp/x",
    ] {
        assert!(
            matches!(s3(bad), Err(Error::Url { .. })),
            "{bad} is refused"
        );
    }
    Ok(())
}

#[test]
fn debug_output_hides_the_secret_key() {
    let options = StorageOptions {
        url: Some("s3://bucket/prefix".into()),
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("wJalrXUtnFEMI".into()),
        ..StorageOptions::default()
    };
    let shown = format!("{options:?}");
    assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
    assert!(
        shown.contains("AKIDEXAMPLE") && shown.contains("s3://bucket/prefix"),
        "{shown}"
    );
}
