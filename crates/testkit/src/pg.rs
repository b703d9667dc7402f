//! An ephemeral PostgreSQL 15 cluster, started with the Debian server binaries.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

use crate::{TempDir, free_port, is_root};

const INSTALL_HINT: &str = "install the PostgreSQL 15 server binaries: `apt-get install -y postgresql-15` \
     (they live in /usr/lib/postgresql/15/bin; set GATEHOUSE_PG_BIN to use another directory)";

/// A running throw-away PostgreSQL cluster on 127.0.0.1; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

impl PgCluster {
    /// Initialises and starts a new cluster (trust auth, fsync off) on a free port.
    pub fn start() -> anyhow::Result<Self> {
        let bin = std::env::var_os("GATEHOUSE_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        if !bin.join("initdb").is_file() || !bin.join("pg_ctl").is_file() {
            bail!(
                "PostgreSQL server binaries not found in {}: {INSTALL_HINT}",
                bin.display()
            );
        }
        let dir = crate::temp_dir("gatehouse-pg")?;
        let data = dir.path().join("data");
        let root = is_root();
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .context("chown of the cluster directory")?;
            if !status.success() {
                bail!(
                    "chown postgres {} failed (is there a `postgres` user? {INSTALL_HINT})",
                    dir.path().display()
                );
            }
        }
        let as_postgres = |program: PathBuf| {
            if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            }
        };
        let out = as_postgres(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let cluster = Self {
            dir,
            bin,
            port: free_port()?,
        };
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    fn pg_ctl(&self) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        }
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .pg_ctl()
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-o", &opts, "-w", "-t", "60", "-l"])
            .arg(self.dir.path().join("postgres.log"))
            .arg("start")
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
            bail!(
                "pg_ctl start failed: {}\n{log}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended, then a shutdown
    /// checkpoint; with this cluster's `synchronous_commit=off` an immediate stop could lose
    /// the last acknowledged commits).
    pub fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl_stop("fast")
    }

    fn pg_ctl_stop(&self, mode: &str) -> anyhow::Result<()> {
        let out = self
            .pg_ctl()
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", mode, "-w", "stop"])
            .output()
            .context("running pg_ctl stop")?;
        if !out.status.success() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port (crash recovery).
    pub fn start_again(&self) -> anyhow::Result<()> {
        self.pg_ctl_start()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A client program of this installation, connecting to this cluster as the superuser.
    fn client(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ]);
        c
    }

    /// Runs `sql` as the superuser in `database` (stopping at the first error); its output
    /// (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = self
            .client("psql")
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-qtA", "-c", sql])
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql `{sql}` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Creates a database whose files live in `dir` (a new tablespace there, e.g. on a small
    /// file system of its own) and returns its URL. `dir` must exist and be empty; it is
    /// handed to the `postgres` user when running as root.
    pub fn create_database_in(&self, name: &str, dir: &std::path::Path) -> anyhow::Result<String> {
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir)
                .status()
                .context("chown of the tablespace directory")?;
            if !status.success() {
                bail!("chown postgres {} failed", dir.display());
            }
        }
        let location = dir.display().to_string().replace('\'', "''");
        self.psql(
            "postgres",
            &format!("CREATE TABLESPACE \"{name}_space\" LOCATION '{location}'"),
        )?;
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{name}\" TABLESPACE \"{name}_space\""),
        )?;
        Ok(self.url(name))
    }

    /// `pg_amcheck --heapallindexed` on `database` (every table and B-tree index, installing
    /// the `amcheck` extension first): `Ok` when it found no corruption, else its report.
    pub fn amcheck(&self, database: &str) -> anyhow::Result<()> {
        let out = self
            .client("pg_amcheck")
            .args(["--install-missing", "--heapallindexed", "--parent-check"])
            .args(["-d", database])
            .output()
            .context("running pg_amcheck")?;
        if !out.status.success() || !out.stdout.is_empty() {
            bail!(
                "pg_amcheck on {database}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The URL of a database in this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
    }
}
