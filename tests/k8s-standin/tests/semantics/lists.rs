//! Lists: label and field selectors, list shape and pagination.

use k8s_openapi::api::core::v1::Secret;
use k8s_standin::StandIn;
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::helpers::{api_error, raw};

async fn names(api: &Api<Secret>, lp: &ListParams) -> Vec<String> {
    api.list(lp)
        .await
        .unwrap_or_else(|e| panic!("list {lp:?}: {e}"))
        .items
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect()
}

#[tokio::test]
async fn label_and_field_selectors() {
    let k8s = StandIn::start().await;
    for (name, ns, labels) in [
        ("a", "default", json!({"env": "prod", "tier": "web"})),
        ("b", "default", json!({"env": "dev", "tier": "web"})),
        ("c", "default", json!({"env": "test"})),
        ("d", "default", json!({"count": "7"})),
        ("e", "other", json!({"env": "prod"})),
    ] {
        k8s.seed(json!({"apiVersion": "v1", "kind": "Secret", "type": if name == "c" { "kubernetes.io/ssh-auth" } else { "Opaque" },
            "metadata": {"name": name, "namespace": ns, "labels": labels}, "data": {"ssh-privatekey": ""}}));
    }
    let default: Api<Secret> = Api::namespaced(k8s.client(), "default");
    let all: Api<Secret> = Api::all(k8s.client());
    let lp = |s: &str| ListParams::default().labels(s);
    let fp = |s: &str| ListParams::default().fields(s);

    assert_eq!(names(&default, &lp("env=prod")).await, ["a"]);
    assert_eq!(names(&default, &lp("env==prod")).await, ["a"]);
    assert_eq!(
        names(&default, &lp("env!=prod")).await,
        ["b", "c", "d"],
        "!= matches a missing label"
    );
    assert_eq!(names(&default, &lp("env in (prod, dev)")).await, ["a", "b"]);
    assert_eq!(
        names(&default, &lp("env notin (prod)")).await,
        ["b", "c", "d"]
    );
    assert_eq!(names(&default, &lp("env")).await, ["a", "b", "c"]);
    assert_eq!(names(&default, &lp("!env")).await, ["d"]);
    assert_eq!(
        names(&default, &lp("env,tier=web,env notin (dev)")).await,
        ["a"]
    );
    assert_eq!(names(&default, &lp("count>5")).await, ["d"]);
    assert_eq!(names(&default, &lp("count<5")).await, Vec::<String>::new());
    assert_eq!(
        names(&all, &lp("env=prod")).await,
        ["a", "e"],
        "all namespaces"
    );

    assert_eq!(names(&default, &fp("metadata.name=b")).await, ["b"]);
    assert_eq!(
        names(&default, &fp("metadata.name!=b")).await,
        ["a", "c", "d"]
    );
    assert_eq!(names(&all, &fp("metadata.namespace=other")).await, ["e"]);
    assert_eq!(
        names(&all, &fp("metadata.namespace!=other,metadata.name!=a")).await,
        ["b", "c", "d"]
    );
    assert_eq!(
        names(&default, &fp("type=kubernetes.io/ssh-auth")).await,
        ["c"]
    );

    let bad_label = api_error(default.list(&lp("env in prod")).await.unwrap_err());
    assert_eq!(
        (bad_label.code, bad_label.reason.as_str()),
        (400, "BadRequest")
    );
    let bad_field = api_error(default.list(&fp("spec.nope=1")).await.unwrap_err());
    assert_eq!(bad_field.code, 400);
    assert_eq!(bad_field.message, "field label not supported: spec.nope");
}

#[tokio::test]
async fn list_shape_and_pagination() {
    let k8s = StandIn::start().await;
    for i in 0..7 {
        k8s.seed(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("s{i}"), "namespace": "default"}}));
    }
    let listed = raw(&k8s, "GET", "/api/v1/namespaces/default/secrets", &[], None).await;
    let list = listed.json();
    assert_eq!(list["kind"], "SecretList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(
        list["metadata"]["resourceVersion"],
        k8s.resource_version().to_string()
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 7);
    for item in list["items"].as_array().unwrap() {
        assert_eq!(item["kind"], "Secret");
        assert_eq!(item["apiVersion"], "v1");
    }

    let secrets: Api<Secret> = Api::namespaced(k8s.client(), "default");
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let first = secrets.list(&lp).await.unwrap();
    let list_rv = first.metadata.resource_version.clone();
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let mut page = first;
    loop {
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|s| s.metadata.name.clone().unwrap()));
        assert_eq!(
            page.metadata.resource_version, list_rv,
            "every page reports the list's RV"
        );
        match page.metadata.continue_.clone().filter(|c| !c.is_empty()) {
            Some(token) => {
                // A write between pages does not disturb the cursor.
                k8s.seed(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm{}", seen.len()), "namespace": "default"}}));
                lp = lp.continue_token(&token);
                page = secrets.list(&lp).await.unwrap();
            }
            None => break,
        }
    }
    assert_eq!(seen, ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);
    assert_eq!(k8s.count("list", "secrets"), 4);

    let bad = raw(
        &k8s,
        "GET",
        "/api/v1/namespaces/default/secrets?limit=2&continue=garbage",
        &[],
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
}
