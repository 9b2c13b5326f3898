//! `enroll --agent NAME --out DIR`: the three files a packaged agent needs, ready to copy to
//! the sensor's `/etc/otwatch/agent/`: `agent.toml` (the example the agent package ships,
//! with this enrollment's name and collector URL), `agent.token` (the secret, mode 0600) and
//! `ca.pem` (the collector's certificate authority).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, bail};

/// The agent package's `/etc/otwatch/agent/agent.toml`.
const EXAMPLE: &str = include_str!("../../deploy/config/agent.toml");

/// The files written, in order.
const FILES: [&str; 3] = ["agent.toml", "agent.token", "ca.pem"];

/// Makes `out` ready for [`write`]: creates it (mode 0700) if missing, and refuses a folder
/// another user owns or others may write to (they could swap `ca.pem` before it is copied), or
/// one that already holds any of the files (an earlier enrollment's token is never
/// overwritten).
pub fn prepare(out: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out)
        .with_context(|| out.display().to_string())?;
    let meta = std::fs::symlink_metadata(out).with_context(|| out.display().to_string())?;
    if !meta.is_dir() {
        bail!(
            "{}: not a folder (expected a folder for --out)",
            out.display()
        );
    }
    if meta.uid() != rustix::process::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        bail!(
            "{}: owned by another user or writable by others (expected a folder of your own that only you may write to)",
            out.display()
        );
    }
    if let Some(there) = FILES.iter().map(|f| out.join(f)).find(|p| p.exists()) {
        bail!(
            "{}: already there (remove it or choose another --out)",
            there.display()
        );
    }
    Ok(())
}

/// Writes the three files into `out`, which [`prepare`] made ready (a file that appeared
/// since is not overwritten).
pub fn write(out: &Path, name: &str, url: &str, token: &str, ca: &Path) -> anyhow::Result<()> {
    let config = agent_toml(name, url)?;
    let ca_pem = std::fs::read(ca).with_context(|| ca.display().to_string())?;
    let token_line = format!("{token}\n");
    let contents: [(&[u8], u32); 3] = [
        (config.as_bytes(), 0o644),
        (token_line.as_bytes(), 0o600),
        (ca_pem.as_slice(), 0o644),
    ];
    for (file, (bytes, mode)) in FILES.iter().zip(contents) {
        let path = out.join(file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| path.display().to_string())?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| path.display().to_string())?;
    }
    Ok(())
}

/// The packaged example with `agent_name` and `collector_url` set.
fn agent_toml(name: &str, url: &str) -> anyhow::Result<String> {
    let quoted = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut replaced = 0;
    let mut text = String::with_capacity(EXAMPLE.len() + 64);
    for line in EXAMPLE.lines() {
        if line.starts_with("agent_name = ") {
            text.push_str(&format!("agent_name = {}", quoted(name)));
            replaced += 1;
        } else if line.starts_with("collector_url = ") {
            text.push_str(&format!("collector_url = {}", quoted(url)));
            replaced += 1;
        } else {
            text.push_str(line);
        }
        text.push('\n');
    }
    if replaced != 2 {
        bail!("the embedded agent.toml example lacks agent_name or collector_url");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_agent_toml_is_the_example_with_this_enrollment_and_the_packaged_paths() {
        let text = agent_toml("hall-1", "https://c.plant:8443/\"x").unwrap();
        assert!(text.contains("agent_name = \"hall-1\"\n"), "{text}");
        assert!(text.contains("collector_token_file = \"/etc/otwatch/agent/agent.token\""));
        assert!(text.contains("collector_ca = \"/etc/otwatch/agent/ca.pem\""));
        assert!(text.contains("interface = "));
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["agent_name"].as_str(), Some("hall-1"));
        // A quote in the URL stays inside its string.
        assert_eq!(
            parsed["collector_url"].as_str(),
            Some("https://c.plant:8443/\"x")
        );
    }
}
