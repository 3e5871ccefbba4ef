//! The test rig around secret-injector, apart from the Kubernetes API stand-in (the
//! `k8s-standin` crate): real backends, the payments scenario, and the webhook process.
//!
//! * [`openbao`]: a real OpenBao dev server (`bao server -dev`)
//! * [`moto`]: a real moto server (STS and Secrets Manager)
//! * [`aws`]: the AWS half of the payments scenario on moto, AWS request counters, the
//!   credential check on the webhook's log
//! * [`payments`]: the payments scenario on the stand-in and OpenBao, AdmissionReview
//!   builders, patch and Secret decoding, leak checks
//! * [`webhook`]: the real `secret-injector serve` binary over TLS
//! * [`tools`]: finding the backend binaries `make tools` installs, and free loopback ports
//!
//! Nothing here depends on the secret-injector library; what needs it (the binary's path and
//! its certificate generator) is in the root package's tests/support/mod.rs.

pub mod aws;
pub mod moto;
pub mod openbao;
pub mod payments;
pub mod postgres;
pub mod tools;
pub mod webhook;
