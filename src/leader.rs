//! Leader election on a `coordination.k8s.io/v1` Lease. Every replica serves admissions; only
//! the leader runs background work (store status now, the refresher later).
//!
//! Expiry is judged the way client-go does it: by how long *we* have seen the same record
//! unchanged, not by comparing the holder's renewTime with our clock, so clock skew between
//! replicas cannot hand leadership to two of them. Every write is fenced by resourceVersion.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

pub const LEASE_NAME: &str = "secret-injector-leader";

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
}

impl LeaderConfig {
    fn renew_every(&self) -> Duration {
        self.lease_duration / 3
    }
}

/// What we last saw of someone else's record, and when it last changed.
struct Observed {
    holder: Option<String>,
    renew: Option<Timestamp>,
    since: Instant,
}

struct Elector {
    api: Api<Lease>,
    config: LeaderConfig,
    observed: Option<Observed>,
}

impl Elector {
    /// One round: acquire, renew, or observe. Returns whether we hold the lease now.
    async fn round(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let duration_secs = self.config.lease_duration.as_secs().max(1) as i32;
        let Some(current) = self.api.get_opt(&self.config.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.lease_name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&crate::k8s::post_params(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let renew = spec.renew_time.as_ref().map(|t| t.0);
        let ours = holder.as_deref() == Some(self.config.identity.as_str());

        if !ours {
            let changed = self
                .observed
                .as_ref()
                .is_none_or(|o| o.holder != holder || o.renew != renew);
            if changed {
                self.observed = Some(Observed {
                    holder: holder.clone(),
                    renew,
                    since: Instant::now(),
                });
            }
            let held_for = Duration::from_secs(
                spec.lease_duration_seconds.unwrap_or(duration_secs).max(1) as u64,
            );
            let expired = holder.is_none()
                || self
                    .observed
                    .as_ref()
                    .is_some_and(|o| o.since.elapsed() >= held_for);
            if !expired {
                return Ok(false);
            }
        }

        let mut next = current.clone();
        let mut spec = spec;
        if !ours {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(duration_secs);
        next.spec = Some(spec);
        // Fenced: resourceVersion comes from what we read.
        match self
            .api
            .replace(&self.config.lease_name, &crate::k8s::post_params(), &next)
            .await
        {
            Ok(_) => {
                self.observed = None;
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the lease up on shutdown so a successor need not wait for it to expire.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.lease_name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let _ = self
            .api
            .replace(&self.config.lease_name, &crate::k8s::post_params(), &lease)
            .await;
    }
}

/// Run the election until `shutdown`; the returned receiver says whether we lead.
pub fn spawn(
    client: Client,
    config: LeaderConfig,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut elector = Elector {
            api: Api::namespaced(client, &config.namespace),
            config: config.clone(),
            observed: None,
        };
        loop {
            let leading = match elector.round().await {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "leader election round failed");
                    // Without a successful renewal we must assume we lost the lease.
                    false
                }
            };
            tx.send_if_modified(|current| {
                if *current != leading {
                    info!(identity = %config.identity, leading, "leadership changed");
                    *current = leading;
                    true
                } else {
                    false
                }
            });
            let jitter = Duration::from_millis(rand::random_range(
                0..=config.renew_every().as_millis() as u64 / 5 + 1,
            ));
            tokio::select! {
                _ = tokio::time::sleep(config.renew_every() + jitter) => {}
                _ = shutdown.changed() => break,
            }
        }
        let _ = tx.send(false);
        elector.release().await;
    });
    rx
}

/// Run `work` whenever this replica leads: start it on gaining the Lease, drop it on losing it,
/// return on shutdown. `what` names the work in logs.
pub async fn run_while_leading<F, Fut>(
    what: &str,
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                r = leading.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
        info!("leading: {what} started");
        tokio::select! {
            _ = work() => {}
            _ = async { while *leading.borrow_and_update() { if leading.changed().await.is_err() { break } } } => {
                info!("no longer leading: {what} stopped");
            }
            _ = shutdown.changed() => return,
        }
    }
}
