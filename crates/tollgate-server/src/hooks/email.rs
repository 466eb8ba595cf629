//! The plain-text e-mail a user gets for a usage alert: how much is used of
//! what limit, when the period resets, and what to do.

use serde_json::Value;
use tollgate_domain::Timestamp;

use crate::web::view::number;

/// Subject and body for an alert event's JSON body; `None` for events that
/// are not alerts.
pub fn alert_text(event_body: &str) -> Option<(String, String)> {
    let event: Value = serde_json::from_str(event_body).ok()?;
    let data = &event["data"];
    let user = data["user_id"].as_str()?;
    let meter = data["meter"].as_str()?;
    let used = data["used"].as_i64()?;
    let limit = data["limit"].as_i64()?;
    let reset = match data["period_end"].as_str().and_then(|t| Timestamp::parse_rfc3339(t).ok()) {
        Some(end) => format!("Your usage resets on {}.", end.to_datetime().format("%-d %B %Y at %H:%M UTC")),
        None => "This allowance does not reset by itself.".to_owned(),
    };
    let what = meter_words(meter);
    let amounts = format!("{} of {} {what}", number(used), number(limit));
    match event["type"].as_str()? {
        "usage.threshold" => {
            let threshold = data["threshold"].as_i64()?;
            Some((
                format!("You have used {threshold}% of your {what} allowance"),
                format!(
                    "Hello,\n\nyour account {user} has used {amounts} ({threshold}% of its allowance) in the \
                     current period.\n\n{reset}\n\nWhat to do: nothing yet, if that is what you expect. If you will \
                     need more before the reset, upgrade your plan or ask for more allowance now: once the limit is \
                     reached, requests that need more are refused until the period ends.\n"
                ),
            ))
        }
        "quota.exceeded" => Some((
            format!("You have used all of your {what} allowance"),
            format!(
                "Hello,\n\nyour account {user} has used {amounts}: its allowance for the current period is used \
                 up, and requests that need more are refused.\n\n{reset}\n\nWhat to do: to continue before the \
                 reset, upgrade your plan or ask for more allowance; otherwise your usage resumes when the period \
                 ends.\n"
            ),
        )),
        _ => None,
    }
}

fn meter_words(meter: &str) -> String {
    match meter {
        "tokens" => "tokens".into(),
        "input_tokens" => "input tokens".into(),
        "output_tokens" => "output tokens".into(),
        "requests" => "requests".into(),
        "cost_usd" => "micro-dollars of spend".into(),
        other => match other.split_once(':') {
            Some(("requests", feature)) => format!("{feature} requests"),
            _ => other.replace('_', " "),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_threshold_mail_says_usage_limit_reset_and_what_to_do() {
        let body = json!({"type": "usage.threshold", "timestamp": "2026-11-20T10:00:00.000Z", "data": {
            "user_id": "u_42", "meter": "tokens", "threshold": 90, "used": 9000, "limit": 10000,
            "period_start": "2026-11-01T00:00:00.000Z", "period_end": "2026-12-01T00:00:00.000Z"}});
        let (subject, text) = alert_text(&body.to_string()).unwrap();
        assert_eq!(subject, "You have used 90% of your tokens allowance");
        for part in ["u_42", "9,000 of 10,000 tokens", "1 December 2026 at 00:00 UTC", "What to do"] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
        let exceeded = json!({"type": "quota.exceeded", "data": {"user_id": "u", "meter": "requests:analyze",
            "used": 5, "limit": 5, "period_end": null}});
        let (subject, text) = alert_text(&exceeded.to_string()).unwrap();
        assert_eq!(subject, "You have used all of your analyze requests allowance");
        assert!(text.contains("does not reset"), "{text}");
        assert!(alert_text(&json!({"type": "key.created", "data": {}}).to_string()).is_none());
    }
}
