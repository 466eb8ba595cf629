//! Plans: the catalogue users are placed on.

use tollgate_domain::model::Plan;
use tollgate_domain::{Invalid, Limits, Meter, PeriodKind, PlanSlug, Timestamp};

use crate::{Result, Store, StoreError, on_pool};

macro_rules! columns {
    () => {
        "slug, name, price_cents, currency, period, limits, rpm, tpm, byok_counts, byok_required, \
         allowed_models, alert_thresholds, stripe_price_id, created_at, updated_at, payment_link, default_output_reservation"
    };
}

#[derive(sqlx::FromRow)]
struct PlanRow {
    slug: String,
    name: String,
    price_cents: i64,
    currency: String,
    period: String,
    limits: String,
    rpm: Option<i64>,
    tpm: Option<i64>,
    byok_counts: bool,
    byok_required: bool,
    allowed_models: Option<String>,
    alert_thresholds: String,
    stripe_price_id: Option<String>,
    created_at: i64,
    updated_at: i64,
    payment_link: Option<String>,
    default_output_reservation: i64,
}

fn corrupt(what: &str) -> impl Fn(serde_json::Error) -> Invalid + '_ {
    move |e| Invalid::new(format!("{what}: {e}"))
}

impl TryFrom<PlanRow> for Plan {
    type Error = StoreError;

    fn try_from(row: PlanRow) -> Result<Plan> {
        Ok(Plan {
            slug: PlanSlug::parse(&row.slug)?,
            name: row.name,
            price_cents: row.price_cents,
            currency: row.currency,
            period: PeriodKind::parse(&row.period)?,
            limits: serde_json::from_str(&row.limits).map_err(corrupt("plan limits"))?,
            rpm: row.rpm,
            tpm: row.tpm,
            byok_counts: row.byok_counts,
            byok_required: row.byok_required,
            allowed_models: row
                .allowed_models
                .map(|m| serde_json::from_str(&m))
                .transpose()
                .map_err(corrupt("plan allowed_models"))?,
            alert_thresholds: serde_json::from_str(&row.alert_thresholds).map_err(corrupt("plan alert_thresholds"))?,
            stripe_price_id: row.stripe_price_id,
            payment_link: row.payment_link,
            default_output_reservation: row.default_output_reservation,
            created_at: Timestamp::from_millis(row.created_at),
            updated_at: Timestamp::from_millis(row.updated_at),
        })
    }
}

/// The plans every new installation starts with.
pub fn default_plans(now: Timestamp) -> Vec<Plan> {
    let limits = |tokens: Option<i64>, requests: Option<i64>| {
        Limits::new([
            (Meter::parse(Meter::TOKENS).expect("a known meter name"), tokens),
            (Meter::parse(Meter::REQUESTS).expect("a known meter name"), requests),
        ])
        .expect("the built-in limits are not negative")
    };
    let plan = |slug: &str, name: &str, price_cents, limits, rpm, tpm| Plan {
        name: name.to_owned(),
        price_cents,
        limits,
        rpm,
        tpm,
        ..Plan::blank(PlanSlug::parse(slug).expect("the built-in slugs are valid"), now)
    };
    vec![
        plan("free", "Free", 0, limits(Some(100_000), Some(1_000)), Some(20), Some(40_000)),
        plan("pro", "Pro", 2_900, limits(Some(5_000_000), Some(50_000)), Some(300), Some(1_000_000)),
        plan("enterprise", "Enterprise", 9_900, limits(None, None), None, None),
    ]
}

impl Store {
    pub async fn plans(&self) -> Result<Vec<Plan>> {
        let q = concat!("SELECT ", columns!(), " FROM plans ORDER BY price_cents, slug");
        let rows: Vec<PlanRow> = on_pool!(self, p => sqlx::query_as(q).fetch_all(p).await)?;
        rows.into_iter().map(Plan::try_from).collect()
    }

    pub async fn plan(&self, slug: &PlanSlug) -> Result<Plan> {
        let q = concat!("SELECT ", columns!(), " FROM plans WHERE slug = $1");
        let row: Option<PlanRow> = on_pool!(self, p => sqlx::query_as(q).bind(slug.as_str()).fetch_optional(p).await)?;
        row.ok_or_else(|| StoreError::not_found(format!("no plan {slug:?}")))?.try_into()
    }

    /// Inserts a new plan; a taken slug or Stripe price id is a conflict.
    pub async fn insert_plan(&self, plan: &Plan) -> Result<Plan> {
        let q = concat!(
            "INSERT INTO plans (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        );
        let conflict = format!("a plan with slug {:?} or the same stripe_price_id exists", plan.slug.as_str());
        self.write_plan(q, plan).await.map_err(|e| match e {
            StoreError::Conflict(_) => StoreError::Conflict(conflict),
            other => other,
        })?;
        Ok(plan.clone())
    }

    /// Replaces every field of an existing plan but its slug and creation time.
    pub async fn update_plan(&self, plan: &Plan) -> Result<Plan> {
        let q = "UPDATE plans SET name = $2, price_cents = $3, currency = $4, period = $5, limits = $6, \
                 rpm = $7, tpm = $8, byok_counts = $9, byok_required = $10, allowed_models = $11, \
                 alert_thresholds = $12, stripe_price_id = $13, updated_at = $15, payment_link = $16, \
                 default_output_reservation = $17 \
                 WHERE slug = $1 AND $14 = $14";
        let done = self.write_plan(q, plan).await?;
        if done == 0 {
            return Err(StoreError::not_found(format!("no plan {:?}", plan.slug.as_str())));
        }
        self.plan(&plan.slug).await
    }

    async fn write_plan(&self, q: &'static str, plan: &Plan) -> Result<u64> {
        let limits = serde_json::to_string(&plan.limits).map_err(corrupt("plan limits"))?;
        let models = plan
            .allowed_models
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(corrupt("plan allowed_models"))?;
        let thresholds = serde_json::to_string(&plan.alert_thresholds).map_err(corrupt("plan alert_thresholds"))?;
        let done = on_pool!(self, p => sqlx::query(q)
            .bind(plan.slug.as_str())
            .bind(&plan.name)
            .bind(plan.price_cents)
            .bind(&plan.currency)
            .bind(plan.period.as_str())
            .bind(&limits)
            .bind(plan.rpm)
            .bind(plan.tpm)
            .bind(plan.byok_counts)
            .bind(plan.byok_required)
            .bind(&models)
            .bind(&thresholds)
            .bind(&plan.stripe_price_id)
            .bind(plan.created_at.millis())
            .bind(plan.updated_at.millis())
            .bind(&plan.payment_link)
            .bind(plan.default_output_reservation)
            .execute(p)
            .await
            .map(|d| d.rows_affected()))
        .map_err(StoreError::unique_as("another plan has this stripe_price_id"))?;
        Ok(done)
    }

    /// How many users are on a plan.
    pub async fn users_on_plan(&self, slug: &PlanSlug) -> Result<i64> {
        Ok(on_pool!(self, p => sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE plan = $1")
            .bind(slug.as_str())
            .fetch_one(p)
            .await)?)
    }

    /// Deletes a plan no user is on; a plan in use is a conflict.
    pub async fn delete_plan(&self, slug: &PlanSlug) -> Result<()> {
        let users = self.users_on_plan(slug).await?;
        let in_use = || StoreError::Conflict(format!("plan {:?} is in use by {users} user(s)", slug.as_str()));
        if users > 0 {
            return Err(in_use());
        }
        let done = on_pool!(self, p => sqlx::query("DELETE FROM plans WHERE slug = $1")
            .bind(slug.as_str())
            .execute(p)
            .await
            .map(|d| d.rows_affected()))
        .map_err(|e| match &e {
            // A user placed on the plan between the count and the delete.
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => in_use(),
            _ => StoreError::Database(e),
        })?;
        if done == 0 {
            return Err(StoreError::not_found(format!("no plan {:?}", slug.as_str())));
        }
        Ok(())
    }

    /// Creates the default plans the first time the store is used. Plans the
    /// operator later deletes or edits are left alone.
    pub async fn seed_default_plans(&self) -> Result<()> {
        if self.setting("default_plans_seeded").await?.is_some() {
            return Ok(());
        }
        for plan in default_plans(Timestamp::now()) {
            match self.insert_plan(&plan).await {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.set_setting_if_absent("default_plans_seeded", "1").await?;
        Ok(())
    }
}
