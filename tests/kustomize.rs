//! deploy/ and certs/ the way `kubectl apply -k` sees them: every overlay and component renders
//! with plain `kubectl kustomize` (no `--load-restrictor`), every rendered object parses as its
//! type, and the pieces agree with each other, with the binary's flags and with the README.
//!
//! Everything renders in a temporary copy of deploy/, certs/, Makefile and README.md, with
//! keys generated there, so a developer's own certs/*/generated/ is never read or written.

mod deploy_support;

use std::collections::{BTreeMap, BTreeSet};

use deploy_support::*;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::Value;

#[test]
fn every_overlay_and_component_renders_and_parses_as_its_type() {
    let co = Checkout::with_keys();
    let mut rendered = BTreeMap::new();
    for dir in ["deploy/base", "deploy", "deploy/overlays/cert-manager"] {
        rendered.insert(dir.to_string(), co.render(dir));
    }
    // Components cannot be built alone: enable each the way the install's kustomization.yaml
    // says (uncomment its line), in both installs.
    for install in ["deploy", "deploy/overlays/cert-manager"] {
        for component in ["monitoring", "network-policy"] {
            let objects = co.render_with_components(install, &[component]);
            rendered.insert(format!("{install} + {component}"), objects);
        }
    }
    let all = "deploy + monitoring + network-policy".to_string();
    rendered.insert(
        all.clone(),
        co.render_with_components("deploy", &["monitoring", "network-policy"]),
    );

    for (dir, objects) in &rendered {
        assert!(!objects.is_empty(), "{dir} rendered nothing");
        for object in objects {
            check_type(object).unwrap_or_else(|e| panic!("{dir}: {e}"));
        }
        // Namespaced objects all land in the webhook's namespace (components included).
        for object in objects.iter().filter(|o| !is_cluster_scoped(o)) {
            assert_eq!(
                object["metadata"]["namespace"], "secret-injector",
                "{dir}: {} {} has no namespace",
                object["kind"], object["metadata"]["name"]
            );
        }
    }
    let kinds = |dir: &str| -> BTreeSet<String> {
        rendered[dir]
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .collect()
    };
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Secret",
    ] {
        assert!(kinds("deploy").contains(kind), "deploy/ lacks {kind}");
        assert!(
            kinds("deploy/overlays/cert-manager").contains(kind),
            "cert-manager overlay lacks {kind}"
        );
    }
    assert!(kinds("deploy/overlays/cert-manager").contains("Certificate"));
    assert!(kinds(&all).is_superset(&BTreeSet::from([
        "ServiceMonitor".to_string(),
        "PrometheusRule".to_string(),
        "ConfigMap".to_string(),
        "NetworkPolicy".to_string()
    ])));
    // The base alone has neither keys nor a CA: it is not an install on its own.
    assert!(!kinds("deploy/base").contains("Secret"));
}

#[test]
fn the_type_check_catches_misspelt_and_misplaced_fields() {
    let co = Checkout::with_keys();
    let objects = co.render("deploy");
    let deployment = find(&objects, "Deployment", "secret-injector").clone();
    assert!(check_type(&deployment).is_ok());
    let mut misspelt = deployment.clone();
    misspelt["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 30.into();
    let error = check_type(&misspelt).unwrap_err();
    assert!(error.contains("terminationGracePeriodSecond"), "{error}");
    let mut misplaced = deployment;
    misplaced["spec"]["template"]["spec"]["containers"][0]["preStop"] = Value::Null;
    assert!(check_type(&misplaced).is_err());
    let mut certificate: Value = serde_json::json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "x"}, "spec": {"secretName": "x"}});
    assert!(check_type(&certificate).unwrap_err().contains("issuerRef"));
    certificate["spec"]["issuerRef"] = serde_json::json!({"name": "ca"});
    assert!(check_type(&certificate).is_ok());
}

#[test]
fn self_signed_install_trusts_the_ca_that_make_certs_generated() {
    let co = Checkout::with_keys();
    let objects = co.render("deploy");
    let ca = std::fs::read(co.path().join("certs/self-signed/generated/ca.crt")).unwrap();
    let tls: Secret = typed(find(&objects, "Secret", "secret-injector-tls"));
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = tls.data.unwrap();
    assert_eq!(data["ca.crt"].0, ca);
    assert!(String::from_utf8_lossy(&data["tls.crt"].0).contains("BEGIN CERTIFICATE"));
    assert!(String::from_utf8_lossy(&data["tls.key"].0).contains("PRIVATE KEY"));
    let hmac: Secret = typed(find(&objects, "Secret", "secret-injector-hmac"));
    assert!(
        hmac.data.unwrap()["key"].0.len() >= 32,
        "HMAC key too short"
    );

    let mutating: MutatingWebhookConfiguration = typed(find(
        &objects,
        "MutatingWebhookConfiguration",
        "secret-injector",
    ));
    let validating: ValidatingWebhookConfiguration = typed(find(
        &objects,
        "ValidatingWebhookConfiguration",
        "secret-injector",
    ));
    let bundles: Vec<Vec<u8>> = mutating
        .webhooks
        .unwrap()
        .into_iter()
        .map(|w| w.client_config.ca_bundle.expect("caBundle").0)
        .chain(
            validating
                .webhooks
                .unwrap()
                .into_iter()
                .map(|w| w.client_config.ca_bundle.expect("caBundle").0),
        )
        .collect();
    assert_eq!(bundles.len(), 2);
    for bundle in bundles {
        assert_eq!(bundle, ca, "caBundle is the generated CA");
    }
    assert_tls_mounts_secret(&objects, "secret-injector-tls");
}

#[test]
fn cert_manager_install_injects_the_ca_of_the_rendered_certificate() {
    let co = Checkout::with_keys();
    let objects = co.render("deploy/overlays/cert-manager");
    let certificates: Vec<Certificate> = all_of(&objects, "Certificate");
    let issuers: Vec<Issuer> = all_of(&objects, "Issuer");

    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = find(&objects, kind, "secret-injector");
        let from = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind} lacks cert-manager.io/inject-ca-from"));
        let (ns, name) = from.split_once('/').expect("<namespace>/<certificate>");
        let cert = certificates
            .iter()
            .find(|c| c.metadata.name == name && c.metadata.namespace.as_deref() == Some(ns))
            .unwrap_or_else(|| panic!("{kind} injects from {from}: no such Certificate"));
        // The cainjector owns caBundle: a rendered value would fight it on every apply.
        for hook in config["webhooks"].as_array().unwrap() {
            assert!(hook["clientConfig"].get("caBundle").is_none(), "{kind}");
            // The certificate names the Service the API server calls.
            let svc = &hook["clientConfig"]["service"];
            let dns = format!("{}.{}.svc", svc["name"].as_str().unwrap(), svc["namespace"]);
            let dns = dns.replace('"', "");
            assert!(cert.spec.dns_names.contains(&dns), "{name} lacks {dns}");
        }
        assert!(cert.spec.usages.iter().any(|u| u == "server auth"));
        // The serving certificate is what the Deployment mounts.
        assert_tls_mounts_secret(&objects, &cert.spec.secret_name);
        // Its issuer is a CA Issuer whose CA is a rendered Certificate issued by a self-signed
        // Issuer: the whole chain ships with the overlay.
        let issuer = issuers
            .iter()
            .find(|i| i.metadata.name == cert.spec.issuer_ref.name)
            .expect("the serving certificate's Issuer is rendered");
        let ca_secret = &issuer.spec.ca.as_ref().expect("a CA Issuer").secret_name;
        let ca = certificates
            .iter()
            .find(|c| &c.spec.secret_name == ca_secret)
            .expect("the CA Issuer's Secret comes from a rendered Certificate");
        assert!(ca.spec.is_ca);
        let root = issuers
            .iter()
            .find(|i| i.metadata.name == ca.spec.issuer_ref.name)
            .expect("the CA's Issuer is rendered");
        assert!(root.spec.self_signed.is_some());
    }
    // No generated TLS Secret competes with cert-manager's; the HMAC key is still generated.
    assert!(try_find(&objects, "Secret", "secret-injector-tls").is_none());
    let hmac: Secret = typed(find(&objects, "Secret", "secret-injector-hmac"));
    assert!(hmac.data.unwrap()["key"].0.len() >= 32);
}

#[test]
fn deployment_matches_the_binary_flags_and_the_image() {
    let co = Checkout::with_keys();
    let objects = co.render("deploy");
    let deployment: Deployment = typed(find(&objects, "Deployment", "secret-injector"));
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let help = Help::of(&["serve", "--help"]);

    // Every argument is a flag `serve` has; every SECRET_INJECTOR_* variable is one it reads.
    let args = container.args.clone().unwrap();
    assert_eq!(args[0], "serve");
    let mut values = BTreeMap::new();
    for pair in args[1..].chunks(2) {
        let flag = pair[0].strip_prefix("--").expect("--flag value pairs");
        assert!(help.flags.contains(flag), "serve has no --{flag}");
        values.insert(flag.to_string(), pair[1].clone());
    }
    for env in container.env.iter().flatten() {
        if env.name.starts_with("SECRET_INJECTOR_") {
            assert!(help.envs.contains(&env.name), "serve reads no {}", env.name);
        }
    }
    // Listen ports are the named container ports the Service and the probes use.
    let port = |name: &str| {
        container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no container port {name}"))
            .container_port
    };
    let listen_port = |flag: &str| -> i32 {
        let value = values
            .get(flag)
            .cloned()
            .unwrap_or_else(|| help.default(flag));
        value.rsplit(':').next().unwrap().parse().unwrap()
    };
    assert_eq!(listen_port("listen"), port("https"));
    assert_eq!(listen_port("admin-listen"), port("admin"));
    // Probes hit the admin port on the paths `serve` documents for it.
    let admin_help = help.text_of("admin-listen");
    for (probe, path) in [
        (&container.readiness_probe, "/readyz"),
        (&container.liveness_probe, "/healthz"),
    ] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("admin".into())
        );
        assert!(admin_help.contains(path), "--admin-listen: {admin_help}");
    }
    // The files the flags name are inside the mounted Secrets.
    let mounted = |path: &str| -> String {
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| path.starts_with(&format!("{}/", m.mount_path)))
            .unwrap_or_else(|| panic!("{path} is not under a volume mount"));
        assert_eq!(mount.read_only, Some(true));
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap();
        volume.secret.as_ref().unwrap().secret_name.clone().unwrap()
    };
    assert_eq!(mounted(&values["tls-cert"]), "secret-injector-tls");
    assert_eq!(mounted(&values["tls-key"]), "secret-injector-tls");
    let hmac_file = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SECRET_INJECTOR_HMAC_KEY_FILE")
        .and_then(|e| e.value.clone())
        .expect("the HMAC key file is configured");
    assert_eq!(mounted(&hmac_file), "secret-injector-hmac");

    // The image's user is the pod's user; the container cannot write or escalate.
    let pod_sc = pod.security_context.as_ref().unwrap();
    let sc = container.security_context.as_ref().unwrap();
    let (uid, gid) = dockerfile_user();
    assert_eq!(pod_sc.run_as_user, Some(uid));
    assert_eq!(pod_sc.run_as_group, Some(gid));
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_string()])
    );

    // Shutdown: a native preStop sleep (the image has no shell), and a grace period that
    // covers the sleep, the server's drain period (if the binary has one) and the longest
    // review the API server waits for (the mutating webhook's timeoutSeconds).
    let sleep = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .expect("lifecycle.preStop.sleep")
        .seconds;
    assert!(
        container
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap()
            .exec
            .is_none(),
        "no exec hook: the image has no shell"
    );
    assert!((3..=15).contains(&sleep), "preStop sleep {sleep}s");
    let mutating: MutatingWebhookConfiguration = typed(find(
        &objects,
        "MutatingWebhookConfiguration",
        "secret-injector",
    ));
    let timeout = mutating.webhooks.unwrap()[0].timeout_seconds.unwrap() as i64;
    let drain = help
        .flags
        .iter()
        .find(|f| f.contains("drain"))
        .and_then(|f| help.try_default(f))
        .map(|d| parse_seconds(&d))
        .unwrap_or(0);
    let grace = pod.termination_grace_period_seconds.unwrap();
    assert!(
        grace > sleep + drain + timeout,
        "terminationGracePeriodSeconds {grace} must exceed preStop {sleep} + drain {drain} + timeout {timeout}"
    );
    assert_eq!(container.image.as_deref(), Some(base_image().as_str()));
}

#[test]
fn image_is_set_in_one_place_and_propagates() {
    let co = Checkout::with_keys();
    // Only deploy/base/kustomization.yaml names the image; the Deployment has a placeholder.
    let configured = base_image();
    let repository = configured.split(':').next().unwrap().to_string();
    let mut naming = Vec::new();
    for file in yaml_files(&co.path().join("deploy")) {
        if std::fs::read_to_string(&file)
            .unwrap()
            .contains(&repository)
        {
            naming.push(file.strip_prefix(co.path()).unwrap().display().to_string());
        }
    }
    assert_eq!(naming, vec!["deploy/base/kustomization.yaml".to_string()]);

    for install in ["deploy", "deploy/overlays/cert-manager"] {
        let images = images_of(&co.render(install));
        assert_eq!(images, vec![configured.clone()], "{install}");
    }
    // Overridden in one place (an overlay's `images:`), it reaches every container.
    let dir = co.write_overlay(
        "custom-image",
        "resources:\n  - ../../deploy\nimages:\n  - name: ghcr.io/secret-injector/secret-injector\n    newName: registry.example.com/platform/secret-injector\n    newTag: 1.2.3\n",
    );
    assert_eq!(
        images_of(&co.render(&dir)),
        vec!["registry.example.com/platform/secret-injector:1.2.3".to_string()]
    );
    // `make image` builds the same name (the Makefile reads it from the kustomization).
    let dry = std::process::Command::new("make")
        .args(["-n", "image"])
        .current_dir(co.path())
        .output()
        .unwrap();
    let recipe = String::from_utf8_lossy(&dry.stdout);
    assert!(
        recipe.contains(&format!("build -t {configured} .")),
        "make image does not build {configured}:\n{recipe}"
    );
}

#[test]
fn monitoring_component_scrapes_the_service_and_ships_the_documented_alerts() {
    let co = Checkout::with_keys();
    let objects = co.render_with_components("deploy", &["monitoring"]);
    let service: Service = typed(find(&objects, "Service", "secret-injector"));
    let monitor: ServiceMonitor = all_of(&objects, "ServiceMonitor").remove(0);
    let labels = service.metadata.labels.clone().unwrap_or_default();
    for (k, v) in monitor
        .spec
        .selector
        .match_labels
        .clone()
        .unwrap_or_default()
    {
        assert_eq!(labels.get(&k), Some(&v), "ServiceMonitor selects {k}={v}");
    }
    let ports = service.spec.unwrap().ports.unwrap();
    for endpoint in &monitor.spec.endpoints {
        let port = endpoint.port.as_deref().expect("endpoint by port name");
        let svc_port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(port))
            .unwrap_or_else(|| panic!("the Service has no port {port}"));
        assert_eq!(
            svc_port.target_port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("admin".into())),
            "metrics come from the admin port"
        );
        assert_eq!(endpoint.path.as_deref(), Some("/metrics"));
    }

    let rule: PrometheusRule = all_of(&objects, "PrometheusRule").remove(0);
    let shipped: BTreeSet<String> = rule
        .spec
        .groups
        .iter()
        .flat_map(|g| g.rules.iter().filter_map(|r| r.alert.clone()))
        .collect();
    assert_eq!(
        shipped,
        documented_alerts(),
        "deploy/components/monitoring/prometheusrule.yaml and docs/refresher.md#alert-rules differ"
    );

    let dashboard: ConfigMap = typed(find(&objects, "ConfigMap", "secret-injector-dashboard"));
    assert_eq!(
        dashboard.metadata.labels.unwrap().get("grafana_dashboard"),
        Some(&"1".to_string())
    );
    let data = dashboard.data.unwrap();
    let json: Value = serde_json::from_str(data.values().next().unwrap()).unwrap();
    assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()));
    assert!(json["title"].as_str().is_some());
}

#[test]
fn network_policy_admits_only_the_control_plane_and_the_scraper() {
    let co = Checkout::with_keys();
    let objects = co.render_with_components("deploy", &["network-policy"]);
    let policy: NetworkPolicy = typed(find(&objects, "NetworkPolicy", "secret-injector"));
    let deployment: Deployment = typed(find(&objects, "Deployment", "secret-injector"));
    let pod_labels = deployment
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    let spec = policy.spec.unwrap();
    for (k, v) in spec.pod_selector.unwrap().match_labels.unwrap() {
        assert_eq!(pod_labels.get(&k), Some(&v), "selects the webhook pods");
    }
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    let rules = spec.ingress.unwrap();
    assert_eq!(rules.len(), 2);
    let port_of = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
        serde_json::to_value(&rule.ports.as_ref().unwrap()[0].port).unwrap()
    };
    let https = rules
        .iter()
        .find(|r| port_of(r) == "https")
        .expect("https rule");
    for peer in https.from.as_ref().unwrap() {
        assert!(
            peer.ip_block.is_some()
                && peer.pod_selector.is_none()
                && peer.namespace_selector.is_none(),
            "the webhook port admits addresses (the control plane), never pods"
        );
    }
    let admin = rules
        .iter()
        .find(|r| port_of(r) == "admin")
        .expect("admin rule");
    for peer in admin.from.as_ref().unwrap() {
        assert!(peer.namespace_selector.is_some() && peer.pod_selector.is_some());
    }
    let readme = std::fs::read_to_string(
        co.path()
            .join("deploy/components/network-policy/kustomization.yaml"),
    )
    .unwrap();
    assert!(readme.contains("EKS"), "the EKS caveat is written down");
}

#[test]
fn readme_installs_render_up_to_the_kustomize_step() {
    for (name, expect) in [
        ("self-signed", "Secret/secret-injector-tls"),
        ("cert-manager", "Certificate/secret-injector-tls"),
    ] {
        let co = Checkout::bare();
        let block = readme_block(name);
        let lines: Vec<&str> = block
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .collect();
        assert!(
            lines.len() <= 5,
            "{name}: a five-line install, got {lines:?}"
        );
        let objects = co.run_until_kustomize(&lines);
        let names: BTreeSet<String> = objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert!(names.contains(expect), "{name}: {names:?}");
        assert!(names.contains("Deployment/secret-injector"), "{name}");
    }
}

fn assert_tls_mounts_secret(objects: &[Value], secret: &str) {
    let deployment: Deployment = typed(find(objects, "Deployment", "secret-injector"));
    let volumes = deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .volumes
        .unwrap();
    let tls = volumes
        .iter()
        .find(|v| v.name == "tls")
        .expect("tls volume");
    assert_eq!(
        tls.secret.as_ref().unwrap().secret_name.as_deref(),
        Some(secret),
        "the Deployment mounts the serving certificate's Secret"
    );
}

fn images_of(objects: &[Value]) -> Vec<String> {
    let deployment: Deployment = typed(find(objects, "Deployment", "secret-injector"));
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    pod.containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .map(|c| c.image.clone().unwrap())
        .collect()
}

/// Alert names in the PrometheusRule of docs/refresher.md#alert-rules.
fn documented_alerts() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(format!("{REPO}/docs/refresher.md")).unwrap();
    let section = &doc[doc
        .find("## Alert rules")
        .expect("docs/refresher.md#alert-rules")..];
    let block = &section[section.find("```yaml").unwrap()..];
    let block = &block[..block[3..].find("```").unwrap()];
    block
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|a| a.trim().to_string())
        .collect()
}
