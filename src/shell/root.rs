//! The root context: configuration at plugin start, shared state for the
//! per-request contexts.

use super::host::HostStore;
use super::http::Http;
use super::metrics::Metrics;
use crate::core::config::Config;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::rc::Rc;

#[derive(Default)]
pub struct Root {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Config::from_json(&bytes) {
            Ok(config) => {
                if config.budgets_enabled {
                    // Create the shared-data buckets before any request, so
                    // every request-path write is a CAS on an existing key.
                    if let Err(e) = config.budgets.init(&HostStore) {
                        log::warn!("llmgate: budget store init: {e:?}");
                    }
                }
                log::info!("llmgate: configuration loaded");
                self.config = Some(Rc::new(config));
                true
            }
            Err(e) => {
                // Returning false makes Envoy refuse the plugin.
                log::error!("llmgate: invalid configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(Http::new(
            context_id,
            config,
            self.metrics.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
