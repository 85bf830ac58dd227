//! API surface classification from the request line.

use super::ApiSurface;
use http::Method;

impl ApiSurface {
    /// Classifies a request by its method and URL path.
    ///
    /// Only the path's last segments count, so every gateway prefix works the same way:
    /// `/v1/…`, `/api/v1/…`, `/openai/v1/…`, `/v1beta/openai/…` and Azure's
    /// `/openai/deployments/{deployment}/…`. The query string and a trailing slash are ignored.
    ///
    /// | request | surface |
    /// |---|---|
    /// | `POST …/chat/completions` | `chat_completions` |
    /// | `GET`/`POST …/chat/completions/{id}` (stored completions) | `chat_completions` |
    /// | `POST …/responses` | `responses` |
    /// | `GET …/responses/{id}`, `POST …/responses/{id}/cancel` | `responses` |
    /// | anything else (`…/responses/{id}/input_items`, `DELETE`, embeddings, lists) | `other` |
    ///
    /// ```
    /// use http::Method;
    /// use reqwest_llm_guard::evidence::ApiSurface;
    ///
    /// let azure = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
    /// assert_eq!(ApiSurface::classify(&Method::POST, azure), ApiSurface::ChatCompletions);
    /// assert_eq!(ApiSurface::classify(&Method::POST, "/api/v1/responses"), ApiSurface::Responses);
    /// assert_eq!(ApiSurface::classify(&Method::POST, "/v1/embeddings"), ApiSurface::Other);
    /// ```
    pub fn classify(method: &Method, path: &str) -> Self {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let mut rev = path.trim_end_matches('/').rsplit('/');
        let last = rev.next().unwrap_or_default();
        let second = rev.next().unwrap_or_default();
        let third = rev.next().unwrap_or_default();
        let is_post = method == Method::POST;
        let is_get = method == Method::GET;
        match (third, second, last) {
            (_, "chat", "completions") if is_post => Self::ChatCompletions,
            ("chat", "completions", id) if (is_get || is_post) && is_id(id) => {
                Self::ChatCompletions
            }
            (_, _, "responses") if is_post => Self::Responses,
            (_, "responses", id) if (is_get || is_post) && is_id(id) => Self::Responses,
            ("responses", id, "cancel") if is_post && is_id(id) => Self::Responses,
            _ => Self::Other,
        }
    }

    /// Classifies a `reqwest` request.
    pub fn of_request(request: &reqwest::Request) -> Self {
        Self::classify(request.method(), request.url().path())
    }
}

/// An object id segment, as opposed to a sub-resource name such as `input_tokens`,
/// `compact` or `messages`. OpenAI's ids carry a prefix and an underscore or dash
/// (`resp_…`, `chatcmpl-…`); gateways' ids (`gen-…`) too.
fn is_id(segment: &str) -> bool {
    !segment.is_empty()
        && !matches!(
            segment,
            "input_tokens" | "compact" | "messages" | "input_items"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        use ApiSurface::{ChatCompletions as Chat, Other, Responses as Resp};
        let post = Method::POST;
        let get = Method::GET;
        let delete = Method::DELETE;
        let rows: &[(&Method, &str, ApiSurface)] = &[
            (&post, "/v1/chat/completions", Chat),
            (&post, "/chat/completions", Chat),
            (&post, "/api/v1/chat/completions", Chat),
            (&post, "/v1beta/openai/chat/completions", Chat),
            (&post, "/openai/v1/chat/completions/", Chat),
            (&post, "/v1/chat/completions?x=1", Chat),
            (
                &post,
                "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
                Chat,
            ),
            (&get, "/v1/chat/completions/chatcmpl-abc", Chat),
            (&get, "/v1/chat/completions", Other),
            (&get, "/v1/chat/completions/chatcmpl-abc/messages", Other),
            (&delete, "/v1/chat/completions/chatcmpl-abc", Other),
            (&post, "/v1/responses", Resp),
            (&post, "/api/v1/responses", Resp),
            (&post, "/openai/v1/responses?api-version=preview", Resp),
            (
                &get,
                "/v1/responses/resp_123?stream=true&starting_after=4",
                Resp,
            ),
            (&post, "/v1/responses/resp_123/cancel", Resp),
            (&get, "/v1/responses/resp_123/input_items", Other),
            (&post, "/v1/responses/input_tokens", Other),
            (&post, "/v1/responses/compact", Other),
            (&delete, "/v1/responses/resp_123", Other),
            (&post, "/v1/embeddings", Other),
            (&post, "/v1/completions", Other),
            (&get, "/v1/models", Other),
            (&post, "/", Other),
            (&post, "", Other),
        ];
        for (method, path, want) in rows {
            assert_eq!(ApiSurface::classify(method, path), *want, "{method} {path}");
        }
    }
}
