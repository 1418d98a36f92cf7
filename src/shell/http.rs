//! The per-request context: buffers the request body, hands it to the core,
//! applies the decision, and watches the response.

use super::metrics::Metrics;
use crate::core::api::{self, Api, ApiError};
use crate::core::config::{AuthMode, Config};
use crate::core::pipeline::{self, Head, Identity};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

pub struct Http {
    context_id: u32,
    config: Rc<Config>,
    metrics: Rc<Metrics>,
    /// `Some` once the request is recognised as an LLM call.
    api: Option<Api>,
    request_id: String,
    /// A local reply was sent; ignore further callbacks.
    replied: bool,
    identity: Option<Identity>,
}

impl Http {
    pub fn new(context_id: u32, config: Rc<Config>, metrics: Rc<Metrics>) -> Self {
        Self {
            context_id,
            config,
            metrics,
            api: None,
            request_id: String::new(),
            replied: false,
            identity: None,
        }
    }

    fn reply_error(&mut self, api: Api, err: &ApiError) -> Action {
        let body = err.body(api);
        let retry_after = err.retry_after_s.map(|s| s.to_string());
        let mut headers: Vec<(&str, &str)> = vec![
            ("content-type", "application/json"),
            ("x-llmgate-request-id", self.request_id.as_str()),
        ];
        if let Some(r) = retry_after.as_deref() {
            headers.push(("retry-after", r));
        }
        self.send_http_response(err.status, headers, Some(&body));
        self.replied = true;
        self.metrics.incr(
            &format!("llmgate.rejected.api.{}.code.{}", api.as_str(), err.code),
            1,
        );
        Action::Pause
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // Only llmgate chooses the route: a client may not.
        self.set_http_request_header(ROUTE_HEADER, None);
        let method = self.get_http_request_header(":method").unwrap_or_default();
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let Some(api) = api::route(&method, &path) else {
            return Action::Continue;
        };
        self.api = Some(api);
        self.request_id = self
            .get_http_request_header("x-request-id")
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .unwrap_or_else(|| format!("llmgate-{}", self.context_id));
        let authorization = self.get_http_request_header("authorization");
        let x_api_key = self.get_http_request_header("x-api-key");
        let user = self.get_http_request_header("x-llmgate-user");
        let identity = if self.config.auth_mode == AuthMode::TrustedHeader {
            let h = self.get_http_request_header(&self.config.identity_header);
            self.set_http_request_header(&self.config.identity_header, None);
            h
        } else {
            None
        };
        let head = Head {
            authorization: authorization.as_deref(),
            x_api_key: x_api_key.as_deref(),
            identity: identity.as_deref(),
            user: user.as_deref(),
        };
        match pipeline::authenticate(&self.config, &head) {
            Ok(who) => self.identity = Some(who),
            Err(e) => return self.reply_error(api, &e),
        }
        if end_of_stream {
            return self.reply_error(
                api,
                &ApiError::new(400, "missing_body", "request body is required"),
            );
        }
        if let Some(len) = self
            .get_http_request_header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            if len > self.config.max_body_bytes {
                return self.reply_error(api, &too_large(self.config.max_body_bytes));
            }
        }
        // Hold the headers until the whole body is here (needs
        // `allow_on_headers_stop_iteration: true` in the Envoy filter config).
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(api) = self.api else {
            return Action::Continue;
        };
        if self.replied {
            return Action::Pause;
        }
        let size = u64::try_from(body_size).unwrap_or(u64::MAX);
        if size > self.config.max_body_bytes {
            return self.reply_error(api, &too_large(self.config.max_body_bytes));
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let req = match api::parse_request(api, &body) {
            Ok(r) => r,
            Err(e) => return self.reply_error(api, &e),
        };
        if let Some(who) = &self.identity {
            if let Err(e) = pipeline::check_model(&self.config, who, &req.model) {
                return self.reply_error(api, &e);
            }
        }
        for (name, value) in pipeline::upstream_credentials(&self.config, api) {
            self.set_http_request_header(name, value.as_deref());
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.api.is_some() {
            self.set_http_response_header("x-llmgate-request-id", Some(&self.request_id));
        }
        Action::Continue
    }
}

/// The request header the shipped Envoy routes match to pick a cluster.
pub const ROUTE_HEADER: &str = "x-llmgate-route";

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        413,
        "request_too_large",
        format!("request body exceeds the limit of {limit} bytes"),
    )
}
