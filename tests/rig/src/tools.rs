//! Finding the backend binaries `make tools` installs, and free loopback ports.

use std::path::{Path, PathBuf};

/// The repository root (this crate is `tests/rig/` in it), where `make tools` puts `.venv`.
const REPOSITORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `$<env_var>`, else `.venv/bin/<name>` in the repository, else `$PATH`.
pub fn find_tool(env_var: &str, name: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(env_var) {
        let bin = PathBuf::from(bin);
        assert!(
            is_executable(&bin),
            "{env_var}={} is not an executable file; run `make tools` or fix {env_var}",
            bin.display()
        );
        return bin;
    }
    let venv = Path::new(REPOSITORY).join(".venv/bin").join(name);
    if is_executable(&venv) {
        return venv;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    panic!(
        "`{name}` not found (looked at ${env_var}, {}, and $PATH); run `make tools`",
        venv.display()
    );
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A port nothing listens on right now (the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local_addr")
        .port()
}
