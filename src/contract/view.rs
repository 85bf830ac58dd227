//! Borrowed, typed views of the wire objects: only the fields a check reads.
//!
//! Deserialising into these (strings borrowed where unescaped, unknown fields skipped) is much
//! cheaper than building a `serde_json::Value` for every SSE event; a `Value` is built only on
//! the rare paths (error payloads, diagnosing a wrong type).

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::{Report, TokenUsage, Violation, not_json};

type Str<'a> = Cow<'a, str>;

/// `Some(None)` for an explicit `null`, `None` for a missing key (with `#[serde(default)]`).
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Parses `body` into a view; on failure records `not_json`/`html_body`/`empty_body`, or
/// `wrong_type` when the body is JSON of another shape.
pub(super) fn parse<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    content_type: Option<&str>,
    report: &mut Report,
    offset: Option<u64>,
) -> Option<T> {
    // UTF-8 is checked once for the whole body (std's validator is SIMD-fast); parsing from a
    // `&str` then skips serde_json's check of every string, the checker's largest single cost
    // (BENCHMARKS.md). Invalid UTF-8 anywhere is not JSON, as RFC 8259 says.
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(view) = serde_json::from_str::<T>(text)
    {
        return Some(view);
    }
    // A full parse (not `IgnoredAny`, which skips strings without checking their UTF-8): only
    // on this failure path.
    let violation = if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        Violation::WrongType
    } else {
        not_json(body, content_type)
    };
    report.fail_at(violation, offset);
    None
}

/// Token counts. Lenient: usage is informational, so a gateway that sends `12.0` or a string
/// loses the figure, not the contract.
#[derive(Deserialize, Default)]
#[allow(clippy::struct_field_names)]
pub(super) struct Usage {
    #[serde(default, deserialize_with = "count")]
    pub(super) prompt_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub(super) completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub(super) input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub(super) output_tokens: Option<u64>,
    /// Chat.
    #[serde(default)]
    pub(super) prompt_tokens_details: Details,
    /// Chat.
    #[serde(default)]
    pub(super) completion_tokens_details: Details,
    /// Responses.
    #[serde(default)]
    pub(super) input_tokens_details: Details,
    /// Responses.
    #[serde(default)]
    pub(super) output_tokens_details: Details,
    /// DeepSeek reports its cache hits beside the totals.
    #[serde(default, deserialize_with = "count")]
    pub(super) prompt_cache_hit_tokens: Option<u64>,
}

/// A `*_tokens_details` object. As lenient as the counts: anything but an object (`null`, a
/// string) is no details, never a contract failure.
#[derive(Default)]
#[allow(clippy::struct_field_names)]
pub(super) struct Details {
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "snake_case")]
        enum Field {
            CachedTokens,
            CacheWriteTokens,
            ReasoningTokens,
            #[serde(other)]
            Other,
        }
        /// One count, through the lenient [`count`].
        struct Count(Option<u64>);
        impl<'de> Deserialize<'de> for Count {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                count(d).map(Count)
            }
        }
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Details;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("token details")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                let mut details = Details::default();
                while let Some(field) = a.next_key::<Field>()? {
                    let slot = match field {
                        Field::CachedTokens => &mut details.cached_tokens,
                        Field::CacheWriteTokens => &mut details.cache_write_tokens,
                        Field::ReasoningTokens => &mut details.reasoning_tokens,
                        Field::Other => {
                            a.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = a.next_value::<Count>()?.0;
                }
                Ok(details)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Details::default())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Details::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Details::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Details::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Details::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Details::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Details::default())
            }
        }
        d.deserialize_any(Visit)
    }
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Count;
    impl<'de> serde::de::Visitor<'de> for Count {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a token count")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(u64::try_from(v).ok())
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok((v.is_finite() && v >= 0.0).then_some(v as u64))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(Count)
}

/// An informational string (a service tier, a fingerprint): anything else (`null`, a number, an
/// object) is no value, never a contract failure.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Str<'de>>, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Option<Str<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(Text)
}

impl Usage {
    pub(super) fn tokens(&self) -> TokenUsage {
        let input = (&self.prompt_tokens_details, &self.input_tokens_details);
        let output = (&self.completion_tokens_details, &self.output_tokens_details);
        TokenUsage {
            input_tokens: self.prompt_tokens.or(self.input_tokens),
            output_tokens: self.completion_tokens.or(self.output_tokens),
            cache_read_input_tokens: input
                .0
                .cached_tokens
                .or(input.1.cached_tokens)
                .or(self.prompt_cache_hit_tokens),
            cache_write_input_tokens: input.0.cache_write_tokens.or(input.1.cache_write_tokens),
            reasoning_output_tokens: output.0.reasoning_tokens.or(output.1.reasoning_tokens),
        }
    }
}

// ---- Chat Completions -------------------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct ChatCompletion<'a> {
    #[serde(borrow)]
    pub(super) id: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) object: Option<Str<'a>>,
    pub(super) created: Option<IgnoredAny>,
    #[serde(borrow)]
    pub(super) model: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) choices: Option<Vec<Choice<'a>>>,
    pub(super) usage: Option<Usage>,
    #[serde(borrow)]
    pub(super) error: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "text", borrow)]
    pub(super) service_tier: Option<Str<'a>>,
    #[serde(default, deserialize_with = "text", borrow)]
    pub(super) system_fingerprint: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Choice<'a> {
    #[serde(borrow)]
    pub(super) message: Option<Message<'a>>,
    #[serde(default, deserialize_with = "present", borrow)]
    pub(super) finish_reason: Option<Option<Str<'a>>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) logprobs: Option<Option<IgnoredAny>>,
}

#[derive(Deserialize)]
pub(super) struct Message<'a> {
    #[serde(default, deserialize_with = "present")]
    pub(super) content: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) refusal: Option<Option<IgnoredAny>>,
    #[serde(borrow)]
    pub(super) tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct ToolCall<'a> {
    #[serde(borrow)]
    pub(super) id: Option<Str<'a>>,
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) function: Option<Function<'a>>,
    pub(super) custom: Option<IgnoredAny>,
}

#[derive(Deserialize)]
pub(super) struct Function<'a> {
    #[serde(borrow)]
    pub(super) name: Option<Str<'a>>,
    /// Must be a string (of JSON): an object here fails the view with `wrong_type`.
    #[serde(borrow)]
    pub(super) arguments: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(super) struct ChatChunk<'a> {
    #[serde(borrow)]
    pub(super) id: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) object: Option<Str<'a>>,
    pub(super) created: Option<IgnoredAny>,
    #[serde(borrow)]
    pub(super) model: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) choices: Option<Choices<ChunkChoice<'a>>>,
    pub(super) usage: Option<Usage>,
    #[serde(borrow)]
    pub(super) error: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "text", borrow)]
    pub(super) service_tier: Option<Str<'a>>,
    #[serde(default, deserialize_with = "text", borrow)]
    pub(super) system_fingerprint: Option<Str<'a>>,
}

/// A JSON array kept without an allocation while it has one element, as stream chunks almost
/// always do (a `Vec` per SSE event was 5% of the Chat checker's time).
pub(super) struct Choices<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Choices<T> {
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(&self.rest)
    }

    /// One element, as the array `[item]` reads.
    pub(super) fn one(item: T) -> Self {
        Self {
            first: Some(item),
            rest: Vec::new(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Choices<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Seq<T> {
            type Value = Choices<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                let first = a.next_element()?;
                let mut rest = Vec::new();
                if first.is_some() {
                    while let Some(item) = a.next_element()? {
                        rest.push(item);
                    }
                }
                Ok(Choices { first, rest })
            }
        }
        d.deserialize_seq(Seq(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
pub(super) struct ChunkChoice<'a> {
    pub(super) index: Option<u64>,
    #[serde(borrow)]
    pub(super) delta: Option<Delta<'a>>,
    #[serde(default, deserialize_with = "present", borrow)]
    pub(super) finish_reason: Option<Option<Str<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct Delta<'a> {
    #[serde(borrow)]
    pub(super) tool_calls: Option<Vec<ToolCallChunk<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct ToolCallChunk<'a> {
    pub(super) index: Option<u64>,
    #[serde(borrow)]
    pub(super) id: Option<Str<'a>>,
}

// ---- Responses --------------------------------------------------------------------------

/// The fields of a Responses object every check reads.
#[derive(Deserialize)]
pub(super) struct ResponseHead<'a> {
    #[serde(borrow)]
    pub(super) id: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) status: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) model: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) error: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) incomplete_details: Option<IncompleteDetails<'a>>,
    pub(super) usage: Option<Usage>,
    #[serde(default, deserialize_with = "text", borrow)]
    pub(super) service_tier: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(super) struct IncompleteDetails<'a> {
    #[serde(borrow)]
    pub(super) reason: Option<Str<'a>>,
}

/// A whole non-streaming Responses object. (No `#[serde(flatten)]`: it buffers, and it cannot
/// carry a borrowed `RawValue`.)
#[derive(Deserialize)]
pub(super) struct Response<'a> {
    #[serde(borrow)]
    pub(super) id: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) object: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) status: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) model: Option<Str<'a>>,
    #[serde(default, deserialize_with = "present", borrow)]
    pub(super) error: Option<Option<&'a RawValue>>,
    #[serde(default, deserialize_with = "present", borrow)]
    pub(super) incomplete_details: Option<Option<IncompleteDetails<'a>>>,
    pub(super) usage: Option<Usage>,
    #[serde(default, deserialize_with = "text", borrow)]
    pub(super) service_tier: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) output: Option<Vec<OutputItem<'a>>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) created_at: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) instructions: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) tools: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) parallel_tool_calls: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) metadata: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) tool_choice: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) temperature: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) top_p: Option<Option<IgnoredAny>>,
}

impl Response<'_> {
    /// Whether every key the spec requires is present (null allowed).
    pub(super) fn has_required_keys(&self) -> bool {
        self.id.is_some()
            && self.object.is_some()
            && self.model.is_some()
            && self.output.is_some()
            && self.error.is_some()
            && self.incomplete_details.is_some()
            && [
                &self.created_at,
                &self.instructions,
                &self.tools,
                &self.parallel_tool_calls,
                &self.metadata,
                &self.tool_choice,
                &self.temperature,
                &self.top_p,
            ]
            .iter()
            .all(|k| k.is_some())
    }
}

#[derive(Deserialize)]
pub(super) struct OutputItem<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Str<'a>>,
    /// `function_call` arguments: must be a string.
    #[serde(borrow)]
    pub(super) arguments: Option<Str<'a>>,
}

/// One Responses stream event.
#[derive(Deserialize)]
pub(super) struct StreamEvent<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Str<'a>>,
    pub(super) sequence_number: Option<u64>,
    pub(super) output_index: Option<u64>,
    pub(super) content_index: Option<u64>,
    pub(super) summary_index: Option<u64>,
    #[serde(borrow)]
    pub(super) item: Option<EventItem<'a>>,
    #[serde(borrow)]
    pub(super) response: Option<ResponseHead<'a>>,
    #[serde(borrow)]
    pub(super) name: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(super) struct EventItem<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Str<'a>>,
}

#[cfg(test)]
mod tests {
    use super::super::{Mode, StreamChecker, check_body};
    use crate::evidence::{ApiSurface, ParseCheck};
    use http::StatusCode;

    use super::TokenUsage;

    /// OpenAI's recorded usage shapes: cached tokens in the input details, reasoning tokens in
    /// the output details.
    const CHAT_USAGE: &str = r#"{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":192,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#;
    const RESPONSES_USAGE: &str = r#"{"input_tokens":2006,"input_tokens_details":{"cached_tokens":1920,"cache_write_tokens":64},"output_tokens":300,"output_tokens_details":{"reasoning_tokens":192},"total_tokens":2306}"#;

    fn json(surface: ApiSurface, body: &str) -> super::super::ContractVerdict {
        check_body(
            surface,
            StatusCode::OK,
            Some("application/json"),
            body.as_bytes(),
            Mode::Compat,
        )
    }

    fn stream(surface: ApiSurface, body: &str) -> super::super::ContractVerdict {
        let mut c = StreamChecker::new(surface, Mode::Compat);
        c.feed(body.as_bytes());
        c.finish()
    }

    fn want(cache_write: Option<u64>) -> TokenUsage {
        TokenUsage {
            input_tokens: Some(2006),
            output_tokens: Some(300),
            cache_read_input_tokens: Some(1920),
            cache_write_input_tokens: cache_write,
            reasoning_output_tokens: Some(192),
        }
    }

    #[test]
    fn cached_and_reasoning_tokens_from_both_surfaces_whole_and_streamed() {
        let chat = json(
            ApiSurface::ChatCompletions,
            &format!(
                r#"{{"id":"c","object":"chat.completion","created":1,"model":"m","service_tier":"default","system_fingerprint":"fp_1","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{CHAT_USAGE}}}"#
            ),
        );
        assert_eq!(chat.parse_check, ParseCheck::Pass);
        assert_eq!(chat.facts.usage, Some(want(None)));
        assert_eq!(chat.facts.service_tier.as_deref(), Some("default"));
        assert_eq!(chat.facts.system_fingerprint.as_deref(), Some("fp_1"));

        let chat_stream = stream(
            ApiSurface::ChatCompletions,
            &format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"service_tier\":\"flex\",\"system_fingerprint\":\"fp_2\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi\"}},\"finish_reason\":\"stop\"}}]}}\n\n\
                 data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{CHAT_USAGE}}}\n\n\
                 data: [DONE]\n\n"
            ),
        );
        assert_eq!(chat_stream.parse_check, ParseCheck::Pass);
        assert_eq!(chat_stream.facts.usage, Some(want(None)));
        assert_eq!(chat_stream.facts.service_tier.as_deref(), Some("flex"));
        assert_eq!(
            chat_stream.facts.system_fingerprint.as_deref(),
            Some("fp_2")
        );

        let responses = json(
            ApiSurface::Responses,
            &format!(
                r#"{{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"m","service_tier":"default","output":[],"error":null,"incomplete_details":null,"usage":{RESPONSES_USAGE}}}"#
            ),
        );
        assert_eq!(responses.facts.usage, Some(want(Some(64))));
        assert_eq!(responses.facts.service_tier.as_deref(), Some("default"));

        let responses_stream = stream(
            ApiSurface::Responses,
            &format!(
                "data: {{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{{\"id\":\"resp_1\",\"status\":\"in_progress\",\"service_tier\":\"auto\"}}}}\n\n\
                 data: {{\"type\":\"response.completed\",\"sequence_number\":1,\"response\":{{\"id\":\"resp_1\",\"status\":\"completed\",\"service_tier\":\"flex\",\"usage\":{RESPONSES_USAGE}}}}}\n\n"
            ),
        );
        assert_eq!(responses_stream.parse_check, ParseCheck::Pass);
        assert_eq!(responses_stream.facts.usage, Some(want(Some(64))));
        // The tier that served it, not the `auto` asked for at the start.
        assert_eq!(responses_stream.facts.service_tier.as_deref(), Some("flex"));
    }

    #[test]
    fn odd_details_lose_the_figure_not_the_contract() {
        for details in [
            r#""prompt_tokens_details":null"#,
            r#""prompt_tokens_details":"n/a""#,
            r#""prompt_tokens_details":[1,2]"#,
            r#""prompt_tokens_details":{"cached_tokens":"many"}"#,
            r#""prompt_tokens_details":{"cached_tokens":12.0,"other":{"x":1}}"#,
        ] {
            let v = json(
                ApiSurface::ChatCompletions,
                &format!(
                    r#"{{"id":"c","object":"chat.completion","created":1,"model":"m","service_tier":7,"choices":[{{"index":0,"message":{{"role":"assistant","content":"hi","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":3,"completion_tokens":1,{details}}}}}"#
                ),
            );
            assert_eq!(v.parse_check, ParseCheck::Pass, "{details}");
            let usage = v.facts.usage.unwrap();
            assert_eq!(usage.input_tokens, Some(3));
            assert_eq!(
                usage.cache_read_input_tokens,
                details.contains("12.0").then_some(12),
                "{details}"
            );
            assert_eq!(v.facts.service_tier, None);
        }
        // DeepSeek reports cache hits beside the totals.
        let v = json(
            ApiSurface::ChatCompletions,
            r#"{"id":"c","object":"chat.completion","created":1,"model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":1,"prompt_cache_hit_tokens":24,"prompt_cache_miss_tokens":6}}"#,
        );
        assert_eq!(v.facts.usage.unwrap().cache_read_input_tokens, Some(24));
    }
}
