//! Request lint and request/response cross-checks.
//!
//! A gateway routes one OpenAI-shaped request to many provider families, and some parameters
//! are silently ignored or out of range depending on which family answers. That is how a
//! failover quietly changes behaviour. [`lint_request`] flags them on the way out;
//! [`cross_check`] compares what was asked with what came back. Findings are evidence (a span
//! event, a `request_check` / `response_check` attribute, a metric by rule): a request is never
//! blocked or changed.
//!
//! The rules are data: [`FAMILY_RULES`] holds one row per [`ModelFamily`], from the
//! cross-provider table of what each provider family accepts:
//!
//! | family | temperature | `n` | `logprobs` | `reasoning_effort` | `max_completion_tokens` | prefers Responses |
//! |---|---|---|---|---|---|---|
//! | `gpt` (gpt-4o, gpt-4, gpt-3.5) | 0-2 | ≤ 128 | yes | ignored | - | no |
//! | `gpt_4_1` | 0-2 | ≤ 128 | yes | ignored | expected | no |
//! | `o_series` (o1, o3, o4-mini) | 0-2 | ≤ 128 | yes | honoured | expected | yes |
//! | `gpt_5` | 0-2 | ≤ 128 | yes | ignored | expected | yes |
//! | `gpt_5_1_plus` (gpt-5.1, gpt-5.2, …) | 0-2 | ≤ 128 | yes | honoured | expected | yes |
//! | `claude` | 0-1 | 1 | ignored | ignored | - | no |
//! | `gemini` | 0-2 | ≤ 8 | ignored | ignored | - | no |
//! | `open_weight` (llama, mistral, qwen, deepseek, …), `unknown` | not checked | | | | | |
//!
//! ```
//! use reqwest_llm_guard::evidence::ApiSurface;
//! use reqwest_llm_guard::lint::{lint_request, LintRule, ModelFamily};
//!
//! let body = br#"{"model":"claude-sonnet-4-5","temperature":1.5,"n":3,"messages":[]}"#;
//! let findings = lint_request(body, ApiSurface::ChatCompletions, None);
//! let rules: Vec<LintRule> = findings.iter().map(|f| f.rule).collect();
//! assert_eq!(rules, [LintRule::TemperatureOutOfRange, LintRule::NUnsupported]);
//! assert!(findings.iter().all(|f| f.family == ModelFamily::Claude));
//! ```

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::evidence::{ApiSurface, str_enum};

str_enum! {
    /// The family of models behind a request, from the model name or set by the user.
    #[non_exhaustive]
    pub enum ModelFamily {
        /// OpenAI GPT models before 4.1 (`gpt-4o`, `gpt-4`, `gpt-3.5`, `chatgpt-4o`).
        Gpt => "gpt",
        /// OpenAI GPT-4.1 (`gpt-4.1`, `-mini`, `-nano`).
        Gpt41 => "gpt_4_1",
        /// OpenAI o-series reasoning models (`o1`, `o3`, `o4-mini`, …).
        OSeries => "o_series",
        /// OpenAI GPT-5 (5.0: `gpt-5`, `gpt-5-mini`, `gpt-5-nano`, `gpt-5-chat`).
        Gpt5 => "gpt_5",
        /// OpenAI GPT-5.1 and later (`gpt-5.1`, `gpt-5.2`, …).
        Gpt51Plus => "gpt_5_1_plus",
        /// Anthropic Claude through an OpenAI-compatible layer.
        Claude => "claude",
        /// Google Gemini through an OpenAI-compatible layer.
        Gemini => "gemini",
        /// Open-weight models (Llama, Mistral, Mixtral, Qwen, DeepSeek, Gemma, Phi, gpt-oss,
        /// Kimi, GLM, …): support varies by server, so nothing is checked.
        OpenWeight => "open_weight",
        /// A model name no rule recognises: nothing is checked.
        Unknown => "unknown",
    }
}

impl ModelFamily {
    /// The family of a model name. Gateways' prefixes (`openai/gpt-4o`, `anthropic/claude-…`,
    /// `models/gemini-…`) and case are ignored.
    ///
    /// ```
    /// use reqwest_llm_guard::lint::ModelFamily;
    ///
    /// assert_eq!(ModelFamily::of_model("openai/gpt-5.2-pro"), ModelFamily::Gpt51Plus);
    /// assert_eq!(ModelFamily::of_model("gpt-5-mini"), ModelFamily::Gpt5);
    /// assert_eq!(ModelFamily::of_model("o4-mini"), ModelFamily::OSeries);
    /// assert_eq!(ModelFamily::of_model("meta-llama/Llama-3.3-70B-Instruct"), ModelFamily::OpenWeight);
    /// ```
    pub fn of_model(model: &str) -> Self {
        let lower = model.to_ascii_lowercase();
        let name = lower.rsplit('/').next().unwrap_or(&lower);
        if let Some(rest) = name.strip_prefix("gpt-5") {
            // `gpt-5`, `gpt-5-mini`, `gpt-5-chat-latest` are 5.0; `gpt-5.1`, `gpt-5.2-pro` later.
            return match rest.strip_prefix('.') {
                Some(minor) if minor.starts_with(|c: char| c.is_ascii_digit() && c != '0') => {
                    Self::Gpt51Plus
                }
                _ => Self::Gpt5,
            };
        }
        if name.starts_with("gpt-oss") {
            return Self::OpenWeight;
        }
        if name.starts_with("gpt-4.1") {
            return Self::Gpt41;
        }
        if name.starts_with("gpt-") || name.starts_with("chatgpt-") {
            return Self::Gpt;
        }
        let o_series = name.strip_prefix('o').is_some_and(|rest| {
            rest.starts_with(|c: char| c.is_ascii_digit())
                && rest.chars().take_while(char::is_ascii_digit).count() == 1
        });
        if o_series {
            return Self::OSeries;
        }
        if name.starts_with("claude") {
            return Self::Claude;
        }
        if name.starts_with("gemini") {
            return Self::Gemini;
        }

        if OPEN_WEIGHT_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Self::OpenWeight;
        }
        Self::Unknown
    }
}

/// Name prefixes of open-weight model families.
const OPEN_WEIGHT_PREFIXES: &[&str] = &[
    "llama",
    "meta-llama",
    "mistral",
    "mixtral",
    "codestral",
    "ministral",
    "qwen",
    "qwq",
    "deepseek",
    "gemma",
    "phi-",
    "kimi",
    "moonshot",
    "glm",
    "yi-",
    "command-r",
    "olmo",
    "nemotron",
    "granite",
    "falcon",
];

/// One family's row of the lint table.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FamilyRules {
    /// The family.
    pub family: ModelFamily,
    /// The highest `temperature` honoured, or `None` when not checked.
    pub temperature_max: Option<f64>,
    /// The largest `n`, or `None` when not checked.
    pub n_max: Option<u64>,
    /// Whether `logprobs` / `top_logprobs` are honoured (`None`: not checked).
    pub logprobs: Option<bool>,
    /// Whether `reasoning_effort` (`reasoning.effort` on Responses) is honoured.
    pub reasoning_effort: Option<bool>,
    /// Whether `max_completion_tokens` is expected instead of `max_tokens` (Chat).
    pub max_completion_tokens: bool,
    /// Whether the family prefers the Responses API.
    pub prefers_responses: bool,
}

// One argument per column of the table in the module docs, so the rows read as that table.
#[allow(clippy::fn_params_excessive_bools)]
const fn row(
    family: ModelFamily,
    temperature_max: f64,
    n_max: u64,
    logprobs: bool,
    reasoning_effort: bool,
    max_completion_tokens: bool,
    prefers_responses: bool,
) -> FamilyRules {
    FamilyRules {
        family,
        temperature_max: Some(temperature_max),
        n_max: Some(n_max),
        logprobs: Some(logprobs),
        reasoning_effort: Some(reasoning_effort),
        max_completion_tokens,
        prefers_responses,
    }
}

const UNCHECKED: fn(ModelFamily) -> FamilyRules = |family| FamilyRules {
    family,
    temperature_max: None,
    n_max: None,
    logprobs: None,
    reasoning_effort: None,
    max_completion_tokens: false,
    prefers_responses: false,
};

/// The lint table, one row per family (see the [module docs](self)).
pub const FAMILY_RULES: &[FamilyRules] = &[
    row(ModelFamily::Gpt, 2.0, 128, true, false, false, false),
    row(ModelFamily::Gpt41, 2.0, 128, true, false, true, false),
    row(ModelFamily::OSeries, 2.0, 128, true, true, true, true),
    row(ModelFamily::Gpt5, 2.0, 128, true, false, true, true),
    row(ModelFamily::Gpt51Plus, 2.0, 128, true, true, true, true),
    row(ModelFamily::Claude, 1.0, 1, false, false, false, false),
    row(ModelFamily::Gemini, 2.0, 8, false, false, false, false),
];

/// The row for a family (families without one are not checked).
pub fn rules_for(family: ModelFamily) -> FamilyRules {
    FAMILY_RULES
        .iter()
        .copied()
        .find(|r| r.family == family)
        .unwrap_or_else(|| UNCHECKED(family))
}

str_enum! {
    /// What a finding is about (the metric's `lint.rule` label).
    #[non_exhaustive]
    pub enum LintRule {
        /// `temperature` above the family's range (Claude takes 0-1).
        TemperatureOutOfRange => "temperature_out_of_range",
        /// `n` above what the family returns (Claude 1, Gemini 8, OpenAI 128).
        NUnsupported => "n_unsupported",
        /// `logprobs` / `top_logprobs` on a family that ignores them.
        LogprobsUnsupported => "logprobs_unsupported",
        /// `reasoning_effort` on a family that ignores it (it applies to o-series and GPT-5.1+).
        ReasoningEffortIgnored => "reasoning_effort_ignored",
        /// `max_tokens` where `max_completion_tokens` is expected (GPT-4.1, GPT-5, o-series).
        MaxTokensDeprecated => "max_tokens_deprecated",
        /// A Chat Completions request for a family that prefers Responses (o-series, GPT-5).
        ResponsesPreferred => "responses_preferred",
        /// `previous_response_id` on Chat Completions: no equivalent there, the context is lost
        /// (a failover from Responses to Chat resets the conversation).
        PreviousResponseIdOnChat => "previous_response_id_on_chat",
        /// More or fewer choices came back than `n` asked for.
        ChoicesMismatch => "choices_mismatch",
        /// `stream: true` asked, not an event stream back (or the other way round).
        StreamMismatch => "stream_mismatch",
        /// Another model answered than the one asked for (recorded, never a failure).
        ModelSubstituted => "model_substituted",
        /// Tool calls were required but none came back, or came back though no tool was offered.
        ToolCallsMismatch => "tool_calls_mismatch",
    }
}

/// One finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The rule.
    pub rule: LintRule,
    /// The family it applied to.
    pub family: ModelFamily,
}

/// What the request asked for, read from its JSON body.
#[derive(Deserialize, Default, Debug)]
pub(crate) struct Asked<'a> {
    #[serde(borrow)]
    pub(crate) model: Option<Cow<'a, str>>,
    pub(crate) stream: Option<bool>,
    pub(crate) n: Option<u64>,
    pub(crate) temperature: Option<f64>,
    pub(crate) logprobs: Option<IgnoredAny>,
    pub(crate) top_logprobs: Option<IgnoredAny>,
    pub(crate) reasoning_effort: Option<IgnoredAny>,
    pub(crate) reasoning: Option<Reasoning>,
    pub(crate) max_tokens: Option<IgnoredAny>,
    pub(crate) previous_response_id: Option<IgnoredAny>,
    pub(crate) tools: Option<Vec<IgnoredAny>>,
    pub(crate) tool_choice: Option<serde_json::Value>,
}

#[derive(Deserialize, Default, Debug)]
pub(crate) struct Reasoning {
    pub(crate) effort: Option<IgnoredAny>,
}

/// What a cross-check needs of the request, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AskedSummary {
    pub(crate) model: Option<String>,
    pub(crate) stream: bool,
    pub(crate) n: Option<u64>,
    pub(crate) tools_offered: bool,
    pub(crate) tools_required: bool,
}

impl Asked<'_> {
    /// Whether the request obliges the model to call a tool.
    fn tools_required(&self) -> bool {
        match &self.tool_choice {
            Some(serde_json::Value::String(s)) => s == "required",
            Some(serde_json::Value::Object(_)) => true,
            _ => false,
        }
    }

    pub(crate) fn summary(&self) -> AskedSummary {
        AskedSummary {
            model: self.model.as_deref().map(str::to_owned),
            stream: self.stream.unwrap_or(false),
            n: self.n,
            tools_offered: self.tools.as_ref().is_some_and(|t| !t.is_empty()),
            tools_required: self.tools_required(),
        }
    }
}

/// Lints a request body sent to `surface` (the lint table), for the family given, else the
/// model's. A body that is not JSON gets no finding.
pub fn lint_request(body: &[u8], surface: ApiSurface, family: Option<ModelFamily>) -> Vec<Finding> {
    let Ok(asked) = serde_json::from_slice::<Asked<'_>>(body) else {
        return Vec::new();
    };
    lint(&asked, surface, family)
}

/// The family a request is for: the one given, else its model's.
pub(crate) fn family_of(asked: &Asked<'_>, family: Option<ModelFamily>) -> ModelFamily {
    family.unwrap_or_else(|| {
        asked
            .model
            .as_deref()
            .map_or(ModelFamily::Unknown, ModelFamily::of_model)
    })
}

/// Lints what a request asked for on a surface.
pub(crate) fn lint(
    asked: &Asked<'_>,
    surface: ApiSurface,
    family: Option<ModelFamily>,
) -> Vec<Finding> {
    let family = family_of(asked, family);
    let rules = rules_for(family);
    let mut out = Vec::new();
    let mut flag = |rule| out.push(Finding { rule, family });
    if let (Some(t), Some(max)) = (asked.temperature, rules.temperature_max)
        && !(0.0..=max).contains(&t)
    {
        flag(LintRule::TemperatureOutOfRange);
    }
    if let (Some(n), Some(max)) = (asked.n, rules.n_max)
        && n > max
    {
        flag(LintRule::NUnsupported);
    }
    if rules.logprobs == Some(false) && (asked.logprobs.is_some() || asked.top_logprobs.is_some()) {
        flag(LintRule::LogprobsUnsupported);
    }
    let effort = asked.reasoning_effort.is_some()
        || asked.reasoning.as_ref().is_some_and(|r| r.effort.is_some());
    if rules.reasoning_effort == Some(false) && effort {
        flag(LintRule::ReasoningEffortIgnored);
    }
    if surface == ApiSurface::ChatCompletions {
        if rules.max_completion_tokens && asked.max_tokens.is_some() {
            flag(LintRule::MaxTokensDeprecated);
        }
        if rules.prefers_responses {
            flag(LintRule::ResponsesPreferred);
        }
        if asked.previous_response_id.is_some() {
            flag(LintRule::PreviousResponseIdOnChat);
        }
    }
    out
}

/// What came back, for [`cross_check`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Returned<'a> {
    /// Choices returned (Chat), if counted.
    pub choices: Option<u64>,
    /// Whether the body was an event stream.
    pub streamed: bool,
    /// The model that answered.
    pub model: Option<&'a str>,
    /// Whether tool calls came back.
    pub tool_calls: bool,
}

impl<'a> Returned<'a> {
    /// What came back: choices counted (Chat), whether it streamed, the model that answered,
    /// whether it called tools.
    pub fn new(
        choices: Option<u64>,
        streamed: bool,
        model: Option<&'a str>,
        tool_calls: bool,
    ) -> Self {
        Self {
            choices,
            streamed,
            model,
            tool_calls,
        }
    }
}

/// Compares a request body with what came back (meant for 2xx answers that kept their
/// contract), for the family given, else the model's.
///
/// ```
/// use reqwest_llm_guard::evidence::ApiSurface;
/// use reqwest_llm_guard::lint::{cross_check, LintRule, Returned};
///
/// let asked = br#"{"model":"claude-sonnet-4-5","n":3,"messages":[]}"#;
/// let got = Returned::new(Some(1), false, Some("claude-sonnet-4-5-20250929"), false);
/// let findings = cross_check(asked, ApiSurface::ChatCompletions, None, &got);
/// assert_eq!(findings[0].rule, LintRule::ChoicesMismatch);
/// ```
pub fn cross_check(
    request_body: &[u8],
    surface: ApiSurface,
    family: Option<ModelFamily>,
    got: &Returned<'_>,
) -> Vec<Finding> {
    let asked = serde_json::from_slice::<Asked<'_>>(request_body).unwrap_or_default();
    let family = family_of(&asked, family);
    cross_check_summary(&asked.summary(), surface, family, got)
}

/// [`cross_check`] on what the telemetry layer kept of the request.
pub(crate) fn cross_check_summary(
    asked: &AskedSummary,
    surface: ApiSurface,
    family: ModelFamily,
    got: &Returned<'_>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut flag = |rule| out.push(Finding { rule, family });
    if surface == ApiSurface::ChatCompletions
        && let Some(choices) = got.choices
        && choices != asked.n.unwrap_or(1)
    {
        flag(LintRule::ChoicesMismatch);
    }
    if asked.stream != got.streamed {
        flag(LintRule::StreamMismatch);
    }
    if let (Some(asked_model), Some(answered)) = (asked.model.as_deref(), got.model) {
        // `gpt-4o-mini` answered by `gpt-4o-mini-2024-07-18` is the same model, dated.
        let bare = asked_model.rsplit('/').next().unwrap_or(asked_model);
        let answered_bare = answered.rsplit('/').next().unwrap_or(answered);
        if !answered_bare
            .to_ascii_lowercase()
            .starts_with(&bare.to_ascii_lowercase())
        {
            flag(LintRule::ModelSubstituted);
        }
    }
    if (asked.tools_required && !got.tool_calls) || (!asked.tools_offered && got.tool_calls) {
        flag(LintRule::ToolCallsMismatch);
    }
    out
}

#[cfg(test)]
mod tests;
