//! Every annotation and label name under `secret-injector.io/` that pods and workloads carry,
//! defined once. (The managed Secret's own annotations are in `managed::recorded`.)

use std::time::Duration;

/// Prefix of every annotation, label and condition this project reads or writes.
pub const PREFIX: &str = "secret-injector.io/";
pub const ANN_STORE: &str = "secret-injector.io/store";
pub const ANN_ENV_PREFIX: &str = "secret-injector.io/env.";
pub const ANN_FILE_PREFIX: &str = "secret-injector.io/file.";
pub const ANN_EXTRACT: &str = "secret-injector.io/extract";
/// Short form: a dynamic secret path (`database/creds/<role>`), every field through envFrom.
pub const ANN_DYNAMIC: &str = "secret-injector.io/dynamic";
pub const ANN_REFRESH_INTERVAL: &str = "secret-injector.io/refresh-interval";
pub const ANN_SECRET_NAME: &str = "secret-injector.io/secret-name";
pub const ANN_MOUNT_PATH: &str = "secret-injector.io/mount-path";
pub const ANN_CONTAINERS: &str = "secret-injector.io/containers";
pub const ANN_ROLLOUT: &str = "secret-injector.io/rollout";
pub const ANN_EXTERNAL_SECRETS: &str = "secret-injector.io/external-secrets";
/// Pod annotation (`"false"` opts a pod out) and namespace label (`enabled` opts a namespace in).
pub const ANN_INJECT: &str = "secret-injector.io/inject";
/// Written by the webhook onto the pod.
pub const ANN_STATUS: &str = "secret-injector.io/status";
pub const ANN_SECRETS: &str = "secret-injector.io/secrets";
/// Written by the refresher onto pod templates / read on managed Secrets.
pub const ANN_RESTARTED_AT: &str = "secret-injector.io/restarted-at";
pub const ANN_FORCE_SYNC: &str = "secret-injector.io/force-sync";

pub const DEFAULT_MOUNT_PATH: &str = "/var/run/secret-injector";
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// Annotation keys under our prefix that we write ourselves or that belong to later stages;
/// they are allowed on pods and ignored by the parser.
pub(super) const OUTPUT_KEYS: [&str; 4] =
    [ANN_STATUS, ANN_SECRETS, ANN_RESTARTED_AT, ANN_FORCE_SYNC];

pub(super) const SHORT_FORM_KEYS: [&str; 8] = [
    ANN_STORE,
    ANN_EXTRACT,
    ANN_DYNAMIC,
    ANN_REFRESH_INTERVAL,
    ANN_SECRET_NAME,
    ANN_MOUNT_PATH,
    ANN_CONTAINERS,
    ANN_ROLLOUT,
];
