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

use rustix::process::{Gid, Uid, getegid, geteuid, getgid, getuid};
use rustix::thread::{set_thread_res_gid, set_thread_res_uid};

/// Acting as a data folder's owner until dropped (a no-op unless root ran the command on a
/// folder root does not own).
#[derive(Debug)]
#[must_use = "the switch ends when this is dropped"]
pub struct AsOwner {
    /// The ids to return to, when they were switched.
    before: Option<(Uid, Gid)>,
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
        let before = (geteuid(), getegid());
        // Group first, while still allowed to; the real and saved ids stay as they were.
        set_thread_res_gid(getgid(), gid, before.1)?;
        if let Err(e) = set_thread_res_uid(getuid(), uid, before.0) {
            let _ = set_thread_res_gid(getgid(), before.1, before.1);
            return Err(e.into());
        }
        tracing::debug!(
            uid = meta.uid(),
            gid = meta.gid(),
            "acting as the data folder's owner"
        );
        Ok(Self {
            before: Some(before),
        })
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.before.take() {
            // The user first (the saved id allows it), then the group.
            let back = set_thread_res_uid(getuid(), uid, uid)
                .and_then(|()| set_thread_res_gid(getgid(), gid, gid));
            if let Err(e) = back {
                tracing::error!("could not return to the command's own user: {e}");
            }
        }
    }
}
