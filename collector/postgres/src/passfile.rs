//! The database password, from a file: either a file holding the password alone
//! (`store.password_file`), or libpq's password file (`PGPASSFILE`, else `~/.pgpass`), whose
//! lines read `host:port:database:user:password` with `*` matching anything and `\` escaping
//! `:` and `\`. As libpq does, a password file others may read is not used: here it is
//! refused, naming the file, rather than silently ignored.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio_postgres::config::Host;

/// The password in a file of its own (trailing line end removed).
pub fn read_password_file(path: &Path) -> Result<String, String> {
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err("is empty (expected the password, alone in the file)".into());
    }
    Ok(password.to_owned())
}

/// The password libpq's password file gives for the first of `config`'s hosts that it lists,
/// or `None` when there is no such file or no line matches.
pub fn lookup_default(
    config: &tokio_postgres::Config,
    dbname: &str,
    user: &str,
) -> Result<Option<String>, String> {
    let (path, explicit) = match std::env::var_os("PGPASSFILE") {
        Some(p) => (PathBuf::from(p), true),
        None => match std::env::var_os("HOME") {
            Some(home) => (Path::new(&home).join(".pgpass"), false),
            None => return Ok(None),
        },
    };
    if !path.exists() {
        return if explicit {
            Err(format!("{}: no such file", path.display()))
        } else {
            Ok(None)
        };
    }
    check_private(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ports = config.get_ports();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let host = match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(_) => "localhost".to_owned(),
        };
        if let Some(password) = lookup(&text, &host, port, dbname, user) {
            return Ok(Some(password));
        }
    }
    Ok(None)
}

/// The password of the first line of a libpq password file matching the connection.
pub fn lookup(text: &str, host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(fields)
        .find(|f| {
            [host, port.as_str(), dbname, user]
                .iter()
                .zip(f.iter())
                .all(|(want, field)| field == "*" || field == want)
        })
        .map(|mut f| f.swap_remove(4))
}

/// A line's five fields, unescaped; `None` for a line with fewer.
fn fields(line: &str) -> Option<Vec<String>> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.last_mut()?.push(next);
                }
            }
            // The password is the rest of the line, colons and all.
            ':' if out.len() < 5 => out.push(String::new()),
            c => out.last_mut()?.push(c),
        }
    }
    (out.len() == 5).then_some(out)
}

/// Refuses a file that others than its owner and group may read.
fn check_private(path: &Path) -> Result<(), String> {
    let mode = std::fs::metadata(path)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    if mode & 0o004 != 0 {
        return Err(format!(
            "others may read it (mode {:o}); expected 0600 or 0640",
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_line_wins_and_stars_match_anything() {
        let text = "# comment\n\
                    db1:5432:otwatch:otwatch:first\n\
                    *:*:otwatch:otwatch:second\n\
                    *:*:*:*:third\n";
        assert_eq!(
            lookup(text, "db1", 5432, "otwatch", "otwatch").as_deref(),
            Some("first")
        );
        assert_eq!(
            lookup(text, "db2", 5433, "otwatch", "otwatch").as_deref(),
            Some("second")
        );
        assert_eq!(
            lookup(text, "db2", 5432, "other", "x").as_deref(),
            Some("third")
        );
        assert_eq!(lookup("db1:5432:a:b:c\n", "db2", 5432, "a", "b"), None);
    }

    #[test]
    fn escaped_colons_and_backslashes_are_part_of_a_field() {
        let text = "h\\:x:5432:d:u:p\\:a\\\\ss:word\n";
        assert_eq!(
            lookup(text, "h:x", 5432, "d", "u").as_deref(),
            Some("p:a\\ss:word")
        );
        assert_eq!(lookup("h:5432:d:u\n", "h", 5432, "d", "u"), None);
    }

    #[test]
    fn a_password_file_others_can_read_is_refused_naming_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_password_file(&path).unwrap_err();
        assert!(err.contains("mode 644"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read_password_file(&path).unwrap(), "secret");
    }
}
