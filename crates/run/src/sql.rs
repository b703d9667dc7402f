//! Managed PostgreSQL instances, as Cloud SQL serves them to Cloud Run: a server started from
//! the system's PostgreSQL binaries, data under the data dir, reachable over a unix socket at
//! `<socket root>/<PROJECT>:<REGION>:<INSTANCE>/.s.PGSQL.5432` (the `/cloudsql` layout) and
//! optionally over TCP, with databases and users (passwords from Secret Manager) created from
//! the spec.
//!
//! The server is supervised ([`postmaster`]): a postmaster that dies is started again on the
//! same data directory and socket, so apps reconnect to the same path.
//!
//! Authentication: application users log in with their password (scram-sha-256) over the
//! socket or TCP; administration uses the server's own OS account over the socket (`peer`), so
//! no password-less superuser login is reachable by services.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

mod postmaster;

pub use postmaster::{Health, Status};
use postmaster::{Launch, Supervisor};

const INSTALL_HINT: &str = "install the PostgreSQL 15 server binaries: `apt-get install -y \
     postgresql-15` (they live in /usr/lib/postgresql/15/bin; set GATEHOUSE_PG_BIN to use another \
     directory)";

/// A user of a managed instance.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlUser {
    pub name: String,
    /// `SECRET[:VERSION]` holding the password.
    pub password_secret: String,
}

/// One entry of the manifest's `sql_instances:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlInstanceSpec {
    pub name: String,
    #[serde(default)]
    pub databases: Vec<String>,
    #[serde(default)]
    pub users: Vec<SqlUser>,
    /// Also listen on 127.0.0.1:PORT.
    #[serde(default)]
    pub tcp_port: Option<u16>,
}

/// Why an instance could not be started or set up.
#[derive(Debug, thiserror::Error)]
#[error("sql instance {instance}: {why}")]
pub struct SqlError {
    pub instance: String,
    pub why: String,
}

fn identifier_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl SqlInstanceSpec {
    /// Parses a spec from YAML or JSON and checks it.
    pub fn parse(text: &str) -> Result<Self, SqlError> {
        let spec: Self = serde_saphyr::from_str(text).map_err(|e| SqlError {
            instance: String::new(),
            why: e.to_string(),
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Instance, database and user names: lower-case letters, digits, `_`, `-`.
    pub fn validate(&self) -> Result<(), SqlError> {
        let err = |why: String| SqlError {
            instance: self.name.clone(),
            why,
        };
        if !identifier_ok(&self.name) {
            return Err(err(format!("invalid instance name {:?}", self.name)));
        }
        for d in &self.databases {
            if !identifier_ok(d) {
                return Err(err(format!("invalid database name {d:?}")));
            }
        }
        for u in &self.users {
            if !identifier_ok(&u.name) || u.name == "postgres" {
                return Err(err(format!("invalid user name {:?}", u.name)));
            }
        }
        Ok(())
    }
}

/// A running managed instance.
#[derive(Debug)]
pub struct SqlInstance {
    pub spec: SqlInstanceSpec,
    /// `PROJECT:REGION:INSTANCE`.
    pub connection_name: String,
    /// The directory holding `.s.PGSQL.5432`.
    pub socket_dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    root: bool,
    /// The uid and gid the server runs as when the runner is root.
    user: Option<(u32, u32)>,
    superuser: String,
    /// Keeps the postmaster running (`None` only before it first started).
    supervisor: Option<Supervisor>,
}

fn pg_bin() -> Result<PathBuf, String> {
    let bin = std::env::var_os("GATEHOUSE_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    for tool in ["initdb", "pg_ctl", "psql", "postgres"] {
        if !bin.join(tool).is_file() {
            return Err(format!(
                "PostgreSQL server binaries not found in {}: {INSTALL_HINT}",
                bin.display()
            ));
        }
    }
    Ok(bin)
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// `\set NAME 'VALUE'` for a psql script: any text as a psql variable, which the script then
/// uses as `:'NAME'` (psql quotes it as a string literal) or `:"NAME"` (an identifier). Inside
/// psql's single quotes a backslash escapes the next character and `\ooo` is an octal byte, so
/// quotes, backslashes, `$$` and control characters all arrive unchanged.
fn set_var(name: &str, value: &str) -> String {
    use std::fmt::Write as _;
    let mut out = format!("\\set {name} '");
    for c in value.chars() {
        match c {
            '\'' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:03o}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push_str("'\n");
    out
}

/// The script that creates `user` (or resets its password): run by psql from stdin, so the
/// password is never on a command line, and quoted by psql, so any character works.
fn user_script(user: &str, password: &str) -> String {
    let mut script = String::from("\\set VERBOSITY terse\n\\set SHOW_CONTEXT never\n");
    script.push_str(&set_var("name", user));
    script.push_str(&set_var("password", password));
    script.push_str(
        "SELECT format(CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \
         THEN 'ALTER ROLE %I LOGIN PASSWORD %L' ELSE 'CREATE ROLE %I LOGIN PASSWORD %L' END, \
         :'name', :'password') \\gexec\n",
    );
    script
}

impl SqlInstance {
    fn command(&self, tool: &str) -> Command {
        let mut c = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        };
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    fn err(&self, why: impl Into<String>) -> SqlError {
        SqlError {
            instance: self.spec.name.clone(),
            why: why.into(),
        }
    }

    /// Starts the instance (initialising its data directory on first start) and creates its
    /// databases and users. `passwords` gives each user's password.
    pub async fn start(
        spec: SqlInstanceSpec,
        project: &str,
        region: &str,
        data_root: &Path,
        socket_root: &Path,
        passwords: &[(String, String)],
    ) -> Result<Self, SqlError> {
        spec.validate()?;
        let bin = pg_bin().map_err(|why| SqlError {
            instance: spec.name.clone(),
            why,
        })?;
        let connection_name = format!("{project}:{region}:{}", spec.name);
        let root = is_root();
        let user = if root {
            let found = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or_else(|| SqlError {
                    instance: spec.name.clone(),
                    why: format!(
                        "there is no `postgres` user to run the server as: {INSTALL_HINT}"
                    ),
                })?;
            Some((found.uid.as_raw(), found.gid.as_raw()))
        } else {
            None
        };
        let superuser = if root {
            "postgres".to_owned()
        } else {
            std::env::var("USER").unwrap_or_else(|_| "postgres".into())
        };
        let me = Self {
            socket_dir: socket_root.join(&connection_name),
            data: data_root.join("sql").join(&spec.name),
            connection_name,
            spec,
            bin,
            root,
            user,
            superuser,
            supervisor: None,
        };
        let io = |e: std::io::Error| me.err(e.to_string());
        std::fs::create_dir_all(&me.data).map_err(io)?;
        std::fs::create_dir_all(&me.socket_dir).map_err(io)?;
        if root {
            for dir in [&me.data, &me.socket_dir] {
                let ok = std::process::Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(me.err(format!(
                        "chown postgres {} failed (is there a `postgres` user? {INSTALL_HINT})",
                        dir.display()
                    )));
                }
            }
            // Services (not the postgres user) must reach the socket directory.
            let _ = std::process::Command::new("chmod")
                .args(["0755"])
                .arg(&me.socket_dir)
                .status();
        }
        if !me.data.join("PG_VERSION").is_file() {
            let out = me
                .command("initdb")
                .arg("-D")
                .arg(&me.data)
                .args([
                    "-U",
                    &me.superuser,
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                ])
                .output()
                .await
                .map_err(io)?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let hint = if stderr.contains("Permission denied") {
                    " (PostgreSQL runs as the postgres user, which must be able to reach the data \
                     directory: every directory above it needs o+x, e.g. not under a 0700 home)"
                } else {
                    ""
                };
                return Err(me.err(format!("initdb failed: {}{hint}", stderr.trim_end())));
            }
            // Application users log in with passwords over the socket; the superuser by peer.
            let hba = format!(
                "local all {} peer\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n",
                me.superuser
            );
            let hba_path = me.data.join("pg_hba.conf");
            std::fs::write(&hba_path, hba).map_err(io)?;
        }
        let port = me.spec.tcp_port.unwrap_or(5432);
        let listen = if me.spec.tcp_port.is_some() {
            "127.0.0.1"
        } else {
            ""
        };
        let launch = Launch {
            name: me.connection_name.clone(),
            postgres: me.bin.join("postgres"),
            data: me.data.clone(),
            args: vec![
                "-p".into(),
                port.to_string(),
                "-k".into(),
                me.socket_dir.display().to_string(),
                "-c".into(),
                format!("listen_addresses={listen}"),
                "-c".into(),
                "unix_socket_permissions=0777".into(),
                // After a crash PostgreSQL first syncs the data directory: one syncfs() of
                // the file system instead of an fsync() per file (measured here: 0.14 s
                // instead of 2.6 s before recovery could start).
                "-c".into(),
                "recovery_init_sync_method=syncfs".into(),
            ],
            user: me.user,
            log: me.data.join("server.log"),
            socket_lock: me.socket_dir.join(format!(".s.PGSQL.{port}.lock")),
        };
        if let Some(owner) = postmaster::clear_stale_lock(&me.data.join("postmaster.pid"), None) {
            // A server left running by a runner that was killed: stopped, then ours starts.
            tracing::warn!(
                instance = me.connection_name,
                pid = owner,
                "sql instance: stopping a server left running on its data directory"
            );
            me.command("pg_ctl")
                .arg("-D")
                .arg(&me.data)
                .args(["-m", "fast", "-w", "-t", "60", "stop"])
                .output()
                .await
                .map_err(io)?;
        }
        let child = launch.start().await.map_err(|why| {
            let log = std::fs::read_to_string(me.data.join("server.log")).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(10).collect();
            me.err(format!(
                "{why}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        })?;
        let me = Self {
            supervisor: Some(Supervisor::new(launch, child)),
            ..me
        };
        if port != 5432 {
            // The Cloud SQL layout names the socket .s.PGSQL.5432 whatever the TCP port.
            let _ = std::os::unix::fs::symlink(
                me.socket_dir.join(format!(".s.PGSQL.{port}")),
                me.socket_dir.join(".s.PGSQL.5432"),
            );
        }
        if let Err(e) = me.set_up(port, passwords).await {
            me.stop().await;
            return Err(e);
        }
        tracing::info!(instance = me.connection_name, socket = %me.socket_dir.display(), "sql instance running");
        Ok(me)
    }

    /// Creates the users (or resets their passwords) and the databases.
    async fn set_up(&self, port: u16, passwords: &[(String, String)]) -> Result<(), SqlError> {
        let me = self;
        for (user, password) in passwords {
            me.psql(port, "postgres", &user_script(user, password))
                .await?;
        }
        for db in &me.spec.databases {
            let mut script = set_var("db", db);
            script.push_str(
                "SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS \
                 (SELECT FROM pg_database WHERE datname = :'db') \\gexec\n",
            );
            for (user, _) in passwords {
                script.push_str(&set_var("user", user));
                script.push_str("GRANT ALL PRIVILEGES ON DATABASE :\"db\" TO :\"user\";\n");
            }
            me.psql(port, "postgres", &script).await?;
            let mut script = String::new();
            for (user, _) in passwords {
                script.push_str(&set_var("user", user));
                script.push_str("GRANT ALL ON SCHEMA public TO :\"user\";\n");
            }
            me.psql(port, db, &script).await?;
        }
        Ok(())
    }

    /// `psql` as the administrator over the socket, reading its script from stdin: the
    /// command line names the server and the database, never a value from a script.
    fn psql_command(&self, port: u16, database: &str) -> Command {
        let mut c = self.command("psql");
        c.arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                &self.superuser,
                "-d",
                database,
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-tAq",
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `script` (psql syntax) in `database`; its output.
    async fn psql(&self, port: u16, database: &str, script: &str) -> Result<String, SqlError> {
        use tokio::io::AsyncWriteExt as _;
        let io = |e: std::io::Error| self.err(format!("psql: {e}"));
        let mut child = self.psql_command(port, database).spawn().map_err(io)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).await.map_err(io)?;
            // Dropping stdin ends the script.
        }
        let out = child.wait_with_output().await.map_err(io)?;
        if !out.status.success() {
            return Err(self.err(format!(
                "setting up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops supervising, then stops the server (fast shutdown: connections are closed, data
    /// is safe); returns when it has exited.
    pub async fn stop(&self) {
        if let Some(s) = &self.supervisor {
            s.stop().await;
        }
        tracing::info!(instance = self.connection_name, "sql instance stopped");
    }

    /// What the server is doing now (its pid, restarts so far).
    pub fn status(&self) -> Status {
        self.supervisor.as_ref().map_or(
            Status {
                health: Health::Stopped,
                pid: None,
                restarts: 0,
                since: std::time::Instant::now(),
            },
            Supervisor::status,
        )
    }

    /// Every change of [`status`](Self::status), as it happens.
    pub fn watch(&self) -> Option<tokio::sync::watch::Receiver<Status>> {
        self.supervisor.as_ref().map(Supervisor::watch)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const NASTY: &str = "p$$w'o\"r\\d $1 :'x' \\gexec\n;--";

    #[test]
    fn variables_quote_anything_for_psql() {
        assert_eq!(set_var("v", "plain"), "\\set v 'plain'\n");
        assert_eq!(
            set_var("v", "a'b\\c\nd$$"),
            "\\set v 'a\\'b\\\\c\\012d$$'\n"
        );
        // One line: the value cannot end the meta-command and start another.
        assert_eq!(set_var("v", NASTY).lines().count(), 1);
    }

    /// Issue 14 #15: `ps` shows a process's arguments to every local user, so the password must
    /// travel on stdin; the command line holds nothing from the script.
    #[test]
    fn the_password_is_not_on_the_psql_command_line() {
        let me = SqlInstance {
            spec: SqlInstanceSpec {
                name: "db".into(),
                databases: vec![],
                users: vec![],
                tcp_port: None,
            },
            connection_name: "p:r:db".into(),
            socket_dir: PathBuf::from("/cloudsql/p:r:db"),
            data: PathBuf::from("/data"),
            bin: PathBuf::from("/usr/lib/postgresql/15/bin"),
            root: true,
            user: Some((102, 104)),
            superuser: "postgres".into(),
            supervisor: None,
        };
        let cmd = me.psql_command(5432, "postgres");
        let argv: Vec<String> = std::iter::once(cmd.as_std().get_program())
            .chain(cmd.as_std().get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let script = user_script("vote-user", NASTY);
        assert!(script.contains("PASSWORD %L"), "{script}");
        for a in &argv {
            assert!(!a.contains("p$$w") && !a.contains("PASSWORD"), "{argv:?}");
        }
        assert_eq!(argv.last().map(String::as_str), Some("-"), "{argv:?}");
    }
}
