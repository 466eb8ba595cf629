//! Small named values the service keeps about itself (the admin token's
//! hash, whether the default plans were seeded).

use crate::{Result, Store, on_pool};

impl Store {
    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        let q = "SELECT value FROM settings WHERE name = $1";
        Ok(on_pool!(self, p => sqlx::query_scalar(q).bind(name).fetch_optional(p).await)?)
    }

    /// Stores `value` unless `name` already has one; returns whether it did.
    pub async fn set_setting_if_absent(&self, name: &str, value: &str) -> Result<bool> {
        let q = "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
        let done =
            on_pool!(self, p => sqlx::query(q).bind(name).bind(value).execute(p).await.map(|d| d.rows_affected()))?;
        Ok(done == 1)
    }

    pub async fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        let q = "INSERT INTO settings (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value";
        on_pool!(self, p => sqlx::query(q).bind(name).bind(value).execute(p).await.map(|_| ()))?;
        Ok(())
    }
}
