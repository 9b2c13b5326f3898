//! Finding the interface to capture on, and what can go wrong opening it: the messages say
//! what to do.

use std::os::fd::{AsFd, OwnedFd};

use pnet_datalink::NetworkInterface;

use super::bpf::Program;
use super::socket;

/// Why the interface cannot be captured on. The messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No interface has that name.
    #[error("interface {name:?} does not exist (interfaces here: {})", available.join(", "))]
    NoInterface {
        /// The name asked for.
        name: String,
        /// The interfaces there are.
        available: Vec<String>,
    },
    /// The process may not open raw sockets.
    #[error(
        "capturing on {interface} needs the CAP_NET_RAW capability, which this process lacks: run as root, or grant it to the binary (`setcap cap_net_raw+ep $(command -v otwatch-agent)`), or to the service (`AmbientCapabilities=CAP_NET_RAW` in its systemd unit)"
    )]
    Permission {
        /// The interface.
        interface: String,
    },
    /// Anything else the kernel refused.
    #[error("capturing on {interface}: {what}: {source}")]
    Os {
        /// The interface.
        interface: String,
        /// The step that failed.
        what: &'static str,
        /// The kernel's reason.
        source: std::io::Error,
    },
}

/// The interface named `name`.
pub fn find(name: &str) -> Result<NetworkInterface, OpenError> {
    let interfaces = pnet_datalink::interfaces();
    interfaces
        .iter()
        .find(|i| i.name == name)
        .cloned()
        .ok_or_else(|| OpenError::NoInterface {
            name: name.to_string(),
            available: interfaces.into_iter().map(|i| i.name).collect(),
        })
}

/// An `AF_PACKET` socket for capturing on `interface`, or why not.
pub fn open_socket(interface: &str) -> Result<OwnedFd, OpenError> {
    socket::open_packet_socket().map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            OpenError::Permission {
                interface: interface.to_string(),
            }
        } else {
            os_error(interface, "socket")(e)
        }
    })
}

/// Turns the kernel's refusal of step `what` into an [`OpenError`].
pub fn os_error(interface: &str, what: &'static str) -> impl FnOnce(std::io::Error) -> OpenError {
    let interface = interface.to_string();
    move |source| OpenError::Os {
        interface,
        what,
        source,
    }
}

/// Makes the socket ignore frames this host sends when so configured, else only on loopback
/// (where every frame is both sent and received, and would be seen twice); says whether it does.
pub fn ignore_outgoing(
    fd: &OwnedFd,
    setting: Option<bool>,
    interface: &NetworkInterface,
) -> Result<bool, OpenError> {
    let ignore = setting.unwrap_or_else(|| interface.is_loopback());
    if ignore {
        socket::ignore_outgoing(fd.as_fd())
            .map_err(os_error(&interface.name, "PACKET_IGNORE_OUTGOING"))?;
    }
    Ok(ignore)
}

/// How a socket captures, for the start-up line: "promiscuous, ignoring outgoing frames,
/// filter tcp or udp".
pub fn describe_mode(promiscuous: bool, ignore_outgoing: bool, filter: &Program) -> String {
    format!(
        "{}{}, filter {}",
        if promiscuous {
            "promiscuous"
        } else {
            "not promiscuous"
        },
        if ignore_outgoing {
            ", ignoring outgoing frames"
        } else {
            ""
        },
        if *filter == Program::tcp_or_udp() {
            "tcp or udp".to_string()
        } else {
            format!("of {} instructions", filter.instructions().len())
        }
    )
}
