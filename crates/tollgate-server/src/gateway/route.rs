//! Which provider serves a model, under which name, and whether the
//! user's plan may call it.
//!
//! A name is looked up, in order: as an alias of the file's `[models]`
//! table; as `provider/model` when the part before the first `/` is a
//! configured provider (`groq/llama-3.1-8b-instant`,
//! `groq/openai/gpt-oss-120b`); else as the model of the route's default
//! provider (the configured one for the OpenAI-format routes, Anthropic's
//! and Gemini's for theirs).

use axum::http::StatusCode;
use serde_json::json;
use tollgate_domain::KnownProvider;
use tollgate_domain::model::Plan;
use tollgate_providers::{Api, ErrorKind};

use super::refusal::ProxyError;
use crate::config::{Config, ProviderConfig, speaks_openai};

/// Where a call goes.
#[derive(Debug)]
pub struct Target<'a> {
    pub provider: &'a ProviderConfig,
    /// The model as the provider names it.
    pub model: String,
}

/// The provider and upstream model for `requested` on a route of `api`.
/// The longest model name a call may name (as the ledger's `model`).
const MAX_MODEL_BYTES: usize = 256;

pub fn target<'a>(config: &'a Config, api: Api, requested: &str) -> Result<Target<'a>, ProxyError> {
    // The model is recorded with the call's usage: held to what the ledger
    // takes (as the metering API's events are), so the record cannot fail.
    if requested.len() > MAX_MODEL_BYTES || requested.chars().any(char::is_control) {
        return Err(ProxyError::invalid(
            "model",
            format!("model: at most {MAX_MODEL_BYTES} bytes, without control characters"),
        ));
    }
    let (name, model) = if let Some(route) = config.gateway.models.get(requested) {
        (route.provider.as_str(), route.model.clone())
    } else if let Some((prefix, rest)) = requested.split_once('/')
        && !rest.is_empty()
        && config.provider(prefix).is_some()
    {
        (prefix, rest.to_owned())
    } else {
        let default = match api {
            Api::OpenAi => config.gateway.default_provider.as_str(),
            Api::Anthropic => KnownProvider::Anthropic.name(),
            Api::Gemini => KnownProvider::Gemini.name(),
        };
        (default, requested.to_owned())
    };
    let provider = config.provider(name).ok_or_else(|| {
        ProxyError::invalid("model", format!("model {requested:?}: provider {name:?} is not configured"))
    })?;
    let fits = match api {
        Api::OpenAi => speaks_openai(provider),
        Api::Anthropic => provider.known == Some(KnownProvider::Anthropic),
        Api::Gemini => provider.known == Some(KnownProvider::Gemini),
    };
    if !fits {
        let route = match provider.known {
            Some(KnownProvider::Anthropic) => "POST /v1/messages",
            Some(KnownProvider::Gemini) => "POST /v1beta/models/{model}:generateContent",
            _ => "POST /v1/chat/completions",
        };
        return Err(ProxyError::invalid(
            "model",
            format!("model {requested:?} is served by {name}, which this route does not speak: call {route}"),
        ));
    }
    if api == Api::Gemini && !model.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
        return Err(ProxyError::invalid("model", format!("model {model:?}: letters, digits, '-', '.' and '_' only")));
    }
    Ok(Target { provider, model })
}

/// Whether `plan` allows the call: its list names the requested name, the
/// provider's model, or `provider/model`; an entry ending in `*` matches
/// by prefix. No list allows everything.
pub fn allowed(plan: &Plan, requested: &str, target: &Target<'_>) -> Result<(), ProxyError> {
    let Some(list) = &plan.allowed_models else { return Ok(()) };
    let qualified = format!("{}/{}", target.provider.name, target.model);
    let names = [requested, target.model.as_str(), qualified.as_str()];
    let matches = |entry: &String| match entry.strip_suffix('*') {
        Some(prefix) => names.iter().any(|n| n.starts_with(prefix)),
        None => names.contains(&entry.as_str()),
    };
    if list.iter().any(matches) {
        return Ok(());
    }
    let message = format!(
        "model {requested:?} is not allowed on plan {:?}; allowed: {}",
        plan.slug.as_str(),
        if list.is_empty() { "none".to_owned() } else { list.join(", ") }
    );
    Err(ProxyError::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
        .detail("model", json!(requested))
        .detail("allowed_models", json!(list)))
}

#[cfg(test)]
mod tests {
    use tollgate_domain::{PlanSlug, Timestamp};

    use super::*;

    fn config() -> Config {
        let file = "[models.fast]\nprovider = \"groq\"\nmodel = \"llama-3.1-8b-instant\"\n\
                    [models.smart]\nprovider = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\n";
        // A directory per call: the tests run at once, and one writing the
        // file while another reads it made the reader see it empty.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, file).unwrap();
        let env = [("TOLLGATE_MY_LLM_BASE_URL".to_owned(), "http://127.0.0.1:1/v1".to_owned())];
        Config::from_sources(Some(&path), &env).unwrap()
    }

    #[test]
    fn names_route_by_alias_then_prefix_then_default() {
        let config = config();
        let check = |api: Api, requested: &str, expected: Result<(&str, &str), &str>| match (
            target(&config, api, requested),
            expected,
        ) {
            (Ok(t), Ok((p, m))) => assert_eq!((t.provider.name.as_str(), t.model.as_str()), (p, m), "{requested}"),
            (Err(e), Err(part)) => assert!(e.message.contains(part), "{requested}: {}", e.message),
            (got, want) => panic!("{requested}: got {got:?}, want {want:?}"),
        };
        check(Api::OpenAi, "gpt-4o-mini", Ok(("openai", "gpt-4o-mini")));
        check(Api::OpenAi, "groq/llama-3.1-8b-instant", Ok(("groq", "llama-3.1-8b-instant")));
        check(Api::OpenAi, "groq/openai/gpt-oss-120b", Ok(("groq", "openai/gpt-oss-120b")));
        check(Api::OpenAi, "meta-llama/llama-4", Ok(("openai", "meta-llama/llama-4")));
        check(Api::OpenAi, "my_llm/local-model", Ok(("my_llm", "local-model")));
        check(Api::OpenAi, "fast", Ok(("groq", "llama-3.1-8b-instant")));
        check(Api::OpenAi, "smart", Err("call POST /v1/messages"));
        check(Api::OpenAi, "anthropic/claude-haiku-4-5", Err("does not speak"));
        check(Api::Anthropic, "smart", Ok(("anthropic", "claude-sonnet-4-5")));
        check(Api::Anthropic, "claude-haiku-4-5", Ok(("anthropic", "claude-haiku-4-5")));
        check(Api::Anthropic, "gpt-4o", Ok(("anthropic", "gpt-4o")));
        check(Api::Anthropic, "openai/gpt-4o", Err("call POST /v1/chat/completions"));
        check(Api::Gemini, "gemini-2.5-flash", Ok(("gemini", "gemini-2.5-flash")));
        check(Api::Gemini, "fast", Err("does not speak"));
    }

    #[test]
    fn a_plans_list_allows_names_providers_models_and_prefixes() {
        let config = config();
        let mut plan = tollgate_domain::model::Plan::blank(PlanSlug::parse("p").unwrap(), Timestamp::now());
        let t = |requested: &str| target(&config, Api::OpenAi, requested).unwrap();
        assert!(allowed(&plan, "gpt-4o", &t("gpt-4o")).is_ok(), "no list allows everything");
        plan.allowed_models = Some(vec!["gpt-4o-mini".into(), "groq/*".into(), "fast".into()]);
        assert!(allowed(&plan, "gpt-4o-mini", &t("gpt-4o-mini")).is_ok());
        assert!(allowed(&plan, "openai/gpt-4o-mini", &t("openai/gpt-4o-mini")).is_ok());
        assert!(allowed(&plan, "groq/anything", &t("groq/anything")).is_ok());
        assert!(allowed(&plan, "fast", &t("fast")).is_ok());
        let refused = allowed(&plan, "gpt-4o", &t("gpt-4o")).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(
            refused.message.contains("\"gpt-4o\"") && refused.message.contains("plan \"p\""),
            "{}",
            refused.message
        );
        plan.allowed_models = Some(vec![]);
        assert!(allowed(&plan, "gpt-4o-mini", &t("gpt-4o-mini")).is_err());
    }
}
