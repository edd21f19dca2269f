//! Paged lists (`X-Next-Token`, as E2B's `GET /v2/sandboxes` and `GET /snapshots`
//! answer): one page's request, and a lazy stream over every page.

use std::future::Future;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use reqwest::Method;
use serde::de::DeserializeOwned;

use super::{Client, read_json};
use crate::{Error, Result};

/// The response header naming where the next page starts.
const NEXT_TOKEN_HEADER: &str = "x-next-token";

impl Client {
    /// GETs one page of `path` with the query `pairs` (plus `nextToken` when continuing
    /// from `next_token`): its items and the next page's token, `None` on the last page.
    pub(super) async fn get_page<T: DeserializeOwned>(
        &self,
        path: &str,
        mut pairs: Vec<(String, String)>,
        next_token: Option<&str>,
    ) -> Result<(Vec<T>, Option<String>)> {
        if let Some(token) = next_token {
            pairs.push(("nextToken".to_owned(), token.to_owned()));
        }
        let url = self.endpoint(path, &pairs)?;
        let response = self.send(Method::GET, url, None::<&()>, true).await?;
        let next_token = response
            .headers()
            .get(NEXT_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        Ok((read_json(response).await?, next_token))
    }
}

/// Every item of a paged list, as a stream that fetches pages as it is polled:
/// `page(token)` fetches the page at `token` (`None`: the first) and answers its items
/// and the next page's token; the stream ends after a page that names none.
pub(super) fn all_pages<T, F, Fut>(page: F) -> BoxStream<'static, Result<T>>
where
    T: Send + 'static,
    F: Fn(Option<String>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(Vec<T>, Option<String>)>> + Send + 'static,
{
    let page = Arc::new(page);
    // The state is the token of the page to fetch; `None` once the last was fetched.
    futures::stream::try_unfold(Some(None::<String>), move |token| {
        let page = page.clone();
        async move {
            let Some(token) = token else {
                return Ok::<_, Error>(None);
            };
            let (items, next) = page(token).await?;
            Ok(Some((
                futures::stream::iter(items.into_iter().map(Ok)),
                next.map(Some),
            )))
        }
    })
    .try_flatten()
    .boxed()
}
