//! A small client of the admin API for the CLI, and how its answers are
//! printed: aligned tables for people, JSON for scripts.

use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let token = std::env::var("TOLLGATE_ADMIN_TOKEN")
            .context("set TOLLGATE_ADMIN_TOKEN to the admin token printed at Tollgate's first start")?;
        Ok(Client { base: url.trim_end_matches('/').to_owned(), token, http: reqwest::Client::new() })
    }

    /// A client with `token` as the admin token.
    pub fn with_token(url: &str, token: &str) -> Self {
        Client { base: url.trim_end_matches('/').to_owned(), token: token.to_owned(), http: reqwest::Client::new() }
    }

    /// A path segment, percent-encoded (user ids may hold `/`, `|`, …).
    pub fn segment(raw: &str) -> String {
        let mut out = String::with_capacity(raw.len());
        for b in raw.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    async fn send(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.with_context(|| format!("cannot reach Tollgate at {}", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if !status.is_success() {
            let message = body["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| body.to_string());
            bail!("{status}: {message}");
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn get_query(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let encoded: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", Client::segment(v))).collect();
        self.get(&format!("{path}?{}", encoded.join("&"))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    /// Streams a CSV answer into `write`, chunk by chunk; returns the lines.
    pub async fn get_csv(
        &self,
        path: &str,
        query: &[(&str, String)],
        mut write: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> anyhow::Result<u64> {
        use futures_util::StreamExt;
        let encoded: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", Client::segment(v))).collect();
        let request = self.request(Method::GET, &format!("{path}?{}", encoded.join("&"))).header("accept", "text/csv");
        let response = request.send().await.with_context(|| format!("cannot reach Tollgate at {}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or_default();
            bail!("{status}: {}", body["error"]["message"].as_str().unwrap_or("export failed"));
        }
        let mut lines = 0;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.context("the export was cut off")?;
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            write(&chunk).context("cannot write the export")?;
        }
        Ok(lines)
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(Method::DELETE, path)).await
    }
}

#[derive(Clone, Copy)]
pub enum Output {
    Table,
    Json,
}

pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(map) => map.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| columns.iter().map(|c| cell(&r[*c])).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(c.len()))
        .collect();
    let line = |values: Vec<String>| {
        values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(columns.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

impl Output {
    fn json(value: &Value) {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    }

    pub fn record(self, value: &Value, columns: &[&str]) {
        match self {
            Output::Json => Output::json(value),
            Output::Table => println!("{}", table(std::slice::from_ref(value), columns)),
        }
    }

    pub fn list(self, value: &Value, field: &str, columns: &[&str]) {
        match self {
            Output::Json => Output::json(value),
            Output::Table => {
                println!("{}", table(value[field].as_array().map(Vec::as_slice).unwrap_or_default(), columns))
            }
        }
    }

    /// Rows under a heading line (tables), or the whole answer (JSON).
    pub fn titled_list(self, value: &Value, title: &str, rows: &[Value], columns: &[&str]) {
        match self {
            Output::Json => Output::json(value),
            Output::Table => println!("{title}\n\n{}", table(rows, columns)),
        }
    }

    pub fn new_key(self, value: &Value) {
        match self {
            Output::Json => Output::json(value),
            Output::Table => {
                println!("{}", table(std::slice::from_ref(value), &["id", "name", "prefix", "scopes", "expires_at"]));
                println!("\nkey (shown once, store it now): {}", cell(&value["key"]));
            }
        }
    }

    pub fn done(self, message: &str, value: Value) {
        match self {
            Output::Json => Output::json(&value),
            Output::Table => println!("{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_columns_and_show_missing_values_as_dashes() {
        let rows = [json!({"id": "u_1", "plan": "free"}), json!({"id": "a-longer-id", "plan": null})];
        assert_eq!(table(&rows, &["id", "plan"]), "ID           PLAN\nu_1          free\na-longer-id  -");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(Client::segment("auth0|a/b c"), "auth0%7Ca%2Fb%20c");
    }
}
