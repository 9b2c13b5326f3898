//! Commands that change a data folder (`init`, `enroll`, `revoke`, `rotate-cert`) run by root
//! on a folder that belongs to the service user, as the Debian package makes
//! `/var/lib/otwatch-collector`: they act as that user, so every file they create is the
//! service's own and `serve` can read it. Without this, an `enroll` run with sudo would leave a
//! root-owned credentials file the running collector cannot open.
//!
//! Only the effective ids change (the saved ones stay root), so the command becomes root again
//! afterwards, for writing files outside the folder (`enroll --out`). The ids are set on the
//! calling thread: the commands are single-threaded until they open the store, and threads the
//! store starts inherit them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::process::{Gid, Uid, getegid, geteuid, getgid, getgroups, getuid};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};

/// Acting as a data folder's owner until dropped (a no-op unless root ran the command on a
/// folder root does not own).
#[derive(Debug)]
#[must_use = "the switch ends when this is dropped"]
pub struct AsOwner {
    /// The ids and supplementary groups to return to, when they were switched.
    before: Option<(Uid, Gid, Vec<Gid>)>,
}

impl AsOwner {
    /// Starts acting as the owner of `folder`. Nothing changes when the caller is not root,
    /// when root owns the folder, or when it does not exist yet (`init` then creates it as
    /// the caller, as before packages).
    pub fn of(folder: &Path) -> std::io::Result<Self> {
        let meta = match std::fs::metadata(folder) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self { before: None });
            }
            Err(e) => return Err(e),
        };
        if !geteuid().is_root() || meta.uid() == 0 {
            return Ok(Self { before: None });
        }
        let (uid, gid) = (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()));
        let (euid, egid, groups) = (geteuid(), getegid(), getgroups()?);
        // Groups first, while still allowed to: root's supplementary groups go too, so the
        // command can do nothing the owner could not. The real and saved ids stay root's.
        set_thread_groups(&[gid])?;
        let switched = set_thread_res_gid(getgid(), gid, egid)
            .and_then(|()| set_thread_res_uid(getuid(), uid, euid));
        if let Err(e) = switched {
            restore(euid, egid, &groups);
            return Err(e.into());
        }
        tracing::debug!(
            uid = meta.uid(),
            gid = meta.gid(),
            "acting as the data folder's owner"
        );
        Ok(Self {
            before: Some((euid, egid, groups)),
        })
    }
}

/// Back to root's ids and groups; a process that cannot get back aborts rather than go on
/// with ids nobody chose.
fn restore(uid: Uid, gid: Gid, groups: &[Gid]) {
    // The user first (the saved id allows it), then the groups.
    let back = set_thread_res_uid(getuid(), uid, uid)
        .and_then(|()| set_thread_res_gid(getgid(), gid, gid))
        .and_then(|()| set_thread_groups(groups));
    if let Err(e) = back {
        tracing::error!("could not return to the command's own user: {e}");
        std::process::abort();
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        if let Some((uid, gid, groups)) = self.before.take() {
            restore(uid, gid, &groups);
        }
    }
}
