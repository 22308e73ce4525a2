//! Customers and their usage attribution, and the deprecated subjects, in the catalog.
//!
//! A customer's usage is the usage of the events whose subject is its key or one of
//! its subject keys (OpenMeter's `usageattribution.go`). Those values live in
//! `customer_subjects`, whose primary key makes a subject belong to at most one live
//! customer: a create or replace that would share one answers a conflict.

use crate::catalog::{Catalog, Error, Result, Tx};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};

/// Longest customer key and name (OpenMeter's `CustomerCreate`).
pub const CUSTOMER_KEY_LEN_MAX: usize = 256;
pub const CUSTOMER_NAME_LEN_MAX: usize = 256;
pub const DESCRIPTION_LEN_MAX: usize = 1024;

/// `CustomerUsageAttribution`: the subjects whose usage is the customer's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageAttribution {
    #[serde(default)]
    pub subject_keys: Vec<String>,
}

/// `Address`, every field optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

/// The API read model of a customer (OpenMeter's `Customer`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub usage_attribution: UsageAttribution,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Customer {
    /// The customer's usage attribution: its key (if any) and its subject keys, deduplicated.
    pub fn subjects(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.key
            .iter()
            .chain(self.usage_attribution.subject_keys.iter())
            .filter(|s| seen.insert(s.as_str()))
            .cloned()
            .collect()
    }
}

/// `CustomerCreate` and `CustomerReplaceUpdate` (the same fields).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerInput {
    pub name: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub usage_attribution: Option<UsageAttribution>,
    #[serde(default)]
    pub primary_email: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub billing_address: Option<Address>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl CustomerInput {
    /// OpenMeter's `CustomerMutate.Validate`, plus the spec's lengths.
    pub fn validate(&self) -> Result<(), CustomerError> {
        let invalid = |m: &str| Err(CustomerError::Invalid(m.to_owned()));
        if self.name.is_empty() || self.name.chars().count() > CUSTOMER_NAME_LEN_MAX {
            return invalid("name is required and must be at most 256 characters");
        }
        if let Some(key) = &self.key
            && (key.is_empty() || key.chars().count() > CUSTOMER_KEY_LEN_MAX)
        {
            return invalid("key must be 1 to 256 characters");
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > DESCRIPTION_LEN_MAX)
        {
            return invalid("description must be at most 1024 characters");
        }
        if let Some(currency) = &self.currency
            && !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return invalid("currency must be an ISO 4217 code such as USD");
        }
        let subject_keys = self
            .usage_attribution
            .as_ref()
            .map(|u| u.subject_keys.as_slice())
            .unwrap_or_default();
        if subject_keys.iter().any(String::is_empty) {
            return invalid("subject key must be at least 1 character");
        }
        if self.key.is_none() && subject_keys.is_empty() {
            return invalid("either key or usageAttribution.subjectKeys must be provided");
        }
        Ok(())
    }
}

/// Why a customer (or subject) change was refused.
#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error(transparent)]
    Catalog(#[from] Error),
    #[error("{0}")]
    Invalid(String),
    #[error("customer {0:?} not found")]
    NotFound(String),
    #[error("a customer with key {key:?} already exists")]
    KeyTaken { key: String },
    #[error("key {key:?} overlaps with the id of another customer")]
    KeyIsId { key: String },
    #[error("subject key {subject:?} is already attributed to customer {customer_id}")]
    SubjectTaken {
        subject: String,
        customer_id: String,
    },
}

impl From<sqlx::Error> for CustomerError {
    fn from(error: sqlx::Error) -> Self {
        Self::Catalog(Error::Query(error))
    }
}

/// Ordering of a customer listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CustomerOrder {
    Id,
    Key,
    #[default]
    Name,
    PrimaryEmail,
    CreatedAt,
}

/// `GET /api/v1/customers` filters; text filters are case-insensitive partial matches.
#[derive(Clone, Debug, Default)]
pub struct CustomerFilter {
    pub include_deleted: bool,
    pub key: Option<String>,
    pub name: Option<String>,
    pub primary_email: Option<String>,
    pub subject: Option<String>,
    pub order_by: CustomerOrder,
    pub descending: bool,
    /// 1-based.
    pub page: usize,
    pub page_size: usize,
}

/// One page of customers and how many matched in all.
#[derive(Clone, Debug)]
pub struct CustomerPage {
    pub total_count: usize,
    pub items: Vec<Customer>,
}

fn contains_folded(value: Option<&str>, needle: &Option<String>) -> bool {
    match needle {
        None => true,
        Some(n) => value.is_some_and(|v| v.to_lowercase().contains(&n.to_lowercase())),
    }
}

impl CustomerFilter {
    fn admits(&self, c: &Customer) -> bool {
        (self.include_deleted || c.deleted_at.is_none())
            && contains_folded(c.key.as_deref(), &self.key)
            && contains_folded(Some(&c.name), &self.name)
            && contains_folded(c.primary_email.as_deref(), &self.primary_email)
            && self.subject.as_ref().is_none_or(|s| {
                let s = s.to_lowercase();
                c.usage_attribution
                    .subject_keys
                    .iter()
                    .any(|k| k.to_lowercase().contains(&s))
            })
    }
}

/// Is the text a ULID (OpenMeter's id pattern)?
pub fn is_ulid(text: &str) -> bool {
    text.len() == 26 && ulid::Ulid::from_string(text).is_ok()
}

impl Catalog {
    /// A live customer by id (tried first) or key.
    pub async fn get_customer(&self, namespace: &str, id_or_key: &str) -> Result<Option<Customer>> {
        if is_ulid(id_or_key)
            && let Some(c) = self.get_customer_by_id(namespace, id_or_key).await?
            && c.deleted_at.is_none()
        {
            return Ok(Some(c));
        }
        let row = sqlx::query(
            "SELECT id, definition FROM customers WHERE namespace = $1 AND key = $2 AND deleted_at IS NULL \
             ORDER BY created_at, id LIMIT 1",
        )
        .bind(namespace)
        .bind(id_or_key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| decode_customer(r.try_get("id")?, r.try_get("definition")?))
            .transpose()
    }

    /// A customer by id, deleted ones included.
    pub async fn get_customer_by_id(&self, namespace: &str, id: &str) -> Result<Option<Customer>> {
        let row =
            sqlx::query("SELECT id, definition FROM customers WHERE namespace = $1 AND id = $2")
                .bind(namespace)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| decode_customer(r.try_get("id")?, r.try_get("definition")?))
            .transpose()
    }

    /// Every live customer of every namespace (for the attribution index).
    pub async fn all_customers(&self) -> Result<Vec<(String, Customer)>> {
        let rows = sqlx::query(
            "SELECT id, namespace, definition FROM customers WHERE deleted_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let namespace: String = r.try_get("namespace")?;
                Ok((
                    namespace,
                    decode_customer(r.try_get("id")?, r.try_get("definition")?)?,
                ))
            })
            .collect()
    }

    /// Customers of a namespace that the filter admits, ordered and paged.
    pub async fn list_customers(
        &self,
        namespace: &str,
        filter: &CustomerFilter,
    ) -> Result<CustomerPage> {
        let rows = sqlx::query(
            "SELECT id, definition FROM customers WHERE namespace = $1 ORDER BY created_at, id",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        let mut all = Vec::with_capacity(rows.len());
        for r in rows {
            let c = decode_customer(r.try_get("id")?, r.try_get("definition")?)?;
            if filter.admits(&c) {
                all.push(c);
            }
        }
        match filter.order_by {
            CustomerOrder::Id => all.sort_by(|a, b| a.id.cmp(&b.id)),
            CustomerOrder::Key => all.sort_by(|a, b| (&a.key, &a.id).cmp(&(&b.key, &b.id))),
            CustomerOrder::Name => all.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id))),
            CustomerOrder::PrimaryEmail => {
                all.sort_by(|a, b| (&a.primary_email, &a.id).cmp(&(&b.primary_email, &b.id)))
            }
            CustomerOrder::CreatedAt => {
                all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
            }
        }
        if filter.descending {
            all.reverse();
        }
        let total_count = all.len();
        let items = all
            .into_iter()
            .skip(
                filter
                    .page
                    .saturating_sub(1)
                    .saturating_mul(filter.page_size),
            )
            .take(filter.page_size)
            .collect();
        Ok(CustomerPage { total_count, items })
    }

    /// Creates a customer; its key and attribution must be free among live customers.
    pub async fn create_customer(
        &self,
        namespace: &str,
        input: CustomerInput,
    ) -> Result<Customer, CustomerError> {
        input.validate()?;
        let now = Utc::now();
        let customer = customer_of(ulid::Ulid::new().to_string(), input, now, now);
        let mut tx = self.begin_write().await?;
        check_free(&mut tx, namespace, &customer).await?;
        sqlx::query(
            "INSERT INTO customers (id, namespace, key, definition, created_at, deleted_at) VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&customer.id)
        .bind(namespace)
        .bind(&customer.key)
        .bind(encode_customer(&customer))
        .bind(customer.created_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        insert_attribution(&mut tx, namespace, &customer).await?;
        tx.commit().await?;
        Ok(customer)
    }

    /// Replaces a live customer's fields (PUT); its new key and attribution must be free.
    pub async fn replace_customer(
        &self,
        namespace: &str,
        id_or_key: &str,
        input: CustomerInput,
    ) -> Result<Customer, CustomerError> {
        input.validate()?;
        let old = self
            .get_customer(namespace, id_or_key)
            .await?
            .ok_or_else(|| CustomerError::NotFound(id_or_key.to_owned()))?;
        let mut customer = customer_of(old.id.clone(), input, old.created_at, Utc::now());
        customer.annotations = old.annotations;
        let mut tx = self.begin_write().await?;
        check_free(&mut tx, namespace, &customer).await?;
        sqlx::query("UPDATE customers SET key = $1, definition = $2 WHERE id = $3")
            .bind(&customer.key)
            .bind(encode_customer(&customer))
            .bind(&customer.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM customer_subjects WHERE customer_id = $1")
            .bind(&customer.id)
            .execute(&mut *tx)
            .await?;
        insert_attribution(&mut tx, namespace, &customer).await?;
        tx.commit().await?;
        Ok(customer)
    }

    /// Soft-deletes a live customer (sets `deletedAt`) and frees its attribution.
    pub async fn delete_customer(
        &self,
        namespace: &str,
        id_or_key: &str,
    ) -> Result<Customer, CustomerError> {
        let mut customer = self
            .get_customer(namespace, id_or_key)
            .await?
            .ok_or_else(|| CustomerError::NotFound(id_or_key.to_owned()))?;
        let now = Utc::now();
        customer.deleted_at = Some(now);
        customer.updated_at = now;
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE customers SET definition = $1, deleted_at = $2 WHERE id = $3")
            .bind(encode_customer(&customer))
            .bind(now.timestamp_millis())
            .bind(&customer.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM customer_subjects WHERE customer_id = $1")
            .bind(&customer.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(customer)
    }

    /// The live customer whose attribution holds a subject key.
    pub async fn customer_by_subject(
        &self,
        namespace: &str,
        subject: &str,
    ) -> Result<Option<Customer>> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT customer_id FROM customer_subjects WHERE namespace = $1 AND subject_key = $2",
        )
        .bind(namespace)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        match id {
            Some(id) => self.get_customer_by_id(namespace, &id).await,
            None => Ok(None),
        }
    }
}

/// Refuses a key or attribution value another live customer holds.
async fn check_free(
    tx: &mut Tx,
    namespace: &str,
    customer: &Customer,
) -> Result<(), CustomerError> {
    if let Some(key) = &customer.key {
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT id FROM customers WHERE namespace = $1 AND key = $2 AND deleted_at IS NULL AND id <> $3",
        )
        .bind(namespace)
        .bind(key)
        .bind(&customer.id)
        .fetch_optional(&mut **tx)
        .await?;
        if taken.is_some() {
            return Err(CustomerError::KeyTaken { key: key.clone() });
        }
        let is_id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM customers WHERE namespace = $1 AND id = $2 AND id <> $3",
        )
        .bind(namespace)
        .bind(key)
        .bind(&customer.id)
        .fetch_optional(&mut **tx)
        .await?;
        if is_id.is_some() {
            return Err(CustomerError::KeyIsId { key: key.clone() });
        }
    }
    for subject in customer.subjects() {
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT customer_id FROM customer_subjects WHERE namespace = $1 AND subject_key = $2 AND customer_id <> $3",
        )
        .bind(namespace)
        .bind(&subject)
        .bind(&customer.id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(customer_id) = owner {
            return Err(CustomerError::SubjectTaken {
                subject,
                customer_id,
            });
        }
    }
    Ok(())
}

async fn insert_attribution(
    tx: &mut Tx,
    namespace: &str,
    customer: &Customer,
) -> Result<(), CustomerError> {
    for subject in customer.subjects() {
        sqlx::query(
            "INSERT INTO customer_subjects (namespace, subject_key, customer_id) VALUES ($1, $2, $3)",
        )
        .bind(namespace)
        .bind(&subject)
        .bind(&customer.id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn customer_of(
    id: String,
    input: CustomerInput,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> Customer {
    let mut attribution = input.usage_attribution.unwrap_or_default();
    let mut seen = BTreeSet::new();
    attribution.subject_keys.retain(|k| seen.insert(k.clone()));
    Customer {
        id,
        key: input.key,
        name: input.name,
        description: input.description,
        usage_attribution: attribution,
        primary_email: input.primary_email,
        currency: input.currency,
        billing_address: input.billing_address,
        metadata: input.metadata,
        annotations: None,
        created_at,
        updated_at,
        deleted_at: None,
    }
}

fn encode_customer(customer: &Customer) -> String {
    serde_json::to_string(customer).unwrap_or_default()
}

fn decode_customer(id: String, definition: String) -> Result<Customer> {
    serde_json::from_str(&definition).map_err(|source| Error::Decode { id, source })
}

// ---- subjects (deprecated) ----

/// `SubjectUpsert`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectUpsert {
    pub key: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub current_period_start: Option<DateTime<Utc>>,
    #[serde(default)]
    pub current_period_end: Option<DateTime<Utc>>,
    #[serde(default)]
    pub stripe_customer_id: Option<String>,
}

/// The API read model of a subject (OpenMeter's deprecated `Subject`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    pub id: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_period_start: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_period_end: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_customer_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Catalog {
    /// Creates or updates subjects by key, in one transaction; returns them in input order.
    pub async fn upsert_subjects(
        &self,
        namespace: &str,
        upserts: Vec<SubjectUpsert>,
    ) -> Result<Vec<Subject>, CustomerError> {
        if upserts.iter().any(|u| u.key.is_empty()) {
            return Err(CustomerError::Invalid(
                "subject key must not be empty".into(),
            ));
        }
        let now = Utc::now();
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(upserts.len());
        for u in upserts {
            let old = sqlx::query(
                "SELECT id, definition FROM subjects WHERE namespace = $1 AND key = $2",
            )
            .bind(namespace)
            .bind(&u.key)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| decode_subject(r.try_get("id")?, r.try_get("definition")?))
            .transpose()?;
            let subject = Subject {
                id: old
                    .as_ref()
                    .map_or_else(|| ulid::Ulid::new().to_string(), |o| o.id.clone()),
                key: u.key,
                display_name: u.display_name,
                metadata: u.metadata,
                current_period_start: u.current_period_start,
                current_period_end: u.current_period_end,
                stripe_customer_id: u.stripe_customer_id,
                created_at: old.as_ref().map_or(now, |o| o.created_at),
                updated_at: now,
            };
            let definition = serde_json::to_string(&subject).unwrap_or_default();
            if old.is_some() {
                sqlx::query("UPDATE subjects SET definition = $1 WHERE id = $2")
                    .bind(definition)
                    .bind(&subject.id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(
                    "INSERT INTO subjects (id, namespace, key, definition, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&subject.id)
                .bind(namespace)
                .bind(&subject.key)
                .bind(definition)
                .bind(now.timestamp_millis())
                .execute(&mut *tx)
                .await?;
            }
            out.push(subject);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Every subject of a namespace, by key.
    pub async fn list_subjects(&self, namespace: &str) -> Result<Vec<Subject>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM subjects WHERE namespace = $1 ORDER BY key, id",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| decode_subject(r.try_get("id")?, r.try_get("definition")?))
            .collect()
    }

    /// A subject by id or key.
    pub async fn get_subject(&self, namespace: &str, id_or_key: &str) -> Result<Option<Subject>> {
        let row = sqlx::query(
            "SELECT id, definition FROM subjects WHERE namespace = $1 AND (id = $2 OR key = $2) \
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(namespace)
        .bind(id_or_key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| decode_subject(r.try_get("id")?, r.try_get("definition")?))
            .transpose()
    }

    /// Deletes a subject by id or key; false when there was none.
    pub async fn delete_subject(&self, namespace: &str, id_or_key: &str) -> Result<bool> {
        let Some(subject) = self.get_subject(namespace, id_or_key).await? else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM subjects WHERE id = $1")
            .bind(&subject.id)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }
}

fn decode_subject(id: String, definition: String) -> Result<Subject> {
    serde_json::from_str(&definition).map_err(|source| Error::Decode { id, source })
}

#[cfg(test)]
mod tests;
