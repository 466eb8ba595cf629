//! Inbound billing events (Stripe's): each applied at most once, by its
//! event id, in one transaction with the change it makes and the outbox
//! events that announce it.

use tollgate_domain::model::User;
use tollgate_domain::{PlanSlug, Timestamp};

use crate::hooks::{Announce, insert_event};
use crate::users::{UserRow, user_columns};
use crate::{Result, Store, on_pool};

/// What a billing event asks of the user it names.
#[derive(Clone, Debug)]
pub enum BillingChange {
    /// A new period starts now (a paid invoice).
    NewPeriod,
    /// Move to the plan with this Stripe price id.
    PlanForPrice(String),
    /// Move to this plan.
    Plan(PlanSlug),
}

/// What became of a billing event.
#[derive(Clone, Debug)]
pub enum BillingOutcome {
    /// Its id was seen before: nothing was done again.
    Duplicate,
    /// Acknowledged without a change, and why (unknown customer or price,
    /// a type that asks for nothing, already on that plan).
    Ignored(String),
    /// The user before and after the change.
    Applied { before: Box<User>, after: Box<User> },
}

impl Store {
    /// Applies billing event `id` of `kind` to the user whose Stripe
    /// customer is `customer`, unless that id was applied before.
    pub async fn apply_billing_event(
        &self,
        id: &str,
        kind: &str,
        customer: Option<&str>,
        change: Option<BillingChange>,
        announce: Announce<'_, (User, User)>,
    ) -> Result<BillingOutcome> {
        let now = Timestamp::now();
        // The user's row is locked until the commit: two events for one
        // customer at once (an upgrade's subscription change and its paid
        // invoice) then apply one after the other, the second to what the
        // first wrote. (On SQLite the first insert took the write lock.)
        let user_q = match &self.pool {
            crate::Pool::Postgres(_) => {
                concat!("SELECT ", user_columns!(), " FROM users WHERE stripe_customer_id = $1 FOR UPDATE")
            }
            crate::Pool::Sqlite(_) => concat!("SELECT ", user_columns!(), " FROM users WHERE stripe_customer_id = $1"),
        };
        let outcome = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let first = sqlx::query(
                "INSERT INTO stripe_events (id, type, outcome, received_at) VALUES ($1, $2, 'received', $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(kind)
            .bind(now.millis())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if first == 0 {
                tx.rollback().await?;
                return Ok(BillingOutcome::Duplicate);
            }
            let outcome = 'outcome: {
                let Some(change) = change else {
                    break 'outcome BillingOutcome::Ignored(format!("{kind} changes nothing here"));
                };
                let Some(customer) = customer else {
                    break 'outcome BillingOutcome::Ignored("the event names no customer".into());
                };
                let row: Option<UserRow> = sqlx::query_as(user_q).bind(customer).fetch_optional(&mut *tx).await?;
                let Some(row) = row else {
                    break 'outcome BillingOutcome::Ignored(format!("no user has the Stripe customer {customer:?}"));
                };
                let before = User::try_from(row)?;
                let mut after = before.clone();
                match change {
                    BillingChange::NewPeriod => after.start_new_period(now),
                    BillingChange::PlanForPrice(price) => {
                        let slug: Option<String> = sqlx::query_scalar("SELECT slug FROM plans WHERE stripe_price_id = $1")
                            .bind(&price)
                            .fetch_optional(&mut *tx)
                            .await?;
                        let Some(slug) = slug else {
                            break 'outcome BillingOutcome::Ignored(format!("no plan has the Stripe price {price:?}"));
                        };
                        after.plan = PlanSlug::parse(&slug)?;
                    }
                    BillingChange::Plan(slug) => {
                        let found: Option<String> = sqlx::query_scalar("SELECT slug FROM plans WHERE slug = $1")
                            .bind(slug.as_str())
                            .fetch_optional(&mut *tx)
                            .await?;
                        if found.is_none() {
                            break 'outcome BillingOutcome::Ignored(format!("there is no plan {:?}", slug.as_str()));
                        }
                        after.plan = slug;
                    }
                }
                if after == before {
                    break 'outcome BillingOutcome::Ignored(format!("the user is on plan {:?} already", after.plan.as_str()));
                }
                after.updated_at = now;
                sqlx::query("UPDATE users SET plan = $2, billing_anchor = $3, usage_reset_at = $4, updated_at = $5 WHERE id = $1")
                    .bind(after.id.as_str())
                    .bind(after.plan.as_str())
                    .bind(after.billing_anchor.millis())
                    .bind(after.usage_reset_at.map(Timestamp::millis))
                    .bind(after.updated_at.millis())
                    .execute(&mut *tx)
                    .await?;
                for event in announce(&(before.clone(), after.clone())) {
                    insert_event!(&mut *tx, &event).await?;
                }
                BillingOutcome::Applied { before: Box::new(before), after: Box::new(after) }
            };
            let said = match &outcome {
                BillingOutcome::Ignored(why) => format!("ignored: {why}"),
                _ => "applied".to_owned(),
            };
            sqlx::query("UPDATE stripe_events SET outcome = $2 WHERE id = $1").bind(id).bind(said).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, crate::StoreError>(outcome)
        })?;
        Ok(outcome)
    }
}
