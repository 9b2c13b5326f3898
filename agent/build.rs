//! Build facts for `--version`: the commit the binary was built from and the build profile.
//! Shared by the agent and the collector (the collector's `Cargo.toml` points here), so both
//! binaries name their build the same way.
//!
//! The commit comes from `OTWATCH_COMMIT` when set (a build from a source tarball, or a
//! packaging script that knows it), else from git (`HEAD`, uncommitted changes not marked:
//! watching the index would rebuild both binaries at every `git add`), else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=OTWATCH_COMMIT");
    let commit = match std::env::var("OTWATCH_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => match git(&["rev-parse", "--short=12", "HEAD"]) {
            Some(hash) if !hash.is_empty() => hash,
            _ => "unknown".to_string(),
        },
    };
    // A new commit moves HEAD or its branch; rebuild the version string then. Only paths
    // that exist: cargo reruns a build script on every build for one that does not. A
    // worktree's HEAD is its own, its branches the repository's (the common folder).
    let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]);
    let paths = [
        git(&["rev-parse", "--absolute-git-dir"]).map(|d| format!("{d}/HEAD")),
        common.as_ref().map(|d| format!("{d}/refs/heads")),
        common.as_ref().map(|d| format!("{d}/packed-refs")),
    ];
    for path in paths.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=OTWATCH_COMMIT={commit}");
    println!("cargo:rustc-env=OTWATCH_PROFILE={profile}");
}
