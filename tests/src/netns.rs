//! Network namespaces for live-capture tests: a "plant" namespace joined to the test's own by
//! a veth pair, made with `ip` and removed when dropped. Needs root (CI runs as root); tests
//! call [`root_or_skip`] first and say why they skip elsewhere.

use std::process::Command;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// `true` if the test may go on; otherwise prints that `test` is skipped and why.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: live capture and network namespaces need root (CAP_NET_RAW, CAP_NET_ADMIN); CI runs it as root"
    );
    false
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A namespace holding one end of a veth pair; the other end stays in the test's namespace.
#[derive(Debug)]
pub struct Plant {
    /// The namespace's name.
    pub ns: String,
    /// The veth end in the test's namespace, where the agent captures.
    pub outside: String,
}

impl Plant {
    /// Makes the namespace and the pair: `outside_addrs` on the outside end, `inside_addrs` on
    /// the inside end (each "a.b.c.d/len"), both up.
    pub fn create(outside_addrs: &[&str], inside_addrs: &[&str]) -> Result<Self, String> {
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
        let id = (std::process::id() % 10_000) * 10 + made;
        let plant = Self {
            ns: format!("otw-plant-{id}"),
            outside: format!("otwo{id}"),
        };
        let inside = format!("otwi{id}");
        ip(&["netns", "add", &plant.ns])?;
        ip(&[
            "link",
            "add",
            &plant.outside,
            "type",
            "veth",
            "peer",
            "name",
            &inside,
        ])?;
        ip(&["link", "set", &inside, "netns", &plant.ns])?;
        for a in outside_addrs {
            ip(&["addr", "add", a, "dev", &plant.outside])?;
        }
        ip(&["link", "set", &plant.outside, "up"])?;
        for a in inside_addrs {
            ip(&["-n", &plant.ns, "addr", "add", a, "dev", &inside])?;
        }
        ip(&["-n", &plant.ns, "link", "set", &inside, "up"])?;
        ip(&["-n", &plant.ns, "link", "set", "lo", "up"])?;
        Ok(plant)
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }
}

impl Drop for Plant {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.outside]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
