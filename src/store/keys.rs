//! API keys. Only a SHA-256 of each key is stored: keys are 256-bit random tokens, so a fast hash
//! is as safe as a slow password hash here and keeps every request's check cheap.

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::Db;
use crate::ids::{new_id, now};
use crate::with_db;

/// Who is calling: the key and its organization.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Caller {
    pub key_id: String,
    pub org_id: String,
    pub org_name: String,
}

/// The plaintext prefix every key starts with, so leaked keys are easy to recognise.
pub const KEY_PREFIX: &str = "wick-";

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates a key for `org_id` and returns `(key id, plaintext key)`; the plaintext is never stored.
pub async fn create_key(
    db: &Db,
    org_id: &str,
    name: &str,
) -> Result<(String, String), sqlx::Error> {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("{KEY_PREFIX}{}", hex::encode(secret));
    let id = new_id("key");
    let shown_prefix = &key[..KEY_PREFIX.len() + 6];
    with_db!(db, p => sqlx::query(
            "insert into api_keys (id, org_id, name, key_hash, key_prefix, created_at) values ($1, $2, $3, $4, $5, $6)")
        .bind(&id).bind(org_id).bind(name).bind(hash_key(&key)).bind(shown_prefix).bind(now())
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok((id, key))
}

/// The caller a plaintext key belongs to, if it is a live key.
pub async fn find_caller(db: &Db, key: &str) -> Result<Option<Caller>, sqlx::Error> {
    let sql = "select k.id as key_id, o.id as org_id, o.name as org_name
               from api_keys k join organizations o on o.id = k.org_id
               where k.key_hash = $1 and k.revoked_at is null";
    with_db!(db, p => sqlx::query_as::<_, Caller>(sql).bind(hash_key(key)).fetch_optional(p).await)
}

/// How many keys exist at all: zero means a fresh install that needs its admin key.
pub async fn count_keys(db: &Db) -> Result<i64, sqlx::Error> {
    with_db!(db, p => sqlx::query_scalar::<_, i64>("select count(*) from api_keys").fetch_one(p).await)
}

/// A key as an operator lists it: never the key itself, only its first characters.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: String,
    pub org_name: String,
    pub name: String,
    pub key_prefix: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every key, oldest first, of organization `org` when given (by name).
pub async fn list_keys(db: &Db, org: Option<&str>) -> Result<Vec<KeyRow>, sqlx::Error> {
    let sql = "select k.id, o.name as org_name, k.name, k.key_prefix, k.created_at, k.revoked_at
               from api_keys k join organizations o on o.id = k.org_id
               where ($1 is null or o.name = $1) order by k.created_at, k.id";
    with_db!(db, p => sqlx::query_as::<_, KeyRow>(sql).bind(org).fetch_all(p).await)
}

/// What revoking a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// It was live; requests with it now answer 401.
    Now,
    /// It had been revoked before.
    Already,
    /// No key has that id.
    Unknown,
}

/// Revokes key `id` (by its id, as `list_keys` shows it); at once for every process sharing the
/// store, since each request looks its key up.
pub async fn revoke_key(db: &Db, id: &str) -> Result<Revoked, sqlx::Error> {
    let changed = with_db!(db, p => sqlx::query(
            "update api_keys set revoked_at = $1 where id = $2 and revoked_at is null")
        .bind(now()).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    if changed > 0 {
        return Ok(Revoked::Now);
    }
    let exists = with_db!(db, p => sqlx::query_scalar::<_, i64>(
            "select count(*) from api_keys where id = $1")
        .bind(id).fetch_one(p).await)?;
    Ok(if exists > 0 {
        Revoked::Already
    } else {
        Revoked::Unknown
    })
}
