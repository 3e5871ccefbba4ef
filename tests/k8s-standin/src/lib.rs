//! An in-process stand-in for the Kubernetes API server, for tests.
//!
//! `StandIn::start()` serves plain HTTP on a random loopback port and follows the real API
//! server's REST semantics for the handful of resources this project touches: `metav1.Status`
//! errors, a single global `resourceVersion` counter, optimistic concurrency, generation
//! bumping, status subresources, JSON/merge patches, finalizers, label/field selectors,
//! paginated lists and watches with history replay, bookmarks and `410 Gone`. It also issues
//! and reviews service-account tokens (TokenRequest / TokenReview) with a real RSA key, so a
//! real OpenBao can verify them.
//!
//! What it deliberately does not model (RBAC, admission, controllers, garbage collection,
//! server-side-apply field ownership, …) is listed in `STANDIN.md` beside this crate's
//! Cargo.toml. `tests/semantics/` proves each modelled behaviour, one file per concern.
//!
//! Modules, by concern:
//!
//! * `instance`: the public [`StandIn`] handle (start, seed, inspect, count, inject failures)
//! * `resources`: the table of served resources
//! * `store`: objects, the global resourceVersion, watch history, counters; the write verbs
//! * `list`: list selection and `limit`/`continue` pagination
//! * `selectors`: label and field selectors
//! * `watch`: watch replay, `410 Expired`, bookmarks, the streaming response
//! * `tokens`: the signing key, TokenRequest JWTs, TokenReview
//! * `validation`: decoding and validating request bodies; `status`: `metav1.Status` errors
//! * `object`: JSON metadata helpers, time, uids
//! * `router`: paths, queries, counting, discovery; `handlers`: the non-watch verbs

mod events;
mod handlers;
mod instance;
mod list;
mod object;
mod resources;
mod router;
mod selectors;
mod status;
mod store;
mod tokens;
mod validation;
mod watch;

pub use instance::{StandIn, TokenRequestRecord, TokenReviewRecord};

use std::time::Duration;

pub(crate) const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The namespace and name of the ServiceAccount whose token `client()` presents.
pub(crate) const SELF_NAMESPACE: &str = "secret-injector";
pub(crate) const SELF_SERVICE_ACCOUNT: &str = "secret-injector";
/// Namespaces present in every fresh cluster.
pub(crate) const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

pub(crate) const DEFAULT_HISTORY_LIMIT: usize = 10_000;
pub(crate) const EVENT_CHANNEL_CAPACITY: usize = 16_384;
/// The real server rejects request bodies above 3 MiB.
pub(crate) const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// The real server picks a random watch timeout in [1800s, 3600s] when none is asked for.
pub(crate) const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
pub(crate) const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) const MIN_TOKEN_EXPIRATION: i64 = 600;
pub(crate) const DEFAULT_TOKEN_EXPIRATION: i64 = 3600;
pub(crate) const MAX_TOKEN_EXPIRATION: i64 = 48 * 3600;
/// go-jose's default leeway, which the API server's token validation uses.
pub(crate) const TOKEN_LEEWAY_SECONDS: i64 = 60;
/// Lifetime of the token `client()` / `write_kubeconfig()` present.
pub(crate) const CLIENT_TOKEN_SECONDS: i64 = 24 * 3600;

pub(crate) const MAX_SECRET_BYTES: usize = 1024 * 1024;
