//! Users: the host app's accounts, each on a plan.

use tollgate_domain::model::{User, UserStatus};
use tollgate_domain::{PlanSlug, Timestamp, UserId};

use crate::hooks::{Announce, insert_event};
use crate::{Result, Store, StoreError, on_pool};

macro_rules! columns {
    () => {
        "id, plan, status, email, stripe_customer_id, billing_anchor, usage_reset_at, limit_overrides, created_at, updated_at"
    };
}

pub(crate) use columns as user_columns;

/// Binds a user's columns in the order of `columns!()`.
macro_rules! bind_user {
    ($q:expr, $user:expr, $overrides:expr) => {{
        let u: &User = $user;
        $q.bind(u.id.as_str())
            .bind(u.plan.as_str())
            .bind(u.status.as_str())
            .bind(&u.email)
            .bind(&u.stripe_customer_id)
            .bind(u.billing_anchor.millis())
            .bind(u.usage_reset_at.map(Timestamp::millis))
            .bind($overrides)
            .bind(u.created_at.millis())
            .bind(u.updated_at.millis())
    }};
}

fn overrides_json(user: &User) -> Result<Option<String>> {
    user.limit_overrides
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| tollgate_domain::Invalid::new(format!("user limit_overrides: {e}")).into())
}

/// A user's write failed: a missing plan is named; a taken id or Stripe
/// customer is a conflict.
fn user_write_error(user: &User) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(format!("a user with id {:?} or the same stripe_customer_id exists", user.id.as_str()))
        }
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::not_found(format!("no plan {:?}", user.plan.as_str()))
        }
        _ => StoreError::Database(e),
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: String,
    plan: String,
    status: String,
    email: Option<String>,
    stripe_customer_id: Option<String>,
    billing_anchor: i64,
    usage_reset_at: Option<i64>,
    limit_overrides: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<User> {
        Ok(User {
            id: UserId::parse(&row.id)?,
            plan: PlanSlug::parse(&row.plan)?,
            status: UserStatus::from_stored(&row.status),
            email: row.email,
            stripe_customer_id: row.stripe_customer_id,
            billing_anchor: Timestamp::from_millis(row.billing_anchor),
            usage_reset_at: row.usage_reset_at.map(Timestamp::from_millis),
            limit_overrides: row
                .limit_overrides
                .map(|l| serde_json::from_str(&l))
                .transpose()
                .map_err(|e| tollgate_domain::Invalid::new(format!("user limit_overrides: {e}")))?,
            created_at: Timestamp::from_millis(row.created_at),
            updated_at: Timestamp::from_millis(row.updated_at),
        })
    }
}

pub struct NewUser {
    pub id: UserId,
    pub plan: PlanSlug,
    pub email: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub billing_anchor: Option<Timestamp>,
}

/// Fields to change; `None` leaves one as it is, `Some(None)` clears it.
#[derive(Default)]
pub struct UserPatch {
    pub email: Option<Option<String>>,
    pub stripe_customer_id: Option<Option<String>>,
    pub status: Option<UserStatus>,
    pub plan: Option<PlanSlug>,
    pub billing_anchor: Option<Timestamp>,
    pub usage_reset_at: Option<Timestamp>,
    pub limit_overrides: Option<Option<tollgate_domain::Limits>>,
}

impl UserPatch {
    fn apply(self, user: &mut User) {
        if let Some(email) = self.email {
            user.email = email;
        }
        if let Some(customer) = self.stripe_customer_id {
            user.stripe_customer_id = customer;
        }
        user.status = self.status.unwrap_or(user.status);
        user.plan = self.plan.unwrap_or_else(|| user.plan.clone());
        user.billing_anchor = self.billing_anchor.unwrap_or(user.billing_anchor);
        if self.usage_reset_at.is_some() {
            user.usage_reset_at = self.usage_reset_at;
        }
        if let Some(overrides) = self.limit_overrides {
            user.limit_overrides = overrides;
        }
    }
}

/// A user's change as stored: the row before (read under the lock) and
/// after.
pub struct Updated {
    pub before: User,
    pub user: User,
}

fn user_not_found(id: &UserId) -> StoreError {
    StoreError::not_found(format!("no user {:?}", id.as_str()))
}

impl Store {
    pub async fn insert_user(&self, new: NewUser) -> Result<User> {
        let plan = self.plan(&new.plan).await?;
        let now = Timestamp::now();
        let user = User {
            id: new.id,
            plan: plan.slug,
            status: UserStatus::Active,
            email: new.email,
            stripe_customer_id: new.stripe_customer_id,
            billing_anchor: new.billing_anchor.unwrap_or(now),
            usage_reset_at: None,
            limit_overrides: None,
            created_at: now,
            updated_at: now,
        };
        let q = concat!("INSERT INTO users (", columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
        let overrides = overrides_json(&user)?;
        on_pool!(self, p => bind_user!(sqlx::query(q), &user, &overrides).execute(p).await.map(|_| ()))
            .map_err(user_write_error(&user))?;
        Ok(user)
    }

    pub async fn user(&self, id: &UserId) -> Result<User> {
        self.find_user(id).await?.ok_or_else(|| user_not_found(id))
    }

    pub async fn find_user(&self, id: &UserId) -> Result<Option<User>> {
        let q = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
        let row: Option<UserRow> = on_pool!(self, p => sqlx::query_as(q).bind(id.as_str()).fetch_optional(p).await)?;
        row.map(User::try_from).transpose()
    }

    /// Users in id order, after `after` (a cursor), at most `limit`.
    pub async fn users(&self, after: Option<&str>, limit: i64, plan: Option<&PlanSlug>) -> Result<Vec<User>> {
        let q = concat!(
            "SELECT ",
            columns!(),
            " FROM users WHERE id > $1 AND ($2 IS NULL OR plan = $2) ORDER BY id LIMIT $3"
        );
        let rows: Vec<UserRow> = on_pool!(self, p => sqlx::query_as(q)
            .bind(after.unwrap_or(""))
            .bind(plan.map(PlanSlug::as_str))
            .bind(limit)
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(User::try_from).collect()
    }

    /// Applies `patch` and returns the user before and after; the events
    /// `announce` makes of them go to the outbox in the same transaction.
    /// The user is read and written in one transaction that holds their row
    /// (Postgres) or the write lock (SQLite), so a change made meanwhile (a
    /// Stripe event) is never overwritten with what was read before it, and
    /// the events tell what really changed.
    pub async fn update_user(
        &self,
        id: &UserId,
        patch: UserPatch,
        announce: Announce<'_, (User, User)>,
    ) -> Result<Updated> {
        if let Some(plan) = &patch.plan {
            self.plan(plan).await?;
        }
        let postgres = matches!(self.pool, crate::Pool::Postgres(_));
        let select = if postgres {
            concat!("SELECT ", columns!(), " FROM users WHERE id = $1 FOR UPDATE")
        } else {
            concat!("SELECT ", columns!(), " FROM users WHERE id = $1")
        };
        let q = "UPDATE users SET plan = $2, status = $3, email = $4, stripe_customer_id = $5, billing_anchor = $6, \
                 usage_reset_at = $7, limit_overrides = $8, created_at = $9, updated_at = $10 WHERE id = $1";
        let updated = on_pool!(self, p => {
            let mut tx = if postgres { p.begin().await? } else { p.begin_with("BEGIN IMMEDIATE").await? };
            let row: Option<UserRow> = sqlx::query_as(select).bind(id.as_str()).fetch_optional(&mut *tx).await?;
            let before = User::try_from(row.ok_or_else(|| user_not_found(id))?)?;
            let mut user = before.clone();
            patch.apply(&mut user);
            user.updated_at = Timestamp::now();
            let overrides = overrides_json(&user)?;
            bind_user!(sqlx::query(q), &user, &overrides).execute(&mut *tx).await.map_err(user_write_error(&user))?;
            let pair = (before, user);
            for event in announce(&pair) {
                insert_event!(&mut *tx, &event).await?;
            }
            tx.commit().await?;
            let (before, user) = pair;
            Updated { before, user }
        });
        Ok(updated)
    }

    /// Deletes a user and, with them, their keys.
    pub async fn delete_user(&self, id: &UserId) -> Result<()> {
        let done = on_pool!(self, p => sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.as_str())
            .execute(p)
            .await
            .map(|d| d.rows_affected()))?;
        if done == 0 {
            return Err(user_not_found(id));
        }
        Ok(())
    }
}
