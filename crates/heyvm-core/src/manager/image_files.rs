//! Images as files: `PUT /images/:name` (an OCI image archive, or an ext4
//! root filesystem as heyo-sdk's `upload_image` sends) and `GET
//! /images/:ref/archive` (an OCI image archive). The HTTP layer streams an
//! upload to a temp file in the store (checked against its size limit and
//! checksum); everything here runs on that file.

use std::path::{Path, PathBuf};
use std::process::Command;

use heyvm_images::archive::UploadKind;
use heyvm_images::{ImageError, ImageRef};

use super::SandboxManager;
use crate::error::{CoreError, Result};

fn blocking_failed(e: tokio::task::JoinError) -> CoreError {
    CoreError::Backend(crate::backend::BackendError::Failed(format!("image file work panicked: {e}")))
}

impl SandboxManager {
    /// Stores the uploaded file at `path` (removed whatever happens) as the
    /// image `name`.
    pub async fn import_image_file(&self, path: PathBuf, name: &str) -> Result<heyvm_types::ImageInfo> {
        let r = ImageRef::parse(name)?;
        if r.digest.is_some() {
            return Err(ImageError::InvalidReference(format!("'{name}': an upload is named by a tag, not a digest")).into());
        }
        let store = self.images.clone();
        let p = path.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<heyvm_images::LocalImage> {
            match heyvm_images::archive::sniff(&p)? {
                UploadKind::Ext4 => import_ext4(&store, &p, &r),
                UploadKind::Tar | UploadKind::TarGz => Ok(store.import_oci(&p, Some(&r))?),
            }
        })
        .await;
        let _ = std::fs::remove_file(&path);
        let img = res.map_err(blocking_failed)??;
        let users = self.image_users(&img.digest);
        let at = self.images.refs().get(&img.reference).map(|e| e.modified_at).unwrap_or(0);
        Ok(super::images::to_info(&self.images, &img, at, users))
    }

    /// Writes the image `reference` names as an OCI archive into a temp
    /// file of the store and returns the file (the caller removes it).
    pub async fn export_image_file(&self, reference: &str) -> Result<PathBuf> {
        let img = self.images.find(reference)?.ok_or_else(|| ImageError::NotFound(reference.to_string()))?;
        let store = self.images.clone();
        let out = store.temp_path("export");
        let o = out.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<()> {
            let f = std::fs::File::create(&o)?;
            let mut w = std::io::BufWriter::new(f);
            store.export_oci(&img, &mut w)?;
            let f = w.into_inner().map_err(|e| CoreError::Io(e.into_error()))?;
            f.sync_all()?;
            Ok(())
        })
        .await
        .map_err(blocking_failed)?;
        if let Err(e) = res {
            let _ = std::fs::remove_file(&out);
            return Err(e);
        }
        Ok(out)
    }
}

/// An ext4 root filesystem as a one-layer image: its files are copied out
/// by `debugfs rdump` (userspace: the host kernel never mounts the
/// untrusted filesystem) inside a bubblewrap jail whose only writable
/// place is the output directory, so a crafted filesystem (duplicate
/// names, a symlink then a file of the same name) cannot make it write
/// anywhere else.
fn import_ext4(store: &heyvm_images::ImageStore, image: &Path, name: &ImageRef) -> Result<heyvm_images::LocalImage> {
    let out = store.temp_path("rootfs");
    std::fs::create_dir(&out)?;
    let res = (|| {
        let mut cmd = Command::new("bwrap");
        cmd.args(["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--die-with-parent", "--new-session"]).args([
            "--ro-bind",
            "/usr",
            "/usr",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]);
        for (link, target) in [("/lib", "usr/lib"), ("/lib64", "usr/lib64"), ("/bin", "usr/bin"), ("/sbin", "usr/sbin")] {
            if Path::new(link).is_symlink() {
                cmd.args(["--symlink", target, link]);
            } else if Path::new(link).is_dir() {
                cmd.args(["--ro-bind", link, link]);
            }
        }
        if Path::new("/etc/ld.so.cache").is_file() {
            cmd.args(["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]);
        }
        cmd.arg("--ro-bind").arg(image).arg("/in.ext4").arg("--bind").arg(&out).arg("/out");
        cmd.args(["debugfs", "-R", "rdump / /out", "/in.ext4"]);
        let o = cmd.output().map_err(|e| ImageError::Unsupported(format!("ext4 images need bwrap and debugfs (e2fsprogs): {e}")))?;
        let stderr = String::from_utf8_lossy(&o.stderr);
        let empty = std::fs::read_dir(&out).map(|mut d| d.next().is_none()).unwrap_or(true);
        if !o.status.success() || empty {
            let why = stderr.lines().filter(|l| !l.starts_with("debugfs ")).collect::<Vec<_>>().join("; ");
            return Err(ImageError::InvalidArchive(format!("the ext4 filesystem could not be read: {}", why.trim())).into());
        }
        heyvm_images::store::remove_tree(&out.join("lost+found"));
        let (os, arch) = heyvm_images::oci::host_platform();
        let mut config = heyvm_images::oci::ImageConfig { os: os.into(), architecture: arch.into(), ..Default::default() };
        config.config.env = Some(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]);
        Ok(store.import_rootfs_dir(&out, name, config)?)
    })();
    heyvm_images::store::remove_tree(&out);
    res
}
