//! Organizations: every key, file and job belongs to exactly one.

use chrono::{DateTime, Utc};

use super::Db;
use crate::ids::{new_id, now};
use crate::with_db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// The name of organization `id`, if it exists.
pub async fn org_name(db: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    with_db!(db, p => sqlx::query_scalar::<_, String>("select name from organizations where id = $1")
        .bind(id).fetch_optional(p).await)
}

/// The organization named `name`, created if it does not exist yet.
pub async fn find_or_create_org(db: &Db, name: &str) -> Result<Org, sqlx::Error> {
    let id = new_id("org");
    with_db!(db, p => {
        sqlx::query("insert into organizations (id, name, created_at) values ($1, $2, $3) on conflict (name) do nothing")
            .bind(&id).bind(name).bind(now())
            .execute(p).await?;
        sqlx::query_as::<_, Org>("select id, name, created_at from organizations where name = $1")
            .bind(name)
            .fetch_one(p).await
    })
}

/// The organization named `name`, if there is one.
pub async fn find_org(db: &Db, name: &str) -> Result<Option<Org>, sqlx::Error> {
    with_db!(db, p => sqlx::query_as::<_, Org>("select id, name, created_at from organizations where name = $1")
        .bind(name).fetch_optional(p).await)
}
