//! The table of served resources and lookups into it.

/// One served resource.
#[derive(Debug)]
pub(crate) struct ResourceInfo {
    /// Key for counters and the public lookup functions: the plural, or `plural.group` where
    /// the plural alone is ambiguous (events.k8s.io events).
    pub(crate) id: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) singular: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) namespaced: bool,
    /// Has a `/status` subresource: the main resource ignores status, `/status` changes only it.
    pub(crate) status: bool,
    /// Maintains `metadata.generation` (workloads, pods, custom resources; not Secrets etc.).
    pub(crate) generation: bool,
    /// PUT on a missing object creates it (true for leases and events on the real server).
    pub(crate) create_on_update: bool,
    /// A custom resource (no strategic merge patch).
    pub(crate) custom: bool,
    /// Create-only, never stored (TokenReview).
    pub(crate) virtual_only: bool,
}

impl ResourceInfo {
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `secrets`, `deployments.apps`: how the real server names a resource in messages.
    pub(crate) fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Field selectors the real server supports beyond metadata.name/namespace.
    pub(crate) fn extra_field_labels(&self) -> &'static [&'static str] {
        match (self.group, self.plural) {
            ("", "secrets") => &["type"],
            ("", "namespaces") => &["status.phase"],
            ("", "pods") => &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            ("", "events") => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "type",
            ],
            ("batch", "jobs") => &["status.successful"],
            ("apps", "replicasets") => &["status.replicas"],
            _ => &[],
        }
    }
}

macro_rules! resource {
    ($id:expr, $plural:expr, $singular:expr, $kind:expr, $group:expr, $version:expr,
     namespaced: $ns:expr, status: $st:expr, generation: $gen:expr) => {
        ResourceInfo {
            id: $id,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            group: $group,
            version: $version,
            namespaced: $ns,
            status: $st,
            generation: $gen,
            create_on_update: false,
            custom: false,
            virtual_only: false,
        }
    };
}

pub(crate) static RESOURCES: [ResourceInfo; 21] = [
    resource!("namespaces", "namespaces", "namespace", "Namespace", "", "v1",
        namespaced: false, status: true, generation: false),
    resource!("serviceaccounts", "serviceaccounts", "serviceaccount", "ServiceAccount", "", "v1",
        namespaced: true, status: false, generation: false),
    resource!("secrets", "secrets", "secret", "Secret", "", "v1",
        namespaced: true, status: false, generation: false),
    resource!("configmaps", "configmaps", "configmap", "ConfigMap", "", "v1",
        namespaced: true, status: false, generation: false),
    ResourceInfo {
        create_on_update: true,
        ..resource!("events", "events", "event", "Event", "", "v1",
            namespaced: true, status: false, generation: false)
    },
    resource!("pods", "pods", "pod", "Pod", "", "v1",
        namespaced: true, status: true, generation: true),
    resource!("replicasets", "replicasets", "replicaset", "ReplicaSet", "apps", "v1",
        namespaced: true, status: true, generation: true),
    resource!("deployments", "deployments", "deployment", "Deployment", "apps", "v1",
        namespaced: true, status: true, generation: true),
    resource!("statefulsets", "statefulsets", "statefulset", "StatefulSet", "apps", "v1",
        namespaced: true, status: true, generation: true),
    resource!("daemonsets", "daemonsets", "daemonset", "DaemonSet", "apps", "v1",
        namespaced: true, status: true, generation: true),
    resource!("jobs", "jobs", "job", "Job", "batch", "v1",
        namespaced: true, status: true, generation: true),
    resource!("cronjobs", "cronjobs", "cronjob", "CronJob", "batch", "v1",
        namespaced: true, status: true, generation: true),
    ResourceInfo {
        create_on_update: true,
        ..resource!("leases", "leases", "lease", "Lease", "coordination.k8s.io", "v1",
            namespaced: true, status: false, generation: false)
    },
    ResourceInfo {
        create_on_update: true,
        ..resource!("events.events.k8s.io", "events", "event", "Event", "events.k8s.io", "v1",
            namespaced: true, status: false, generation: false)
    },
    ResourceInfo {
        custom: true,
        ..resource!("secretstores", "secretstores", "secretstore", "SecretStore",
            "secret-injector.io", "v1alpha1", namespaced: true, status: true, generation: true)
    },
    ResourceInfo {
        custom: true,
        ..resource!("clustersecretstores", "clustersecretstores", "clustersecretstore",
            "ClusterSecretStore", "secret-injector.io", "v1alpha1",
            namespaced: false, status: true, generation: true)
    },
    resource!("mutatingwebhookconfigurations", "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration", "MutatingWebhookConfiguration",
        "admissionregistration.k8s.io", "v1", namespaced: false, status: false, generation: true),
    resource!("validatingwebhookconfigurations", "validatingwebhookconfigurations",
        "validatingwebhookconfiguration", "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io", "v1", namespaced: false, status: false, generation: true),
    resource!("nodes", "nodes", "node", "Node", "", "v1",
        namespaced: false, status: true, generation: false),
    resource!("services", "services", "service", "Service", "", "v1",
        namespaced: true, status: true, generation: false),
    ResourceInfo {
        virtual_only: true,
        ..resource!("tokenreviews", "tokenreviews", "tokenreview", "TokenReview",
            "authentication.k8s.io", "v1", namespaced: false, status: false, generation: false)
    },
];

/// Look a resource up by its id (`secrets`, `events.events.k8s.io`) or `plural.group`.
fn find_resource(name: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.id == name)
        .or_else(|| RESOURCES.iter().find(|r| r.qualified_resource() == name))
}

/// Like `find_resource`, for test helpers: an unknown name is a bug in the test.
pub(crate) fn res(name: &str) -> &'static ResourceInfo {
    find_resource(name).unwrap_or_else(|| panic!("the stand-in does not serve resource {name:?}"))
}

pub(crate) fn resource_for_path(
    group: &str,
    version: &str,
    plural: &str,
) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub(crate) fn resource_for_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind && !r.virtual_only)
}
