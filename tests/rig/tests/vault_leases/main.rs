//! The backend facts the dynamic-secrets feature (issue 10) rests on, proven with real components:
//! an OpenBao 2.7.2 dev server (test_rig::openbao) and a throw-away PostgreSQL cluster with
//! password authentication (test_rig::postgres). Nothing here runs the webhook; every
//! assertion is a fact about OpenBao/PostgreSQL that the design must respect, with a comment
//! saying why it matters.
//!
//! Findings (each encoded below):
//! - Database credentials die when the token that read them expires, even though the lease
//!   claims a longer TTL (`lease_duration` is the credential TTL, not the token's).
//! - Batch login tokens (`token_type=batch`) cap the lease at the token's remaining TTL; renewal
//!   cannot lift the cap. Orphan or not, they do not help.
//! - An orphan token only survives its *parent*; leases still die with the orphan itself. What
//!   helps: a short login token may mint a longer-lived orphan token through a token role with
//!   `orphan=true` (`update` on `auth/token/create/<role>`, no sudo) and read the credentials with
//!   that; they outlive the login token.
//! - `auth/token/create-orphan` needs no sudo in OpenBao 2.7.2 (plain `update`), while
//!   `auth/token/create` with `no_parent=true` does.
//! - A periodic login token (`token_period` on the JWT/Kubernetes auth role) kept alive with
//!   `auth/token/renew-self` keeps the credentials alive; once renewals stop they die.
//! - Lease renewal is capped by the role's `max_ttl`; a lease past its max TTL cannot be renewed.
//! - Minimal policy: `read` on `database/creds/<role>`, `update` on
//!   `sys/leases/renew/database/creds/<role>/*` and `sys/leases/revoke/database/creds/<role>/*`
//!   (path form, scoped to the role) and, for look-ups, `update` on `sys/leases/lookup`. The
//!   default policy alone already grants body-form `sys/leases/renew` and `sys/leases/lookup`
//!   for any lease id, never revoke.
//! - Kubernetes auth roles accept the same `token_type` / `token_period` /
//!   `token_explicit_max_ttl` / `token_no_default_policy` parameters as the JWT roles used here.
//! - PKI: `pki/issue/<role>` creates no lease unless the role sets `generate_lease`.

mod database;
mod helpers;
mod pki;
mod tokens;
