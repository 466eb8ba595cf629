//! Grants (add-on allowance) and the operator's model prices.

use tollgate_domain::model::Grant;
use tollgate_domain::pricing::Price;
use tollgate_domain::{Meter, Timestamp, UserId};

use crate::{Result, Store, StoreError, on_pool};

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: String,
    user_id: String,
    meter: String,
    amount: i64,
    starts_at: i64,
    expires_at: Option<i64>,
    created_at: i64,
}

impl TryFrom<GrantRow> for Grant {
    type Error = StoreError;

    fn try_from(row: GrantRow) -> Result<Grant> {
        Ok(Grant {
            id: row.id,
            user_id: UserId::parse(&row.user_id)?,
            meter: Meter::parse(&row.meter)?,
            amount: row.amount,
            starts_at: Timestamp::from_millis(row.starts_at),
            expires_at: row.expires_at.map(Timestamp::from_millis),
            created_at: Timestamp::from_millis(row.created_at),
        })
    }
}

impl Store {
    pub async fn insert_grant(&self, g: &Grant) -> Result<Grant> {
        let q = "INSERT INTO grants (id, user_id, meter, amount, starts_at, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)";
        on_pool!(self, p => sqlx::query(q)
            .bind(&g.id)
            .bind(g.user_id.as_str())
            .bind(g.meter.as_str())
            .bind(g.amount)
            .bind(g.starts_at.millis())
            .bind(g.expires_at.map(Timestamp::millis))
            .bind(g.created_at.millis())
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::not_found(format!("no user {:?}", g.user_id.as_str()))
            }
            _ => StoreError::Database(e),
        })?;
        Ok(g.clone())
    }

    /// A user's grants, oldest first.
    pub async fn grants_of(&self, user: &UserId) -> Result<Vec<Grant>> {
        let q = "SELECT id, user_id, meter, amount, starts_at, expires_at, created_at FROM grants \
                 WHERE user_id = $1 ORDER BY created_at, id";
        let rows: Vec<GrantRow> = on_pool!(self, p => sqlx::query_as(q).bind(user.as_str()).fetch_all(p).await)?;
        rows.into_iter().map(Grant::try_from).collect()
    }

    pub async fn prices(&self) -> Result<Vec<(String, Price)>> {
        let q = "SELECT model, input, cached_input, output FROM prices ORDER BY model";
        let rows: Vec<(String, i64, i64, i64)> = on_pool!(self, p => sqlx::query_as(q).fetch_all(p).await)?;
        Ok(rows
            .into_iter()
            .map(|(m, input, cached_input, output)| (m, Price { input, cached_input, output }))
            .collect())
    }

    pub async fn set_price(&self, model: &str, price: Price) -> Result<()> {
        let q = "INSERT INTO prices (model, input, cached_input, output, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (model) DO UPDATE SET input = excluded.input, cached_input = excluded.cached_input, \
                 output = excluded.output, updated_at = excluded.updated_at";
        on_pool!(self, p => sqlx::query(q)
            .bind(model)
            .bind(price.input)
            .bind(price.cached_input)
            .bind(price.output)
            .bind(Timestamp::now().millis())
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn delete_price(&self, model: &str) -> Result<bool> {
        let q = "DELETE FROM prices WHERE model = $1";
        Ok(on_pool!(self, p => sqlx::query(q).bind(model).execute(p).await.map(|d| d.rows_affected()))? > 0)
    }
}
