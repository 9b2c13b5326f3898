//! The `otwatch-collector` command line: `init` makes a data folder once, `enroll` needs one
//! and prints the lines an agent needs, `serve` refuses a folder that was never initialised.
//! (Being an integration test of this package, it also makes `cargo test --workspace` build
//! the binary that the end-to-end tests in `tests/` run.)
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::process::{Command, Output};

fn collector(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_otwatch-collector"))
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn init_creates_the_authority_certificate_and_an_admin_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let out = collector(&["init", "--name", "collector.plant.example"], &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("admin token (shown once): otw_"),
        "{stdout}"
    );
    assert!(stdout.contains("collector.plant.example"), "{stdout}");
    for file in ["ca.pem", "server.pem", "credentials.json"] {
        assert!(data.join(file).exists(), "{file}");
    }
    let again = collector(&["init"], &data);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("already initialised"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn enrolling_an_agent_prints_the_lines_for_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    assert!(collector(&["init"], &data).status.success());
    let out = collector(
        &["enroll", "--agent", "hall-1", "--url", "https://c:8443"],
        &data,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "agent_name = \"hall-1\"",
        "collector_url = \"https://c:8443\"",
        "collector_token = \"otw_",
        "collector_ca = \"",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }
    let twice = collector(&["enroll", "--agent", "hall-1"], &data);
    assert_eq!(twice.status.code(), Some(2));
    assert!(
        text(&twice.stderr).contains("already enrolled"),
        "{}",
        text(&twice.stderr)
    );
}

#[test]
fn enroll_and_serve_refuse_a_folder_that_was_never_initialised() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["enroll", "--viewer", "soc"][..], &["serve"][..]] {
        let out = collector(args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("run otwatch-collector init first"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn enroll_refuses_a_name_with_quotes_newlines_or_nothing_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    assert!(collector(&["init"], &data).status.success());
    for bad in ["", "hall\"1", "hall\n1", "hall 1"] {
        let out = collector(&["enroll", "--agent", bad], &data);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            text(&out.stderr).contains("expected an agent name"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = collector(&["enroll", "--agent", "hall-1.line_2"], &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn init_makes_the_data_folder_its_owners_alone_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    assert!(collector(&["init"], &data).status.success());
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
}

#[test]
fn enrolling_an_agent_with_out_writes_its_agent_toml_token_and_ca_ready_to_copy() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    assert!(collector(&["init"], &data).status.success());
    let out_dir = dir.path().join("hall-1");
    let out = collector(
        &[
            "enroll",
            "--agent",
            "hall-1",
            "--url",
            "https://c:8443",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &data,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = std::fs::read_to_string(out_dir.join("agent.toml")).unwrap();
    assert!(config.contains("agent_name = \"hall-1\"\n"), "{config}");
    assert!(
        config.contains("collector_url = \"https://c:8443\"\n"),
        "{config}"
    );
    let token = std::fs::read_to_string(out_dir.join("agent.token")).unwrap();
    assert!(token.starts_with("otw_") && text(&out.stdout).contains(token.trim()));
    let mode = |f: &str| {
        std::fs::metadata(out_dir.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode("agent.token"),
        0o600,
        "the secret is the reader's alone"
    );
    assert_eq!(
        std::fs::read(out_dir.join("ca.pem")).unwrap(),
        std::fs::read(data.join("ca.pem")).unwrap()
    );
    // Never over files already there (an earlier enrollment's token).
    let again = collector(
        &[
            "enroll",
            "--agent",
            "hall-2",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &data,
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("agent.toml"),
        "{}",
        text(&again.stderr)
    );
    let listed = text(&collector(&["list"], &data).stdout);
    assert!(
        !listed.contains("hall-2"),
        "refused before a credential was made: {listed}"
    );
    // A folder others may write to could have its ca.pem swapped before it is copied.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let open = collector(
        &[
            "enroll",
            "--agent",
            "hall-3",
            "--out",
            shared.to_str().unwrap(),
        ],
        &data,
    );
    assert_eq!(open.status.code(), Some(2));
    assert!(
        text(&open.stderr).contains("writable by others"),
        "{}",
        text(&open.stderr)
    );
    let viewer = collector(
        &[
            "enroll",
            "--viewer",
            "soc",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &data,
    );
    assert_eq!(viewer.status.code(), Some(2));
    assert!(
        text(&viewer.stderr).contains("--agent"),
        "{}",
        text(&viewer.stderr)
    );
}

/// Files under `dir` (itself included) whose owner is not `uid`.
fn not_owned_by(dir: &Path, uid: u32) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut wrong = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.uid() != uid {
            wrong.push(path.clone());
        }
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    wrong
}

#[test]
fn root_running_init_enroll_and_revoke_on_the_service_users_folder_creates_files_as_that_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !rustix::process::geteuid().is_root() {
        println!(
            "skipped: needs root (CI runs as root): the package's data folder belongs to the service user"
        );
        return;
    }
    const NOBODY: u32 = 65_534;
    let dir = tempfile::tempdir().unwrap();
    // The service user must reach the folder, as it reaches /var/lib.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("d");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();

    let out = collector(&["init", "--name", "c.plant"], &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out_dir = dir.path().join("hall-1");
    let out = collector(
        &[
            "enroll",
            "--agent",
            "hall-1",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &data,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        collector(&["enroll", "--viewer", "soc"], &data)
            .status
            .success()
    );
    assert!(collector(&["revoke", "soc"], &data).status.success());
    assert_eq!(
        not_owned_by(&data, NOBODY),
        Vec::<std::path::PathBuf>::new()
    );
    // What is handed out is root's, written after the command became root again.
    let token = std::fs::metadata(out_dir.join("agent.token")).unwrap();
    assert_eq!((token.uid(), token.mode() & 0o777), (0, 0o600));
}
