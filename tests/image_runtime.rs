//! The release binary run the way the image and the Deployment run it: as UID/GID 65532 with
//! no supplementary groups, no capabilities and no_new_privs, on a read-only root filesystem,
//! with a HOME that does not exist. It must become ready against a Kubernetes API (the test
//! suite's stand-in) and answer the Deployment's probes on the admin port.
//!
//! What this cannot cover: no container engine exists on the machines this runs on, so the
//! image itself (the Dockerfile's build, distroless's files, the kubelet's mounts) is not built
//! or run. The sandbox is `unshare --mount` + a read-only bind remount of `/` (and of the mount
//! holding the test's files) + `setpriv`, which needs root; /dev/shm stays writable, as it is in
//! a pod.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

#[tokio::test(flavor = "multi_thread")]
async fn release_binary_is_ready_as_uid_65532_on_a_read_only_root_filesystem() {
    assert!(
        is_root(),
        "this test needs root: `unshare --mount` (CAP_SYS_ADMIN) builds the read-only root and \
         `setpriv --reuid` (CAP_SETUID) switches to UID 65532; run it as root (CI does)"
    );
    let bin = release_binary();
    let deployment = deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let uid = pod["securityContext"]["runAsUser"].as_u64().unwrap();
    let gid = pod["securityContext"]["runAsGroup"].as_u64().unwrap();
    assert_eq!((uid, gid), (65532, 65532), "the image's nonroot user");
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    // The one use of the test suite's API stand-in.
    let standin = k8s_standin::StandIn::start().await;

    // Files as the kubelet mounts Secrets: root-owned, group = fsGroup (65532), mode 0440.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pair =
        secret_injector::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
            .unwrap();
    let secret_file = |name: &str, bytes: &[u8]| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        std::os::unix::fs::chown(&path, Some(0), Some(gid as u32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        path
    };
    let cert = secret_file("tls.crt", pair.cert_pem.as_bytes());
    let key = secret_file("tls.key", pair.key_pem.as_bytes());
    let hmac = secret_file("hmac.key", b"0123456789abcdef0123456789abcdef-image-test");
    let kubeconfig = dir.path().join("kubeconfig");
    standin.write_kubeconfig(&kubeconfig);
    secret_file("kubeconfig", &std::fs::read(&kubeconfig).unwrap());
    let log = dir.path().join("webhook.log");

    let (port, admin) = (test_rig::tools::free_port(), test_rig::tools::free_port());
    let privileges = format!(
        "--reuid={uid} --regid={gid} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all"
    );
    // In a private mount namespace: make `/` and the mount holding our files read-only, prove
    // that even root cannot write there any more, then drop to the image's user and exec.
    let script = format!(
        r#"set -eu
mount -o remount,bind,ro /
m=$(stat -c %m "$DIR"); [ "$m" = / ] || mount -o remount,bind,ro "$m"
for probe in /ro-probe "$DIR/ro-probe" /tmp/ro-probe; do
  if touch "$probe" 2>/dev/null; then echo "sandbox: $probe is writable" >&2; exit 97; fi
done
exec setpriv {privileges} -- "$@""#
    );
    let mut child = tokio::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(&script)
        .arg("sandbox")
        .arg(&bin)
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--hmac-key-file")
        .arg(&hmac)
        .env_clear()
        .env("DIR", dir.path())
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/nonexistent")
        .env("KUBECONFIG", &kubeconfig)
        .env("SECRET_INJECTOR_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning unshare");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{admin}");
    let probe_path = |probe: &str| {
        container[probe]["httpGet"]["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let readiness = probe_path("readinessProbe");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the binary exited ({status}) in the sandbox; log:\n{}",
                logs()
            );
        }
        let ready = client.get(format!("{base}{readiness}")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{readiness} not 200 after 30s; log:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // It really is the release binary, as 65532, on a read-only root.
    let pid = child.id().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid:"), vec![uid.to_string(); 4]);
    assert_eq!(ids("Gid:"), vec![gid.to_string(); 4]);
    assert!(ids("Groups:").is_empty(), "no supplementary groups");
    assert_eq!(ids("CapEff:"), vec!["0000000000000000"]);
    assert_eq!(ids("NoNewPrivs:"), vec!["1"]);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        bin.canonicalize().unwrap()
    );
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap();
    assert!(
        root.split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "root mounted read-only: {root}"
    );

    // Both probes answer 200, as the kubelet would ask them.
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = probe_path(probe);
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{probe} {path}");
    }
    // The HTTPS listener works with the read-only mounted pair.
    let ca = reqwest::Certificate::from_pem(pair.ca_pem.as_bytes()).unwrap();
    let tls = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = tls
        .post(format!("https://127.0.0.1:{port}/mutate"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("HTTPS from the sandboxed binary");
    assert!(r.status().is_success() || r.status().is_client_error());

    // Every metric the shipped alerts and dashboard use is one the binary exports.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // A family with no samples yet (e.g. the refresher's, before any refresh) prints nothing,
    // so names registered in src/ (`.register("name", …)` under the `secret_injector` prefix)
    // count too.
    let registered = registered_metrics(&Path::new(REPO).join("src"));
    let exported: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .chain(registered.iter().map(String::as_str))
        .collect();
    for file in [
        "deploy/components/monitoring/prometheusrule.yaml",
        "deploy/components/monitoring/dashboard.json",
    ] {
        for name in metric_names(&std::fs::read_to_string(Path::new(REPO).join(file)).unwrap()) {
            let known = exported.contains(&name.as_str())
                || ["_total", "_bucket", "_sum", "_count"].iter().any(|s| {
                    name.strip_suffix(s)
                        .is_some_and(|base| exported.contains(&base))
                });
            assert!(
                known,
                "{file} uses {name}, which the binary does not export:\n{metrics}"
            );
        }
    }

    let text = logs();
    for complaint in ["Read-only file system", "Permission denied"] {
        assert!(!text.contains(complaint), "{complaint} in the log:\n{text}");
    }
    child.kill().await.unwrap();
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

/// `<target>/release/secret-injector`. `make test` builds it first (`cargo build --release`);
/// the test does not build it itself: a nested cargo inherits the test's environment, which
/// changes build-script fingerprints and rebuilds half the release tree every time.
fn release_binary() -> PathBuf {
    let debug = PathBuf::from(env!("CARGO_BIN_EXE_secret-injector"));
    let release = debug
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("release/secret-injector");
    assert!(
        release.is_file(),
        "{} is missing: run `cargo build --release --locked` first (`make test` does)",
        release.display()
    );
    // A release binary older than the sources still shows the runtime conditions, but say so.
    let built = std::fs::metadata(&release).unwrap().modified().unwrap();
    if newest_source(&Path::new(REPO).join("src")) > built {
        eprintln!(
            "warning: {} is older than src/; `make test` rebuilds it",
            release.display()
        );
    }
    release
}

fn newest_source(dir: &Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let time = if path.is_dir() {
            newest_source(&path)
        } else {
            std::fs::metadata(&path).unwrap().modified().unwrap()
        };
        newest = newest.max(time);
    }
    newest
}

fn deployment() -> Value {
    let text = std::fs::read_to_string(format!("{REPO}/deploy/base/deployment.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn registered_metrics(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            names.extend(registered_metrics(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for part in text.split(".register(").skip(1) {
                let part = part.trim_start();
                if let Some(rest) = part.strip_prefix('"') {
                    let name = &rest[..rest.find('"').unwrap()];
                    names.push(format!("secret_injector_{name}"));
                }
            }
        }
    }
    names
}

fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("secret_injector_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names.sort();
    names.dedup();
    names
}
