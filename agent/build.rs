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
    // A new commit moves HEAD's branch; rebuild the version string then.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/refs/heads");
        println!("cargo:rerun-if-changed={dir}/packed-refs");
    }
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=OTWATCH_COMMIT={commit}");
    println!("cargo:rustc-env=OTWATCH_PROFILE={profile}");
}
