//! events.k8s.io/v1 Events: the strict validation of that API version (required fields, the
//! 1 KiB note, series rules) and the fields an update may not change.

use k8s_openapi::api::events::v1::Event;
use k8s_standin::StandIn;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::helpers::api_error;

fn event(name: &str, note: &str) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "apps"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "type": "Warning",
        "reason": "InjectionDenied",
        "action": "Inject",
        "note": note,
        "reportingController": "secret-injector",
        "reportingInstance": "secret-injector-0",
        "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "apps"}
    }))
    .unwrap()
}

#[tokio::test]
async fn new_style_events_are_validated_and_only_the_series_may_change() {
    let k8s = StandIn::start().await;
    let events: Api<Event> = Api::namespaced(k8s.client(), "apps");
    let pp = PostParams::default();
    events.create(&pp, &event("web.1", "denied")).await.unwrap();

    let too_long = api_error(
        events
            .create(&pp, &event("web.2", &"x".repeat(1025)))
            .await
            .unwrap_err(),
    );
    assert_eq!(too_long.code, 422);
    assert!(
        too_long.message.contains("note: Too long"),
        "{}",
        too_long.message
    );

    let mut bare = event("web.3", "n");
    bare.event_time = None;
    bare.reporting_controller = None;
    bare.type_ = Some("Info".into());
    let invalid = api_error(events.create(&pp, &bare).await.unwrap_err());
    assert_eq!(invalid.code, 422);
    for part in [
        "eventTime: Required value",
        "reportingController: Required value",
        "type: Invalid value",
    ] {
        assert!(
            invalid.message.contains(part),
            "{part}: {}",
            invalid.message
        );
    }

    let params = PatchParams::default();
    let series = json!({"series": {"count": 5, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}});
    let patched = events
        .patch("web.1", &params, &Patch::Merge(&series))
        .await
        .unwrap();
    assert_eq!(patched.series.unwrap().count, 5);

    let one = json!({"series": {"count": 1, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}});
    let err = api_error(
        events
            .patch("web.1", &params, &Patch::Merge(&one))
            .await
            .unwrap_err(),
    );
    assert!(
        err.message.contains("should be at least 2"),
        "{}",
        err.message
    );

    let note = json!({"note": "another message"});
    let err = api_error(
        events
            .patch("web.1", &params, &Patch::Merge(&note))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("note: Invalid value"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("field is immutable"),
        "{}",
        err.message
    );
}
