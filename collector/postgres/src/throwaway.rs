//! A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` in a temporary folder, a
//! server on a free loopback port, password authentication (so the password file path is the
//! one used), removed when dropped. No system service is touched.
//!
//! As root (CI), the server runs as `nobody`: PostgreSQL refuses to run as root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::Options;

/// The superuser every throwaway cluster has.
pub const USER: &str = "otwatch";

/// One running server and its folder.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    password_file: PathBuf,
}

impl Cluster {
    /// A cluster for the test `name`, or `None` (said on stderr) where PostgreSQL is not
    /// installed. With `OTWATCH_PG_TEST=1` (CI), a missing PostgreSQL fails the test instead.
    pub fn for_test(name: &str) -> Option<Self> {
        let required = std::env::var_os("OTWATCH_PG_TEST").is_some_and(|v| v == "1");
        match Self::start() {
            Ok(Some(cluster)) => Some(cluster),
            Ok(None) if !required => {
                // Test output: the skip must be visible in `cargo test`'s output.
                println!(
                    "skipping {name}: PostgreSQL server binaries not found (Debian: apt install postgresql-15, or set OTWATCH_PG_BIN; CI sets OTWATCH_PG_TEST=1 and installs them)"
                );
                None
            }
            Ok(None) => panic!("{name}: OTWATCH_PG_TEST=1 but PostgreSQL is not installed"),
            Err(e) => panic!("{name}: could not start PostgreSQL: {e}"),
        }
    }

    /// Starts a new cluster, or `None` where PostgreSQL's server binaries are not found.
    pub fn start() -> Result<Option<Self>, String> {
        let Some(bin) = find_bin() else {
            return Ok(None);
        };
        let dir = tempfile::Builder::new()
            .prefix("otwatch-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let run_as = if rustix::process::geteuid().is_root() {
            Some(nobody()?)
        } else {
            None
        };
        let password = random_password()?;
        let pwfile = dir.path().join("initdb.password");
        std::fs::write(&pwfile, format!("{password}\n")).map_err(|e| e.to_string())?;
        let password_file = dir.path().join("client.password");
        std::fs::write(&password_file, format!("{password}\n")).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            }
        }
        let data = dir.path().join("data");
        let mut cluster = Self {
            dir,
            data,
            bin,
            port: 0,
            run_as,
            password_file,
        };
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                cluster.data.as_os_str(),
                "-U".as_ref(),
                USER.as_ref(),
                format!("--pwfile={}", pwfile.display()).as_ref(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        cluster.port = free_port()?;
        cluster.start_server()?;
        Ok(Some(cluster))
    }

    /// A cluster streaming from this one, started, listed in this one's
    /// `synchronous_standby_names`: from now on a commit on this one returns only once the
    /// standby has it too.
    pub fn synchronous_standby(&self) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("otwatch-pg-standby-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| e.to_string())?;
        }
        let password_file = dir.path().join("client.password");
        std::fs::copy(&self.password_file, &password_file).map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let standby = Self {
            dir,
            data,
            bin: self.bin.clone(),
            port: free_port()?,
            run_as: self.run_as,
            password_file,
        };
        // pg_basebackup reads the password from the environment of the command it runs.
        let password = std::fs::read_to_string(&self.password_file).map_err(|e| e.to_string())?;
        let output = self
            .command("pg_basebackup")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .arg("-D")
            .arg(&standby.data)
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"])
            .args(["-d", &format!("application_name=standby{}", standby.port)])
            .env("PGPASSWORD", password.trim_end())
            .output()
            .map_err(|e| format!("pg_basebackup: {e}"))?;
        check("pg_basebackup", &output)?;
        standby.start_server()?;
        self.sql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET synchronous_standby_names = 'standby{}'",
                standby.port
            ),
        )?;
        self.sql("postgres", "SELECT pg_reload_conf()")?;
        Ok(standby)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A file holding the superuser's password (0600).
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// The URL of database `dbname` on this cluster, without a password.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// Engine options for database `dbname`, with the password file.
    pub fn options(&self, dbname: &str) -> Options {
        Options {
            password_file: Some(self.password_file.clone()),
            ..Options::new(self.url(dbname))
        }
    }

    /// Creates database `dbname`.
    pub fn create_database(&self, dbname: &str) -> Result<(), String> {
        self.sql("postgres", &format!("CREATE DATABASE \"{dbname}\""))
    }

    /// Runs `sql` in database `dbname` with psql, over the local socket.
    pub fn sql(&self, dbname: &str, sql: &str) -> Result<(), String> {
        self.query(dbname, sql).map(drop)
    }

    /// Runs `sql` in database `dbname` and returns what it printed (unaligned, tuples only).
    pub fn query(&self, dbname: &str, sql: &str) -> Result<String, String> {
        let output = self
            .command("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                dbname,
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        check("psql", &output)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Serves TLS with the certificate and key at `cert` and `key` (PEM), from now on.
    pub fn enable_tls(&self, cert: &Path, key: &Path) -> Result<(), String> {
        let (to_cert, to_key) = (self.data.join("server.crt"), self.data.join("server.key"));
        std::fs::copy(cert, &to_cert).map_err(|e| e.to_string())?;
        std::fs::copy(key, &to_key).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&to_key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = self.run_as {
            for path in [&to_cert, &to_key] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            }
        }
        self.sql("postgres", "ALTER SYSTEM SET ssl = on")?;
        self.sql("postgres", "SELECT pg_reload_conf()")
    }

    /// Promotes a standby to primary.
    pub fn promote(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "promote".as_ref(),
                "-w".as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
            ],
        )
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
            ],
        )
    }

    /// Starts the server again after [`Cluster::stop`].
    pub fn start_server(&self) -> Result<(), String> {
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers=64MB -c max_connections=200 -c max_wal_senders=10",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ],
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}\nserver log:\n{log}")
        })
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(path)
                    .current_dir(self.dir.path());
                c
            }
            None => {
                let mut c = Command::new(path);
                c.current_dir(self.dir.path());
                c
            }
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let output = self
            .command(program)
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        check(program, &output)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stopped already, or stopping: either way the folder goes.
        let _ = self.stop();
    }
}

fn check(program: &str, output: &Output) -> Result<(), String> {
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{program} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// `OTWATCH_PG_BIN`, else the newest `/usr/lib/postgresql/N/bin` with an `initdb`.
fn find_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("OTWATCH_PG_BIN") {
        return Some(PathBuf::from(bin));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn nobody() -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"nobody"))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .ok_or_else(|| "no user nobody to run PostgreSQL as".to_owned())
}

fn free_port() -> Result<u16, String> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.port())
}

fn random_password() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| e.to_string())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
