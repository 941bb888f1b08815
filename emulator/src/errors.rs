//! Google API error bodies: `{"error":{"code","message","errors":[...],"status"}}` as the
//! Cloud SQL Admin API (an older "Apiary" API) sends them, and
//! `{"error":{"code","message","status","details":[...]}}` as newer APIs (AlloyDB) do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// Which of Google's two error body shapes to render, with what only that shape has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorFormat {
    /// With the `errors` list (Cloud SQL Admin API).
    Legacy {
        /// Short message in `errors[0].message` when it differs from `message`.
        detail: Option<String>,
        /// `errors[0].location` / `locationType`, for auth errors.
        location: Option<(&'static str, &'static str)>,
    },
    /// `code`, `message`, `status` and, if any, `details` (AlloyDB Admin API).
    Modern {
        /// `error.details`, e.g. a `google.rpc.ErrorInfo`.
        details: Vec<Value>,
    },
}

/// A Google JSON API error, rendered the way googleapis.com renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleError {
    /// HTTP status code.
    pub code: u16,
    /// Human-readable message (`error.message`, and `errors[0].message` by default).
    pub message: String,
    /// `errors[0].reason`, e.g. `notAuthorized` (legacy shape).
    pub reason: &'static str,
    /// `error.status`, e.g. `PERMISSION_DENIED`.
    pub status: &'static str,
    /// The body shape.
    pub format: ErrorFormat,
}

impl GoogleError {
    /// A plain error: `errors[0].message` repeats `message`.
    pub fn new(
        code: u16,
        message: impl Into<String>,
        reason: &'static str,
        status: &'static str,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            reason,
            status,
            format: ErrorFormat::Legacy {
                detail: None,
                location: None,
            },
        }
    }

    /// The same error in the modern shape (without the legacy extras).
    pub fn modern(self) -> Self {
        let details = match self.format {
            ErrorFormat::Modern { details } => details,
            ErrorFormat::Legacy { .. } => Vec::new(),
        };
        Self {
            format: ErrorFormat::Modern { details },
            ..self
        }
    }

    /// Adds an entry to `error.details` (switching to the modern shape).
    pub fn with_detail(self, detail: Value) -> Self {
        let mut e = self.modern();
        if let ErrorFormat::Modern { details } = &mut e.format {
            details.push(detail);
        }
        e
    }

    /// 401: the bearer token is missing, unknown or expired.
    pub fn unauthenticated() -> Self {
        Self {
            code: 401,
            message:
                "Request had invalid authentication credentials. Expected OAuth 2 access token, \
login cookie or other valid authentication credential. See \
https://developers.google.com/identity/sign-in/web/devconsole-project."
                    .into(),
            reason: "authError",
            status: "UNAUTHENTICATED",
            format: ErrorFormat::Legacy {
                detail: Some("Invalid Credentials".into()),
                location: Some(("Authorization", "header")),
            },
        }
    }

    /// 401 as the newer APIs answer it: the bearer token is missing (`missing`) or unknown
    /// or expired, with the `google.rpc.ErrorInfo` Google's front end adds for `service`'s
    /// RPC `rpc_method` (e.g. `google.iam.credentials.v1.IAMCredentials.GenerateAccessToken`).
    pub fn unauthenticated_modern(missing: bool, service: &str, rpc_method: &str) -> Self {
        let (message, reason) = if missing {
            (
                "Request is missing required authentication credential. Expected OAuth 2 \
                 access token, login cookie or other valid authentication credential. See \
                 https://developers.google.com/identity/sign-in/web/devconsole-project.",
                "CREDENTIALS_MISSING",
            )
        } else {
            (
                "Request had invalid authentication credentials. Expected OAuth 2 access \
                 token, login cookie or other valid authentication credential. See \
                 https://developers.google.com/identity/sign-in/web/devconsole-project.",
                "ACCESS_TOKEN_TYPE_UNSUPPORTED",
            )
        };
        Self::new(401, message, "authError", "UNAUTHENTICATED")
            .modern()
            .with_detail(error_info(reason, service, rpc_method))
    }

    /// 403 as the newer APIs answer it: the token lacks the scope `service` needs.
    pub fn insufficient_scopes_modern(service: &str, rpc_method: &str) -> Self {
        Self::insufficient_scopes().modern().with_detail(error_info(
            "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
            service,
            rpc_method,
        ))
    }

    /// 403: the token lacks an Admin API scope.
    pub fn insufficient_scopes() -> Self {
        Self {
            format: ErrorFormat::Legacy {
                detail: Some("Insufficient Permission".into()),
                location: None,
            },
            ..Self::new(
                403,
                "Request had insufficient authentication scopes.",
                "insufficientPermissions",
                "PERMISSION_DENIED",
            )
        }
    }

    /// 403: the project is not one the emulator knows.
    pub fn not_authorized() -> Self {
        Self::new(
            403,
            "The client is not authorized to make this request.",
            "notAuthorized",
            "PERMISSION_DENIED",
        )
    }

    /// 404: known project, unknown instance.
    pub fn instance_not_found() -> Self {
        Self::new(
            404,
            "The Cloud SQL instance does not exist.",
            "instanceDoesNotExist",
            "NOT_FOUND",
        )
    }

    /// 404: no such method or path.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(
            404,
            format!("Method not found: {method} {path}"),
            "notFound",
            "NOT_FOUND",
        )
    }

    /// 400 `INVALID_ARGUMENT`.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(400, message, "invalid", "INVALID_ARGUMENT")
    }

    /// 500 for failures of the emulator itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message, "internalError", "INTERNAL")
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let (detail, location) = match &self.format {
            ErrorFormat::Modern { details } => {
                let mut error = json!({
                    "code": self.code,
                    "message": self.message,
                    "status": self.status,
                });
                if !details.is_empty() {
                    error["details"] = json!(details);
                }
                return json!({ "error": error });
            }
            ErrorFormat::Legacy { detail, location } => (detail, location),
        };
        let mut item = json!({
            "message": detail.as_deref().unwrap_or(&self.message),
            "domain": "global",
            "reason": self.reason,
        });
        if let Some((location, location_type)) = location {
            item["location"] = json!(location);
            item["locationType"] = json!(location_type);
        }
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [item],
                "status": self.status,
            }
        })
    }
}

/// The `google.rpc.ErrorInfo` detail Google's front end adds to authentication errors of
/// `service`'s RPC `rpc_method`.
pub fn error_info(reason: &str, service: &str, rpc_method: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": service, "method": rpc_method},
    })
}

impl IntoResponse for GoogleError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(self.body())).into_response();
        if self.code == 401 {
            // Google also says why in WWW-Authenticate; clients only look at the body.
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(
                    "Bearer realm=\"https://accounts.google.com/\"",
                ),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_error_shape() {
        let body = GoogleError::instance_not_found().body();
        assert_eq!(
            body,
            json!({"error":{"code":404,"message":"The Cloud SQL instance does not exist.",
                "errors":[{"message":"The Cloud SQL instance does not exist.","domain":"global",
                "reason":"instanceDoesNotExist"}],"status":"NOT_FOUND"}})
        );
        let body = GoogleError::not_authorized().body();
        assert_eq!(body["error"]["code"], 403);
        assert_eq!(body["error"]["errors"][0]["reason"], "notAuthorized");
        assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    }

    #[test]
    fn modern_error_shape() {
        let e = GoogleError::new(404, "Resource 'x' was not found", "notFound", "NOT_FOUND");
        assert_eq!(
            e.clone().modern().body(),
            json!({"error":{"code":404,"message":"Resource 'x' was not found","status":"NOT_FOUND"}})
        );
        let body = e.modern().with_detail(json!({"reason": "R"})).body();
        assert_eq!(body["error"]["details"], json!([{"reason": "R"}]));
        assert!(body["error"].get("errors").is_none());
    }

    #[test]
    fn auth_error_shape() {
        let body = GoogleError::unauthenticated().body();
        let err = &body["error"];
        assert_eq!(err["code"], 401);
        assert!(err["message"]
            .as_str()
            .unwrap()
            .starts_with("Request had invalid authentication credentials."));
        assert_eq!(
            err["errors"][0],
            json!({"message":"Invalid Credentials","domain":"global","reason":"authError",
                "location":"Authorization","locationType":"header"})
        );
        assert_eq!(err["status"], "UNAUTHENTICATED");

        let body = GoogleError::insufficient_scopes().body();
        assert_eq!(
            body,
            json!({"error":{"code":403,"message":"Request had insufficient authentication scopes.",
                "errors":[{"message":"Insufficient Permission","domain":"global",
                "reason":"insufficientPermissions"}],"status":"PERMISSION_DENIED"}})
        );
    }
}
