use super::*;
use LintRule as R;
use ModelFamily as F;

const CHAT: ApiSurface = ApiSurface::ChatCompletions;
const RESP: ApiSurface = ApiSurface::Responses;

fn rules(body: &str, surface: ApiSurface) -> Vec<LintRule> {
    lint_request(body.as_bytes(), surface, None)
        .into_iter()
        .map(|f| f.rule)
        .collect()
}

#[test]
fn families_from_model_names() {
    let rows = [
        ("gpt-4o", F::Gpt),
        ("gpt-4o-mini-2024-07-18", F::Gpt),
        ("gpt-3.5-turbo", F::Gpt),
        ("chatgpt-4o-latest", F::Gpt),
        ("gpt-4.1", F::Gpt41),
        ("gpt-4.1-nano", F::Gpt41),
        ("o1", F::OSeries),
        ("o3-mini", F::OSeries),
        ("o4-mini-2025-04-16", F::OSeries),
        ("gpt-5", F::Gpt5),
        ("gpt-5-mini", F::Gpt5),
        ("gpt-5-chat-latest", F::Gpt5),
        ("gpt-5.0", F::Gpt5),
        ("gpt-5.1", F::Gpt51Plus),
        ("openai/gpt-5.2-pro", F::Gpt51Plus),
        ("claude-sonnet-4-5", F::Claude),
        ("anthropic/claude-3-5-haiku", F::Claude),
        ("gemini-2.5-flash", F::Gemini),
        ("models/gemini-2.0-pro", F::Gemini),
        ("openai/gpt-oss-120b", F::OpenWeight),
        ("meta-llama/Llama-3.3-70B-Instruct", F::OpenWeight),
        ("mistral-large-latest", F::OpenWeight),
        ("Qwen/Qwen3-235B", F::OpenWeight),
        ("deepseek-chat", F::OpenWeight),
        ("omni-moderation-latest", F::Unknown),
        ("o", F::Unknown),
        ("my-finetune", F::Unknown),
        ("", F::Unknown),
    ];
    for (model, family) in rows {
        assert_eq!(ModelFamily::of_model(model), family, "{model}");
    }
}

/// One row per rule and family, with the negative cases: no finding where the parameter is
/// honoured.
#[test]
fn the_lint_table_row_by_row() {
    let rows: &[(&str, ApiSurface, &[LintRule])] = &[
        // temperature: 0-1 for Claude, 0-2 for OpenAI and Gemini.
        (
            r#"{"model":"claude-sonnet-4-5","temperature":1.5}"#,
            CHAT,
            &[R::TemperatureOutOfRange],
        ),
        (
            r#"{"model":"claude-sonnet-4-5","temperature":1.0}"#,
            CHAT,
            &[],
        ),
        (r#"{"model":"gpt-4o","temperature":1.5}"#, CHAT, &[]),
        (
            r#"{"model":"gpt-4o","temperature":2.5}"#,
            CHAT,
            &[R::TemperatureOutOfRange],
        ),
        (
            r#"{"model":"gemini-2.5-flash","temperature":1.9}"#,
            CHAT,
            &[],
        ),
        (
            r#"{"model":"gemini-2.5-flash","temperature":-0.1}"#,
            CHAT,
            &[R::TemperatureOutOfRange],
        ),
        // n: up to 128 (OpenAI), 1 (Claude), up to 8 (Gemini).
        (r#"{"model":"gpt-4o","n":128}"#, CHAT, &[]),
        (r#"{"model":"gpt-4o","n":129}"#, CHAT, &[R::NUnsupported]),
        (r#"{"model":"claude-sonnet-4-5","n":1}"#, CHAT, &[]),
        (
            r#"{"model":"claude-sonnet-4-5","n":2}"#,
            CHAT,
            &[R::NUnsupported],
        ),
        (r#"{"model":"gemini-2.5-flash","n":8}"#, CHAT, &[]),
        (
            r#"{"model":"gemini-2.5-flash","n":9}"#,
            CHAT,
            &[R::NUnsupported],
        ),
        // logprobs: OpenAI only.
        (
            r#"{"model":"gpt-4o","logprobs":true,"top_logprobs":3}"#,
            CHAT,
            &[],
        ),
        (
            r#"{"model":"claude-sonnet-4-5","logprobs":true}"#,
            CHAT,
            &[R::LogprobsUnsupported],
        ),
        (
            r#"{"model":"gemini-2.5-flash","top_logprobs":2}"#,
            CHAT,
            &[R::LogprobsUnsupported],
        ),
        // reasoning_effort: o-series and GPT-5.1+ only.
        (
            r#"{"model":"o3-mini","reasoning_effort":"high"}"#,
            RESP,
            &[],
        ),
        (
            r#"{"model":"gpt-5.1","reasoning":{"effort":"low"}}"#,
            RESP,
            &[],
        ),
        (
            r#"{"model":"gpt-5","reasoning":{"effort":"low"}}"#,
            RESP,
            &[R::ReasoningEffortIgnored],
        ),
        (
            r#"{"model":"gpt-4o","reasoning_effort":"high"}"#,
            CHAT,
            &[R::ReasoningEffortIgnored],
        ),
        (
            r#"{"model":"claude-sonnet-4-5","reasoning_effort":"high"}"#,
            CHAT,
            &[R::ReasoningEffortIgnored],
        ),
        // max_tokens where max_completion_tokens is expected: GPT-4.1, GPT-5, o-series.
        (
            r#"{"model":"gpt-4.1","max_tokens":100}"#,
            CHAT,
            &[R::MaxTokensDeprecated],
        ),
        (
            r#"{"model":"gpt-4.1","max_completion_tokens":100}"#,
            CHAT,
            &[],
        ),
        (r#"{"model":"gpt-4o","max_tokens":100}"#, CHAT, &[]),
        (
            r#"{"model":"claude-sonnet-4-5","max_tokens":100}"#,
            CHAT,
            &[],
        ),
        (r#"{"model":"o1","max_tokens":100}"#, RESP, &[]),
        // Chat for a family that prefers Responses; previous_response_id on Chat.
        (
            r#"{"model":"o4-mini","max_completion_tokens":10}"#,
            CHAT,
            &[R::ResponsesPreferred],
        ),
        (
            r#"{"model":"gpt-5.2","max_tokens":10}"#,
            CHAT,
            &[R::MaxTokensDeprecated, R::ResponsesPreferred],
        ),
        (r#"{"model":"gpt-5.2"}"#, RESP, &[]),
        (
            r#"{"model":"gpt-4o","previous_response_id":"resp_1"}"#,
            CHAT,
            &[R::PreviousResponseIdOnChat],
        ),
        (
            r#"{"model":"gpt-4o","previous_response_id":"resp_1"}"#,
            RESP,
            &[],
        ),
        // Families without a row, and bodies without a model, are not checked.
        (
            r#"{"model":"llama-3.3-70b","temperature":1.9,"n":5,"logprobs":true}"#,
            CHAT,
            &[],
        ),
        (r#"{"model":"my-finetune","temperature":3}"#, CHAT, &[]),
        (r#"{"temperature":3}"#, CHAT, &[]),
        ("not json", CHAT, &[]),
    ];
    for (body, surface, want) in rows {
        assert_eq!(rules(body, *surface), *want, "{body} on {surface}");
    }
}

#[test]
fn a_family_set_by_the_user_wins_over_the_model_name() {
    let body = br#"{"model":"house-model-v3","temperature":1.5}"#;
    assert!(lint_request(body, CHAT, None).is_empty());
    let f = lint_request(body, CHAT, Some(F::Claude));
    assert_eq!(
        f,
        [Finding {
            rule: R::TemperatureOutOfRange,
            family: F::Claude
        }]
    );
}

#[test]
fn cross_checks() {
    let asked = |body: &'static str| {
        serde_json::from_str::<Asked<'static>>(body)
            .unwrap()
            .summary()
    };
    let got = |choices, streamed, model, tool_calls| Returned {
        choices,
        streamed,
        model,
        tool_calls,
    };
    let check = |a: &AskedSummary, r: Returned<'_>| -> Vec<LintRule> {
        cross_check_summary(a, CHAT, F::Gpt, &r)
            .into_iter()
            .map(|f| f.rule)
            .collect()
    };
    let n3 = asked(r#"{"model":"claude-sonnet-4-5","n":3}"#);
    assert_eq!(
        check(
            &n3,
            got(Some(1), false, Some("claude-sonnet-4-5-20250929"), false)
        ),
        [R::ChoicesMismatch]
    );
    assert!(check(&n3, got(Some(3), false, Some("claude-sonnet-4-5"), false)).is_empty());
    let plain = asked(r#"{"model":"gpt-4o-mini"}"#);
    assert!(
        check(
            &plain,
            got(Some(1), false, Some("gpt-4o-mini-2024-07-18"), false)
        )
        .is_empty()
    );
    assert_eq!(
        check(&plain, got(Some(1), false, Some("gpt-3.5-turbo"), false)),
        [R::ModelSubstituted]
    );
    assert_eq!(
        check(&plain, got(Some(1), true, None, false)),
        [R::StreamMismatch]
    );
    let streamed = asked(r#"{"model":"gpt-4o","stream":true}"#);
    assert_eq!(
        check(&streamed, got(None, false, None, false)),
        [R::StreamMismatch]
    );
    assert!(check(&streamed, got(None, true, None, false)).is_empty());
    let required =
        asked(r#"{"model":"gpt-4o","tools":[{"type":"function"}],"tool_choice":"required"}"#);
    assert_eq!(
        check(&required, got(Some(1), false, None, false)),
        [R::ToolCallsMismatch]
    );
    assert!(check(&required, got(Some(1), false, None, true)).is_empty());
    let offered = asked(r#"{"model":"gpt-4o","tools":[{"type":"function"}]}"#);
    assert!(check(&offered, got(Some(1), false, None, false)).is_empty());
    assert_eq!(
        check(&plain, got(Some(1), false, None, true)),
        [R::ToolCallsMismatch]
    );
}
