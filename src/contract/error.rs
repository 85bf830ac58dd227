//! One API error out of every error shape seen in the wild (OpenAI's envelope, OpenRouter's
//! integer codes, Gemini's arrays, string and `detail` errors: [`ErrorShape`] lists them).

use serde_json::{Map, Value};

use super::Report;
use crate::evidence::{ApiError, ErrorCode, ErrorShape, Violation, Warning};

impl ApiError {
    /// Normalises an error body, or `None` when it is not JSON in any known error shape.
    ///
    /// ```
    /// use reqwest_llm_guard::contract::{ApiError, ErrorCode, ErrorShape};
    ///
    /// let openrouter = br#"{"error":{"code":429,"message":"Rate limit exceeded"},"user_id":"u"}"#;
    /// let e = ApiError::from_body(openrouter).unwrap();
    /// assert_eq!((e.message.as_str(), e.code), ("Rate limit exceeded", Some(ErrorCode::Number(429))));
    ///
    /// let gemini = br#"[{"error":{"code":400,"message":"Invalid JSON","status":"INVALID_ARGUMENT"}}]"#;
    /// let e = ApiError::from_body(gemini).unwrap();
    /// assert_eq!((e.shape, e.error_type.as_deref()), (ErrorShape::Array, Some("INVALID_ARGUMENT")));
    /// ```
    pub fn from_body(body: &[u8]) -> Option<Self> {
        Self::from_json(&serde_json::from_slice(body).ok()?)
    }

    /// Normalises a parsed error body. See [`ApiError::from_body`].
    pub fn from_json(value: &Value) -> Option<Self> {
        normalise(value).map(|(e, _)| e)
    }
}

/// What normalisation learned about the envelope's shape, for the contract check.
#[derive(Default)]
struct Shape {
    message_ok: bool,
    type_present: bool,
    code_present: bool,
    code_integer: bool,
    param_present: bool,
}

fn normalise(value: &Value) -> Option<(ApiError, Shape)> {
    match value {
        Value::Object(top) => normalise_object(top),
        Value::Array(items) => {
            let (mut e, shape) = items.first()?.as_object().and_then(normalise_object)?;
            e.shape = ErrorShape::Array;
            Some((e, shape))
        }
        _ => None,
    }
}

fn normalise_object(top: &Map<String, Value>) -> Option<(ApiError, Shape)> {
    let typed = top.get("type").and_then(Value::as_str) == Some("error");
    match top.get("error") {
        Some(Value::Object(inner)) => {
            let shape = if typed {
                ErrorShape::TypedEnvelope
            } else {
                ErrorShape::Envelope
            };
            Some(from_fields(inner, shape))
        }
        Some(Value::String(message)) => Some((
            ApiError {
                message: message.clone(),
                error_type: None,
                code: None,
                param: None,
                status: None,
                shape: ErrorShape::StringError,
            },
            Shape {
                message_ok: !message.is_empty(),
                ..Shape::default()
            },
        )),
        _ if top.get("object").and_then(Value::as_str) == Some("error") => {
            Some(from_fields(top, ErrorShape::ObjectError))
        }
        _ if typed => Some(from_fields(top, ErrorShape::Flat)),
        _ => {
            if let Some(detail) = top.get("detail") {
                let message = match detail {
                    Value::String(s) => s.clone(),
                    // FastAPI's validation list: [{"loc":…,"msg":…,"type":…}]
                    Value::Array(items) => items
                        .iter()
                        .filter_map(|i| i.get("msg").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                };
                let mut e = from_fields(top, ErrorShape::Detail).0;
                let shape = Shape {
                    message_ok: !message.is_empty(),
                    ..Shape::default()
                };
                e.message = message;
                Some((e, shape))
            } else if top.get("message").is_some_and(Value::is_string)
                && !top.contains_key("choices")
                && !top.contains_key("output")
            {
                Some(from_fields(top, ErrorShape::Message))
            } else {
                None
            }
        }
    }
}

fn from_fields(fields: &Map<String, Value>, shape_kind: ErrorShape) -> (ApiError, Shape) {
    let text = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_owned);
    let message = text("message").unwrap_or_default();
    let code_value = fields.get("code");
    let code = match code_value {
        Some(Value::String(s)) => Some(ErrorCode::Text(s.clone())),
        Some(Value::Number(n)) => n.as_i64().map(ErrorCode::Number),
        _ => None,
    };
    let status = fields
        .get("status_code")
        .and_then(Value::as_u64)
        .or_else(|| match &code {
            Some(ErrorCode::Number(n)) => u64::try_from(*n).ok(),
            _ => None,
        })
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..=599).contains(s));
    // In the flat and `object` shapes, `type: "error"` names the event, not the error.
    let error_type = text("type")
        .filter(|t| t != "error")
        .or_else(|| text("status"));
    let shape = Shape {
        message_ok: !message.is_empty(),
        type_present: fields.get("type").is_some_and(Value::is_string),
        code_present: fields.contains_key("code"),
        code_integer: code_value.is_some_and(Value::is_number),
        param_present: fields.contains_key("param"),
    };
    let error = ApiError {
        message,
        error_type,
        code,
        param: text("param"),
        status,
        shape: shape_kind,
    };
    (error, shape)
}

/// Checks a non-2xx body as an error envelope (the evidence drill's `error_shape_valid_on_4xx`):
/// `error.message` a non-empty string, `error.type` a string, the `error.code` key present
/// (string or null), `error.param` present (null allowed). Other recognised shapes pass in
/// compat mode with a [`Warning::NonOpenaiErrorShape`].
pub(super) fn check_envelope(value: &Value, status: Option<u16>, report: &mut Report) {
    let Some((mut error, shape)) = normalise(value) else {
        report.fail(Violation::ErrorShapeInvalid);
        return;
    };
    if error.status.is_none() {
        error.status = status;
    }
    check_shape(&error, &shape, report);
    report.set_api_error(error);
}

fn check_shape(error: &ApiError, shape: &Shape, report: &mut Report) {
    if !shape.message_ok {
        report.fail(Violation::ErrorShapeInvalid);
    }
    if error.shape != ErrorShape::Envelope {
        report.warn(Warning::NonOpenaiErrorShape);
        return;
    }
    if !shape.type_present {
        report.warn(Warning::MissingErrorType);
    }
    if !shape.code_present {
        report.warn(Warning::MissingErrorCode);
    } else if shape.code_integer {
        report.warn(Warning::IntegerErrorCode);
    }
    if !shape.param_present {
        report.warn(Warning::MissingErrorParam);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Mode;
    use crate::evidence::ParseCheck;
    use serde_json::json;

    fn check(mode: Mode, v: &Value) -> crate::contract::ContractVerdict {
        let mut r = Report::new(mode);
        check_envelope(v, Some(400), &mut r);
        r.into_verdict()
    }

    #[test]
    fn every_known_shape_normalises() {
        let rows = [
            (
                json!({"error":{"message":"m","type":"t","param":null,"code":"c"}}),
                ErrorShape::Envelope,
                Some(ErrorCode::Text("c".into())),
            ),
            (
                json!({"error":{"message":"m","code":429,"metadata":{}},"user_id":"u"}),
                ErrorShape::Envelope,
                Some(ErrorCode::Number(429)),
            ),
            (
                json!([{"error":{"code":400,"message":"m","status":"INVALID_ARGUMENT"}}]),
                ErrorShape::Array,
                Some(ErrorCode::Number(400)),
            ),
            (json!({"error":"m"}), ErrorShape::StringError, None),
            (
                json!({"object":"error","message":"m","type":"BadRequestError","param":null,"code":400}),
                ErrorShape::ObjectError,
                Some(ErrorCode::Number(400)),
            ),
            (
                json!({"type":"error","error":{"type":"overloaded_error","message":"m"},"request_id":"r"}),
                ErrorShape::TypedEnvelope,
                None,
            ),
            (
                json!({"type":"error","sequence_number":3,"code":"server_error","message":"m","param":null}),
                ErrorShape::Flat,
                Some(ErrorCode::Text("server_error".into())),
            ),
            (json!({"detail":"m"}), ErrorShape::Detail, None),
            (
                json!({"detail":[{"loc":["body"],"msg":"m","type":"missing"}]}),
                ErrorShape::Detail,
                None,
            ),
            (json!({"message":"m"}), ErrorShape::Message, None),
        ];
        for (body, shape, code) in rows {
            let e = ApiError::from_json(&body).unwrap_or_else(|| panic!("{body}"));
            assert_eq!(e.message, "m", "{body}");
            assert_eq!(e.shape, shape, "{body}");
            assert_eq!(e.code, code, "{body}");
        }
    }

    #[test]
    fn non_errors_do_not_normalise() {
        for body in [
            json!({}),
            json!([]),
            json!("x"),
            json!(3),
            json!({"choices":[]}),
        ] {
            assert_eq!(ApiError::from_json(&body), None, "{body}");
        }
        assert_eq!(ApiError::from_body(b"<html>"), None);
    }

    #[test]
    fn openai_envelope_passes_both_modes() {
        let v = json!({"error":{"message":"m","type":"t","param":null,"code":null}});
        assert_eq!(check(Mode::Compat, &v).parse_check, ParseCheck::Pass);
        let strict = check(Mode::Strict, &v);
        assert_eq!(strict.parse_check, ParseCheck::Pass);
        assert!(strict.warnings.is_empty());
    }

    #[test]
    fn gateway_shapes_warn_in_compat_and_fail_in_strict() {
        let v = json!({"error":{"message":"m","code":429}});
        let compat = check(Mode::Compat, &v);
        assert_eq!(compat.parse_check, ParseCheck::Pass);
        assert!(compat.warnings.contains(Warning::MissingErrorType));
        assert!(compat.warnings.contains(Warning::IntegerErrorCode));
        assert!(compat.warnings.contains(Warning::MissingErrorParam));
        let strict = check(Mode::Strict, &v);
        assert_eq!(strict.violation, Some(Violation::ErrorShapeInvalid));
    }

    #[test]
    fn other_recognised_shapes_pass_in_compat_with_a_warning() {
        for v in [
            json!({"error":"Model not found"}),
            json!({"detail":"422: The model does not exist."}),
            json!({"message":"Not Found"}),
            json!([{"error":{"code":400,"message":"m","status":"INVALID_ARGUMENT"}}]),
        ] {
            let compat = check(Mode::Compat, &v);
            assert_eq!(compat.parse_check, ParseCheck::Pass, "{v}");
            assert!(
                compat.warnings.contains(Warning::NonOpenaiErrorShape),
                "{v}"
            );
            assert_eq!(
                check(Mode::Strict, &v).violation,
                Some(Violation::ErrorShapeInvalid)
            );
        }
        let flat = json!({"type":"error","code":"server_error","message":"m"});
        assert_eq!(ApiError::from_json(&flat).unwrap().error_type, None);
    }

    #[test]
    fn empty_message_and_unknown_shapes_fail() {
        let v = json!({"error":{"message":"","type":"t","param":null,"code":null}});
        assert_eq!(
            check(Mode::Compat, &v).violation,
            Some(Violation::ErrorShapeInvalid)
        );
        let v = json!({"status":"bad"});
        assert_eq!(
            check(Mode::Compat, &v).violation,
            Some(Violation::ErrorShapeInvalid)
        );
    }

    #[test]
    fn status_comes_from_the_body_or_the_response() {
        let groq =
            json!({"error":{"message":"m","type":"t","code":"tool_use_failed","status_code":400}});
        assert_eq!(ApiError::from_json(&groq).unwrap().status, Some(400));
        let v = check(
            Mode::Compat,
            &json!({"error":{"message":"m","type":"t","code":"c"}}),
        );
        assert_eq!(v.api_error.unwrap().status, Some(400));
    }
}
