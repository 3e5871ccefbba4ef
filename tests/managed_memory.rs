//! Heap held per tracked managed Secret, measured with a counting allocator: the synced index
//! (then also the refresher's work list, as on the leader) over N workloads with their managed
//! Secrets, minus the same over the workloads alone. Each Secret comes as the webhook writes
//! it (its recorded annotations, an ownerReference to its Deployment) beside its Deployment
//! and ReplicaSet, 100 per namespace, like the scale bench; the owners are in both runs, so
//! the figure is the Secret's own cost (the owners' is printed too, against an empty cluster).
//!
//! Besides the bytes asked for, the allocator keeps an estimate of what glibc's malloc really
//! holds for them (8-byte header, 16-byte alignment, 32-byte minimum chunk): what RSS sees.
//! Fails if an indexed Secret costs more than [`INDEX_BOUND`], or a tracked one (index and
//! work list) more than [`TRACKED_BOUND`], of that estimate. (Before the index kept a trimmed
//! record, these were about 3.4 KB and 7.5 KB.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_standin::StandIn;
use secret_injector::context::{Context, ContextConfig};
use secret_injector::k8s::{Owner, OwnerKind, WorkloadKind};
use secret_injector::managed::{self, DigestKey, Recorded, Target};
use secret_injector::metrics::Metrics;
use secret_injector::redact::SecretBytes;
use secret_injector::refresher::{self, RefresherConfig};
use secret_injector::spec::{self, ParseContext};
use serde_json::json;
use tokio::sync::watch;

/// Estimated heap (malloc chunks) per managed Secret in the index.
const INDEX_BOUND: isize = 1024;
/// The same, index and the leader's work list together.
const TRACKED_BOUND: isize = 1536;
/// As many as the scale bench's first figure (fixed costs, e.g. connection buffers, show up
/// below this as noise in the per-Secret figure).
const N: usize = 10_000;
const PER_NAMESPACE: usize = 100;

struct Counting;

/// Bytes asked for, and malloc chunks as glibc sizes them.
static LIVE: AtomicIsize = AtomicIsize::new(0);
static CHUNKS: AtomicIsize = AtomicIsize::new(0);

fn chunk(size: usize) -> isize {
    ((size + 8).div_ceil(16) * 16).max(32) as isize
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        CHUNKS.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        CHUNKS.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        CHUNKS.fetch_add(chunk(new_size) - chunk(layout.size()), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot() -> (isize, isize) {
    (LIVE.load(Ordering::Relaxed), CHUNKS.load(Ordering::Relaxed))
}

/// Namespaces, stores and `n` workloads (Deployment + ReplicaSet); with `secrets`, each with
/// the managed Secret the webhook would have written for it.
fn seed(standin: &StandIn, n: usize, secrets: bool) {
    let key = DigestKey::new(SecretBytes::new(b"managed-memory-test-key".to_vec()));
    let ann: BTreeMap<String, String> = BTreeMap::from([
        ("secret-injector.io/store".into(), "vault-backend".into()),
        (
            "secret-injector.io/env.DB_USERNAME".into(),
            "payments/db#username".into(),
        ),
        (
            "secret-injector.io/env.DB_PASSWORD".into(),
            "payments/db#password".into(),
        ),
        ("secret-injector.io/refresh-interval".into(), "720h".into()),
    ]);
    let containers = vec!["app".to_string()];
    for ns_index in 0..n.div_ceil(PER_NAMESPACE) {
        let ns = format!("team-{ns_index:04}");
        standin.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
            "labels": {"secret-injector.io/inject": "enabled", "kubernetes.io/metadata.name": ns}}}));
        standin.seed(json!({"apiVersion": "secret-injector.io/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": "vault-backend", "namespace": ns},
            "spec": {"provider": {"vault": {"server": "https://vault.example:8200", "path": "secret", "version": "v2",
                "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "app"}}}}}}));
        for i in 0..PER_NAMESPACE.min(n - ns_index * PER_NAMESPACE) {
            let name = format!("checkout-api-{i:03}");
            let d = standin.seed(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
                "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "shop/checkout:1.4.2"}]}}}}));
            let uid = d["metadata"]["uid"].as_str().unwrap().to_string();
            standin.seed(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("{name}-7c9f8d6b5"), "namespace": ns, "labels": {"app": name},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                        "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"selector": {"matchLabels": {"app": name}}}}));
            if !secrets {
                continue;
            }
            let spec = spec::parse(
                &ann,
                &ParseContext {
                    workload_name: Some(&name),
                    container_names: &containers,
                    min_refresh_interval: Duration::from_secs(1),
                },
            )
            .unwrap()
            .unwrap();
            let item = &spec.items[0];
            let target = Target {
                namespace: ns.clone(),
                name: item.secret_name.clone(),
                record: Recorded {
                    source: item.source(),
                    service_account: format!("checkout-sa-{}", i % 10),
                    refresh_interval: item.refresh_interval,
                    owner: Owner {
                        namespace: ns.clone(),
                        kind: OwnerKind::Known(WorkloadKind::Deployment),
                        name: name.clone(),
                        uid: Some(uid),
                    },
                    rollout: item.rollout,
                    lease: None,
                },
            };
            let data = [
                ("DB_USERNAME", "checkout"),
                ("DB_PASSWORD", "hunter2hunter2"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), SecretBytes::new(v.as_bytes().to_vec())))
            .collect();
            let secret = managed::build(&target, &data, &key, k8s_openapi::jiff::Timestamp::now());
            standin.seed(serde_json::to_value(&secret).unwrap());
        }
    }
}

/// Heap held (bytes asked, malloc chunks) by the synced index, and then also by the
/// refresher's work list, with `n` workloads (with or without their managed Secrets).
async fn held(n: usize, secrets: bool) -> [(isize, isize); 2] {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let standin = StandIn::start().await;
    seed(&standin, n, secrets);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = snapshot();
    let ctx = Arc::new(Context::new(
        standin.client(),
        ContextConfig::default(),
        Metrics::new(),
        DigestKey::random(),
    ));
    ctx.index().wait_until_synced().await;
    assert_eq!(ctx.managed_index().len(), if secrets { n } else { 0 });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let indexed = snapshot();

    let (leading_tx, leading) = watch::channel(true);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let task = tokio::spawn(refresher::run(
        ctx.clone(),
        RefresherConfig {
            concurrency: 4,
            rollout_debounce: Duration::from_secs(5),
            orphan_grace: Duration::from_secs(60),
            identity: "memory-test".into(),
            min_interval: Duration::from_secs(1),
        },
        leading,
        shutdown,
    ));
    let want = format!(
        "secret_injector_managed_secrets {}",
        if secrets { n } else { 0 }
    );
    for _ in 0..600 {
        if ctx.metrics().encode().lines().any(|l| l == want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ctx.metrics().encode().lines().any(|l| l == want),
        "the refresher did not track every Secret"
    );
    // With Secrets tracked, the refresher watches their workloads' kinds too (after the owner
    // index's watch of each): wait until it does, then let the lists' buffers go.
    if secrets {
        for _ in 0..600 {
            let watching = ["deployments", "statefulsets", "daemonsets"]
                .iter()
                .all(|r| standin.count("watch", r) >= 2);
            if watching {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let tracking = snapshot();
    shutdown_tx.send_replace(true);
    drop(leading_tx);
    let _ = task.await;
    drop(ctx);
    let diff = |a: (isize, isize)| (a.0 - before.0, a.1 - before.1);
    [diff(indexed), diff(tracking)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_managed_secret_costs_under_a_kilobyte() {
    let [empty, _] = held(0, false).await;
    let [owners, owners_tracking] = held(N, false).await;
    let [index, tracking] = held(N, true).await;
    let per =
        |a: (isize, isize), b: (isize, isize)| ((a.0 - b.0) / N as isize, (a.1 - b.1) / N as isize);
    let (owner_bytes, owner_chunks) = per(owners, empty);
    let (index_bytes, index_chunks) = per(index, owners);
    let (bytes, chunks) = per(tracking, owners_tracking);
    println!(
        "per workload's two owners (Deployment, ReplicaSet): {owner_bytes} B ({owner_chunks} B in malloc chunks)"
    );
    println!(
        "per managed Secret: index {index_bytes} B ({index_chunks} B in malloc chunks); \
         index and refresher {bytes} B ({chunks} B in malloc chunks)"
    );
    assert!(
        index_chunks <= INDEX_BOUND,
        "{index_chunks} B of heap per indexed managed Secret (bound {INDEX_BOUND} B)"
    );
    assert!(
        chunks <= TRACKED_BOUND,
        "{chunks} B of heap per tracked managed Secret (bound {TRACKED_BOUND} B)"
    );
}
