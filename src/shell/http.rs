//! The per-request context: buffers the request body, hands it to the core,
//! applies the decision, and watches the response.

use super::metrics::Metrics;
use crate::core::api::{self, Api, ApiError};
use crate::core::config::Config;
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
        match api::parse_request(api, &body) {
            Ok(_req) => {
                self.metrics
                    .incr(&format!("llmgate.requests.api.{}", api.as_str()), 1);
                Action::Continue
            }
            Err(e) => self.reply_error(api, &e),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.api.is_some() {
            self.set_http_response_header("x-llmgate-request-id", Some(&self.request_id));
        }
        Action::Continue
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        413,
        "request_too_large",
        format!("request body exceeds the limit of {limit} bytes"),
    )
}
