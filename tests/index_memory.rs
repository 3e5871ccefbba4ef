//! Heap held by the watch-fed index per tracked object, measured with a counting allocator:
//! the index over N owners (ReplicaSets with realistic metadata) minus the index over none.
//! Prints the figure; fails only if an owner costs more than 1 KiB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_standin::StandIn;
use secret_injector::context::{Context, ContextConfig};
use secret_injector::managed::DigestKey;
use secret_injector::metrics::Metrics;
use serde_json::json;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes the synced index holds with `owners` ReplicaSets in the cluster.
async fn index_bytes(owners: usize) -> isize {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let standin = StandIn::start().await;
    for i in 0..owners {
        standin.seed(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("checkout-api-7c9f8d6b{i:05}"), "namespace": format!("team-{}", i % 40),
                "labels": {"app": "checkout-api", "pod-template-hash": "7c9f8d6b5", "app.kubernetes.io/part-of": "shop"},
                "annotations": {"deployment.kubernetes.io/revision": "12", "deployment.kubernetes.io/desired-replicas": "3",
                    "deployment.kubernetes.io/max-replicas": "4", "secret-injector.io/store": "vault-backend"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout-api",
                    "uid": "0f7b7a52-3c1e-4a55-9d2e-5b6f0e1c2d3a", "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"selector": {"matchLabels": {"app": "checkout-api"}}}}));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = LIVE.load(Ordering::Relaxed);
    let ctx = Arc::new(Context::new(
        standin.client(),
        ContextConfig::default(),
        Metrics::new(),
        DigestKey::random(),
    ));
    ctx.index().wait_until_synced().await;
    // Let the list responses and decode buffers go.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(ctx.index().owners().len(), owners);
    drop(ctx);
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_owner_costs_a_few_hundred_bytes() {
    const N: usize = 5_000;
    let empty = index_bytes(0).await;
    let full = index_bytes(N).await;
    let per_owner = (full - empty) / N as isize;
    println!("index: {empty} B empty, {full} B with {N} ReplicaSets: {per_owner} B per owner");
    assert!(per_owner < 1024, "{per_owner} B per indexed owner");
}
