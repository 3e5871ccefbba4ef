//! secret-injector: a mutating admission webhook that injects secrets from Vault/OpenBao
//! (and AWS Secrets Manager) into pods through managed Kubernetes Secrets, fetched with the
//! pod's own ServiceAccount identity. See docs/architecture.md for the module picture.

pub mod admission;
pub mod app;
pub mod budget;
pub mod certs;
pub mod config;
pub mod context;
pub mod events;
pub mod identity;
pub mod index;
pub mod k8s;
pub mod leader;
pub mod managed;
pub mod metrics;
pub mod patch;
pub mod pipeline;
pub mod plan;
pub mod pod;
pub mod provider;
pub mod redact;
pub mod refresher;
pub mod render;
pub mod server;
pub mod spec;
pub mod store;
pub mod telemetry;
pub mod workload;
