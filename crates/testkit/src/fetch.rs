//! One HTTP request whose answer the test reads as JSON.

use anyhow::Context;
use serde_json::Value;

/// Sends a request and decodes its JSON answer, whatever the status.
pub trait FetchJson {
    /// Sends the request; the body as JSON.
    fn fetch_json(self) -> impl Future<Output = anyhow::Result<Value>> + Send;
}

impl FetchJson for reqwest::RequestBuilder {
    async fn fetch_json(self) -> anyhow::Result<Value> {
        let res = self.send().await.context("sending the request")?;
        let url = res.url().clone();
        res.json()
            .await
            .with_context(|| format!("decoding the JSON answer of {url}"))
    }
}
