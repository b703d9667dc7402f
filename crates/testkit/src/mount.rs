//! A small file system of its own for a test: a `tmpfs` of a few MiB mounted on a temporary
//! directory (so "disk full" is real, even for root, who ignores permissions), filled and
//! freed on demand, unmounted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::TempDir;

/// A mounted `tmpfs`, unmounted (lazily) on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: TempDir,
    filler: PathBuf,
}

impl Tmpfs {
    /// Mounts a `tmpfs` of `size_kib` KiB on a fresh temporary directory. Needs root (or
    /// `CAP_SYS_ADMIN`) and `mount`; fails with the hint otherwise.
    pub fn mount(prefix: &str, size_kib: u64) -> anyhow::Result<Self> {
        crate::require_program("mount", "apt-get install -y mount")?;
        let dir = crate::temp_dir(prefix)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_kib}k,mode=0755"))
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "mounting a tmpfs on {} failed ({}): this test needs root or CAP_SYS_ADMIN \
                 (run it as root, or in a container started with --cap-add SYS_ADMIN)",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let filler = dir.path().join("filler");
        Ok(Self { dir, filler })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system to the last byte (a `filler` file that grows until `ENOSPC`).
    pub fn fill(&self) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .context("opening the filler")?;
        let block = vec![0u8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e).context("filling the file system"),
            }
        }
        // A partial last block, byte by byte.
        while matches!(f.write(&[0]), Ok(1)) {}
        Ok(())
    }

    /// Frees what [`fill`](Self::fill) took.
    pub fn free(&self) -> anyhow::Result<()> {
        std::fs::remove_file(&self.filler).context("removing the filler")
    }

    /// Available bytes, as `df` would say.
    pub fn available(&self) -> anyhow::Result<u64> {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .context("running df")?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .context("df printed no figure")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
