//! Printing the report: the exit code, `-o json` and the human-readable text.

use super::report::{Outcome, Report, StoreCheck, WorkloadReport};
use super::{EXIT_DENIED, EXIT_OK};

impl Report {
    pub fn exit_code(&self) -> i32 {
        if self.summary.denied > 0 || self.summary.invalid_stores > 0 {
            EXIT_DENIED
        } else {
            EXIT_OK
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("the report serialises");
        s.push('\n');
        s
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for w in &self.workloads {
            text_workload(&mut out, w);
            out.push('\n');
        }
        if let Some(stores) = &self.stores {
            for s in stores {
                let ns = s
                    .namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default();
                let verdict = if s.denial.is_some() {
                    "INVALID"
                } else {
                    "valid"
                };
                out.push_str(&format!(
                    "{verdict}  {} {ns}{}  ({}, document {})\n",
                    s.kind, s.name, s.file, s.document
                ));
                if let Some(d) = &s.denial {
                    out.push_str(&format!("  denied: {d}\n"));
                }
                for w in &s.warnings {
                    out.push_str(&format!("  warning: {w}\n"));
                }
            }
            if !stores.is_empty() {
                out.push('\n');
            }
        }
        for s in &self.skipped {
            out.push_str(&format!(
                "skipped  {} {}  ({}, document {}): {}\n",
                s.kind, s.name, s.file, s.document, s.reason
            ));
        }
        let m = &self.summary;
        out.push_str(&format!(
            "{} workload{}: {} injected, {} denied, {} not injected",
            m.workloads,
            if m.workloads == 1 { "" } else { "s" },
            m.injected,
            m.denied,
            m.not_injected
        ));
        if self.stores.is_some() {
            out.push_str(&format!("; {} invalid store(s)", m.invalid_stores));
        }
        out.push('\n');
        out
    }
}

fn text_workload(out: &mut String, w: &WorkloadReport) {
    let verdict = match w.result {
        Outcome::Injected => "INJECT",
        Outcome::Denied => "DENIED",
        Outcome::NotInjected => "SKIP  ",
    };
    out.push_str(&format!(
        "{verdict}  {} {}/{}  ({}, document {})\n",
        w.kind, w.namespace, w.name, w.file, w.document
    ));
    if let Some(d) = &w.denial {
        out.push_str(&format!("  denied: {d}\n"));
    }
    if let Some(r) = &w.reason {
        out.push_str(&format!("  not injected: {r}\n"));
    }
    if w.result == Outcome::Injected {
        out.push_str(&format!("  service account: {}\n", w.service_account));
    }
    for s in &w.secrets {
        out.push_str(&format!("  managed Secret {}  ({})\n", s.name, s.origin));
        let check = match s.store_check {
            StoreCheck::Unchecked => " (not checked: no --stores)",
            StoreCheck::Found => " (found, valid)",
            StoreCheck::Undecided => " (found; namespace conditions undecided, see notes)",
        };
        out.push_str(&format!("    store:            {}{check}\n", s.store));
        let interval = if s.refresh_interval == "0" {
            "0 (fetched once)".to_string()
        } else {
            s.refresh_interval.clone()
        };
        out.push_str(&format!("    refresh interval: {interval}\n"));
        out.push_str(&format!("    rollout:          {}\n", s.rollout));
        if !s.data.is_empty() {
            out.push_str("    keys:\n");
            let width = s.data.iter().map(|d| d.secret_key.len()).max().unwrap_or(0);
            for d in &s.data {
                out.push_str(&format!(
                    "      {:width$}  <- {}\n",
                    d.secret_key, d.remote_ref
                ));
            }
        }
        for e in &s.extract {
            out.push_str(&format!(
                "    extract:          every top-level key of {e}\n"
            ));
        }
        let mut how = Vec::new();
        if !s.inject.env.is_empty() {
            how.push(format!("env {}", s.inject.env.join(", ")));
        }
        if s.inject.env_from {
            how.push("envFrom (every key)".to_string());
        }
        if let Some(f) = &s.inject.files {
            match &f.keys {
                Some(keys) => how.push(format!("files {} under {}", keys.join(", "), f.mount_path)),
                None => how.push(format!("every key as a file under {}", f.mount_path)),
            }
        }
        out.push_str(&format!("    injected as:      {}\n", how.join("; ")));
        if let Some(c) = &s.containers {
            out.push_str(&format!("    containers:       {}\n", c.join(", ")));
        }
    }
    if w.result == Outcome::Injected {
        let patch = serde_json::to_string_pretty(&w.patch).expect("a patch serialises");
        out.push_str("  patch:\n");
        for line in patch.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    for warning in &w.warnings {
        out.push_str(&format!("  warning: {warning}\n"));
    }
    for note in &w.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
}
