//! The usage-attribution index: which live customer a subject's usage belongs to
//! (its key or one of its subject keys), per namespace.
//!
//! Read on every event listing and meter query, so reads take a shared lock and
//! clone nothing but `Arc`s. The index is rebuilt from the catalog after every
//! customer create, replace and delete ([`Attribution::reload`]); reloads are
//! serialised, so an older catalog read never overwrites a newer one.

use bytes::{Bytes, BytesMut};
use metron_storage::catalog::{self, Catalog};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

/// A customer as attribution names it: its id, key and subjects (key first, then
/// subject keys). Held for every customer: the strings as netstrings
/// (`<length>:<text>`) after a flag for the key (`-` none, `K` the first subject, so
/// written once, `k` written after the id), in a block shared with other records
/// ([`RECORD_BLOCK`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRef(Bytes);

/// Records are written one after another into blocks of this size, shared by reference
/// count. One small allocation per customer, made while its hot state was allocated
/// around it, kept the page it landed on resident after that state was freed: 13,399
/// records on pages less than a quarter used at 100k customers, tens of MB. A block is
/// freed when its last record is.
const RECORD_BLOCK: usize = 16 << 10;

/// Where records are written: the rest of the current block.
#[derive(Default)]
struct Pool(parking_lot::Mutex<BytesMut>);

impl Pool {
    /// `text` as a record in the current block (a new block when it does not fit).
    fn put(&self, text: &[u8]) -> Bytes {
        let mut block = self.0.lock();
        if block.capacity() < text.len() {
            *block = BytesMut::with_capacity(RECORD_BLOCK.max(text.len()));
        }
        block.extend_from_slice(text);
        block.split().freeze()
    }
}

static RECORDS: LazyLock<Pool> = LazyLock::new(Pool::default);

impl CustomerRef {
    pub fn new(id: &str, key: Option<&str>, subjects: &[String]) -> Self {
        let mut text = String::with_capacity(
            8 + id.len()
                + key.map_or(0, str::len)
                + subjects.iter().map(|s| s.len() + 4).sum::<usize>(),
        );
        let key_is_first = key.is_some() && key == subjects.first().map(String::as_str);
        text.push(match key {
            None => '-',
            Some(_) if key_is_first => 'K',
            Some(_) => 'k',
        });
        let mut put = |s: &str| {
            text.push_str(&s.len().to_string());
            text.push(':');
            text.push_str(s);
        };
        put(id);
        if let Some(key) = key.filter(|_| !key_is_first) {
            put(key);
        }
        for subject in subjects {
            put(subject);
        }
        Self(RECORDS.put(text.as_bytes()))
    }

    /// The string that starts at byte `at`, and where the next one starts.
    pub(crate) fn at(&self, at: usize) -> Option<(&str, usize)> {
        let rest = self.0.get(at..)?;
        let colon = rest.iter().position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        let start = at + colon + 1;
        let text = std::str::from_utf8(self.0.get(start..start + len)?).ok()?;
        Some((text, start + len))
    }

    fn subjects_at(&self) -> usize {
        let after_id = self.at(1).map_or(self.0.len(), |(_, next)| next);
        match (self.0.starts_with(b"k"), self.at(after_id)) {
            (true, Some((_, next))) => next,
            _ => after_id,
        }
    }

    pub fn id(&self) -> &str {
        self.at(1).map_or("", |(id, _)| id)
    }

    /// The record's address: the same for every clone, unique while one is held.
    pub(crate) fn address(&self) -> usize {
        self.0.as_ptr() as usize
    }

    pub fn key(&self) -> Option<&str> {
        let after_id = self.at(1)?.1;
        match self.0.first() {
            Some(b'k' | b'K') => self.at(after_id).map(|(key, _)| key),
            _ => None,
        }
    }

    /// Key first, then subject keys.
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        self.subject_starts()
            .filter_map(|at| self.at(at).map(|(s, _)| s))
    }

    /// Where each subject starts (for [`CustomerRef::at`]).
    pub(crate) fn subject_starts(&self) -> impl Iterator<Item = usize> {
        let mut next = Some(self.subjects_at());
        std::iter::from_fn(move || {
            let at = next?;
            next = self.at(at).map(|(_, n)| n).filter(|&n| n < self.0.len());
            (at < self.0.len()).then_some(at)
        })
    }
}

/// A customer found by one of its subjects: the key of the by-subject set, read as the
/// subject's text (so the set holds no copy of it).
struct BySubject {
    customer: CustomerRef,
    at: usize,
}

impl BySubject {
    fn subject(&self) -> &str {
        self.customer.at(self.at).map_or("", |(s, _)| s)
    }
}

/// A customer found by its id: the key of the by-id set, read as the id.
struct ById(CustomerRef);

impl ById {
    fn id(&self) -> &str {
        self.0.id()
    }
}

crate::keyed_by_str!(BySubject, BySubject::subject);
crate::keyed_by_str!(ById, ById::id);

/// Told what changed: one customer (namespace, id), or `None` after a full reload.
type Listener = Box<dyn Fn(Option<(&str, &str)>) + Send + Sync>;

/// The subject → customer index, shared and cheap to read.
#[derive(Clone)]
pub struct Attribution {
    shared: Arc<Shared>,
}

struct Shared {
    index: parking_lot::RwLock<Index>,
    version: AtomicU64,
    reloading: tokio::sync::Mutex<()>,
    listeners: parking_lot::Mutex<Vec<Arc<Listener>>>,
}

/// Held for every customer (active or not), so kept compact: one shared record per
/// customer, found by subject and by id.
#[derive(Default)]
struct Index {
    namespaces: HashMap<String, Space>,
}

#[derive(Default)]
struct Space {
    by_subject: HashSet<BySubject>,
    by_id: HashSet<ById>,
}

impl Index {
    fn build(customers: Vec<(String, metron_storage::customers::Customer)>) -> Self {
        let mut index = Self::default();
        for (namespace, customer) in customers {
            index.insert(&namespace, &customer);
        }
        index
    }

    /// Attributes a live customer's key and subject keys to it.
    fn insert(&mut self, namespace: &str, customer: &metron_storage::customers::Customer) {
        let reference =
            CustomerRef::new(&customer.id, customer.key.as_deref(), &customer.subjects());
        let space = match self.namespaces.get_mut(namespace) {
            Some(space) => space,
            None => self.namespaces.entry(namespace.to_owned()).or_default(),
        };
        for at in reference.subject_starts() {
            space.by_subject.replace(BySubject {
                customer: reference.clone(),
                at,
            });
        }
        space.by_id.replace(ById(reference));
    }

    /// Forgets a customer's attribution (subjects another customer took stay theirs).
    fn remove(&mut self, namespace: &str, customer_id: &str) {
        let Some(space) = self.namespaces.get_mut(namespace) else {
            return;
        };
        let Some(ById(reference)) = space.by_id.take(customer_id) else {
            return;
        };
        for subject in reference.subjects() {
            if space
                .by_subject
                .get(subject)
                .is_some_and(|c| c.customer.id() == customer_id)
            {
                space.by_subject.remove(subject);
            }
        }
    }
}

impl Attribution {
    /// Builds the index from the catalog's live customers.
    pub async fn load(catalog: &Catalog) -> Result<Attribution, catalog::Error> {
        let index = Index::build(catalog.all_customers().await?);
        Ok(Self {
            shared: Arc::new(Shared {
                index: parking_lot::RwLock::new(index),
                version: AtomicU64::new(0),
                reloading: tokio::sync::Mutex::new(()),
                listeners: parking_lot::Mutex::new(Vec::new()),
            }),
        })
    }

    /// Rebuilds the index from the catalog, bumps the version and runs the listeners.
    pub async fn reload(&self, catalog: &Catalog) -> Result<(), catalog::Error> {
        let _serial = self.shared.reloading.lock().await;
        let index = Index::build(catalog.all_customers().await?);
        *self.shared.index.write() = index;
        self.shared.version.fetch_add(1, Ordering::AcqRel);
        let listeners: Vec<Arc<Listener>> = self.shared.listeners.lock().clone();
        for listener in listeners {
            listener(None);
        }
        Ok(())
    }

    /// Re-reads one customer after it was created, replaced or deleted: O(its subjects),
    /// not a reload of every customer.
    pub async fn update(
        &self,
        catalog: &Catalog,
        namespace: &str,
        customer_id: &str,
    ) -> Result<(), catalog::Error> {
        let _serial = self.shared.reloading.lock().await;
        let customer = catalog
            .get_customer_by_id(namespace, customer_id)
            .await?
            .filter(|c| c.deleted_at.is_none());
        {
            let mut index = self.shared.index.write();
            index.remove(namespace, customer_id);
            if let Some(customer) = customer {
                index.insert(namespace, &customer);
            }
        }
        self.shared.version.fetch_add(1, Ordering::AcqRel);
        let listeners: Vec<Arc<Listener>> = self.shared.listeners.lock().clone();
        for listener in listeners {
            listener(Some((namespace, customer_id)));
        }
        Ok(())
    }

    /// The live customer whose usage a subject's events are.
    pub fn customer_of(&self, namespace: &str, subject: &str) -> Option<CustomerRef> {
        self.shared
            .index
            .read()
            .namespaces
            .get(namespace)?
            .by_subject
            .get(subject)
            .map(|c| c.customer.clone())
    }

    /// Whether a live customer has this id.
    pub fn knows(&self, namespace: &str, customer_id: &str) -> bool {
        self.shared
            .index
            .read()
            .namespaces
            .get(namespace)
            .is_some_and(|space| space.by_id.contains(customer_id))
    }

    /// A live customer's record, if it is `(id, key, subjects)` (shared, else new).
    pub fn record(
        &self,
        namespace: &str,
        id: &str,
        key: Option<&str>,
        subjects: &[String],
    ) -> CustomerRef {
        let known = self
            .shared
            .index
            .read()
            .namespaces
            .get(namespace)
            .and_then(|space| space.by_id.get(id))
            .map(|c| c.0.clone());
        match known {
            Some(known)
                if known.key() == key
                    && known.subjects().eq(subjects.iter().map(String::as_str)) =>
            {
                known
            }
            _ => CustomerRef::new(id, key, subjects),
        }
    }

    /// A live customer's subjects (key first, then subject keys); empty when unknown.
    pub fn subjects_of(&self, namespace: &str, customer_id: &str) -> Vec<String> {
        self.shared
            .index
            .read()
            .namespaces
            .get(namespace)
            .and_then(|space| space.by_id.get(customer_id))
            .map(|c| c.0.subjects().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Bumped by every reload.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// Registers a callback run after each reload (outside the index lock).
    pub fn on_change(&self, f: Listener) {
        self.shared.listeners.lock().push(Arc::new(f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metron_storage::customers::{CustomerInput, UsageAttribution};
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_customer_ref_reads_back_what_it_was_made_of() {
        let subjects = |r: &CustomerRef| r.subjects().map(str::to_owned).collect::<Vec<_>>();
        let odd = vec!["12:ab".to_owned(), String::new(), "ünï:cödé".to_owned()];
        let r = CustomerRef::new("01J0000000000000000000000A", Some("3:x"), &odd);
        assert_eq!(r.id(), "01J0000000000000000000000A");
        assert_eq!(r.key(), Some("3:x"));
        assert_eq!(subjects(&r), odd);
        let r = CustomerRef::new("c", None, &["s".to_owned()]);
        assert_eq!(
            (r.id(), r.key(), subjects(&r)),
            ("c", None, vec!["s".to_owned()])
        );
        let r = CustomerRef::new("", None, &[]);
        assert_eq!((r.id(), r.key(), subjects(&r).len()), ("", None, 0));
        // A key that is the first subject (as `Customer::subjects` has it) is written once.
        let both = vec!["key-1".to_owned(), "s-2".to_owned()];
        let r = CustomerRef::new("c", Some("key-1"), &both);
        assert_eq!((r.id(), r.key(), subjects(&r)), ("c", Some("key-1"), both));
        assert_eq!(&r.0[..], b"K1:c5:key-13:s-2");
        let r = CustomerRef::new("c", Some("key-1"), &["s-2".to_owned()]);
        assert_eq!(r.key(), Some("key-1"));
        assert_eq!(subjects(&r), ["s-2"]);
    }

    #[test]
    fn records_share_blocks() {
        let pool = Pool::default();
        let records: Vec<Bytes> = (0..1000)
            .map(|i| pool.put(format!("r{i:05}").as_bytes()))
            .collect();
        // Written one after another: 16 KiB blocks hold 2,730 six-byte records.
        for pair in records.windows(2) {
            assert_eq!(pair[1].as_ptr() as usize, pair[0].as_ptr() as usize + 6);
        }
        assert!(
            records
                .iter()
                .enumerate()
                .all(|(i, r)| r[..] == *format!("r{i:05}").as_bytes())
        );
        // A record that does not fit starts a block; one larger than a block gets its own.
        let big = pool.put(&[b'x'; 20_000]);
        assert_eq!(big.len(), 20_000);
        let after = pool.put(b"after");
        assert_ne!(after.as_ptr() as usize, records[999].as_ptr() as usize + 6);
        assert_eq!(&after[..], b"after");
        drop(records);
        assert_eq!(&big[..5], b"xxxxx");
    }

    // The index follows the catalog through reloads and tells its listeners.
    metron_storage::catalog_test! {
        #[tokio::test]
        async fn reload_follows_the_catalog(db) {
            let catalog = db.open().await;
            let attribution = Attribution::load(&catalog).await.expect("load");
            let calls = Arc::new(AtomicUsize::new(0));
            let seen = calls.clone();
            attribution.on_change(Box::new(move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            }));
            let customer = catalog
                .create_customer(
                    "default",
                    CustomerInput {
                        name: "A".into(),
                        key: Some("acme".into()),
                        usage_attribution: Some(UsageAttribution {
                            subject_keys: vec!["s1".into()],
                        }),
                        ..CustomerInput::default()
                    },
                )
                .await
                .expect("create");
            assert!(attribution.customer_of("default", "s1").is_none());
            attribution.reload(&catalog).await.expect("reload");
            assert_eq!(attribution.version(), 1);
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(
                attribution
                    .customer_of("default", "s1")
                    .map(|c| c.id().to_string()),
                Some(customer.id.clone())
            );
            assert!(attribution.customer_of("other", "s1").is_none());
            assert_eq!(
                attribution.subjects_of("default", &customer.id),
                vec!["acme", "s1"]
            );
            catalog
                .delete_customer("default", "acme")
                .await
                .expect("delete");
            attribution.reload(&catalog).await.expect("reload");
            assert!(attribution.customer_of("default", "acme").is_none());
            assert!(attribution.subjects_of("default", &customer.id).is_empty());
        }
    }

    metron_storage::catalog_test! {
        #[tokio::test]
        async fn update_follows_one_customer(db) {
            let catalog = db.open().await;
            let attribution = Attribution::load(&catalog).await.expect("load");
            let told = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
            let seen = told.clone();
            attribution.on_change(Box::new(move |changed| {
                seen.lock()
                    .push(changed.map_or("all".into(), |(_, id)| id.to_owned()));
            }));
            let input = |subjects: &[&str]| CustomerInput {
                name: "A".into(),
                key: Some("acme".into()),
                usage_attribution: Some(UsageAttribution {
                    subject_keys: subjects.iter().map(|s| (*s).to_owned()).collect(),
                }),
                ..CustomerInput::default()
            };
            let customer = catalog
                .create_customer("default", input(&["s1", "s2"]))
                .await
                .expect("create");
            attribution
                .update(&catalog, "default", &customer.id)
                .await
                .expect("update");
            let owner = |s: &str| {
                attribution
                    .customer_of("default", s)
                    .map(|c| c.id().to_string())
            };
            assert_eq!(owner("s2"), Some(customer.id.clone()));
            assert_eq!(owner("acme"), Some(customer.id.clone()));
            catalog
                .replace_customer("default", &customer.id, input(&["s3"]))
                .await
                .expect("replace");
            attribution
                .update(&catalog, "default", &customer.id)
                .await
                .expect("update");
            assert_eq!(
                owner("s2"),
                None,
                "a subject that left the customer is free"
            );
            assert_eq!(owner("s3"), Some(customer.id.clone()));
            catalog
                .delete_customer("default", &customer.id)
                .await
                .expect("delete");
            attribution
                .update(&catalog, "default", &customer.id)
                .await
                .expect("update");
            assert_eq!(owner("s3"), None);
            assert!(attribution.subjects_of("default", &customer.id).is_empty());
            assert_eq!(told.lock().len(), 3);
            assert_eq!(attribution.version(), 3);
        }
    }
}
