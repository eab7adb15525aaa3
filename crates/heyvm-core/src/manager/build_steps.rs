//! The build steps that make layers. `RUN` runs in a real sandbox of this
//! project on the image built so far; its writable layer (an overlay upper
//! directory) becomes the new layer, exported with overlay whiteouts turned
//! into `.wh.` entries and the sandbox's mount points left out. `COPY` and
//! `ADD` write a layer straight from the context (or from another stage's
//! root, mounted read-only for the copy).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use heyvm_images::context::{Context, CopyOptions};
use heyvm_images::dockerfile::{Command, CopySpec, Instruction, Op};
use heyvm_images::layer::{export_dir, NewLayer};
use heyvm_images::oci::Descriptor;
use heyvm_types::{CreateSandboxRequest, ExecRequest};

use super::build::{build_err, shell_argv, strip_rootfs, BuildEvent, BuildLog, BuildRequest, StageState};
use super::SandboxManager;
use crate::agent::ExecEvent;
use crate::backend::BackendError;
use crate::error::{CoreError, Result};

/// Paths of a build sandbox's writable layer that are its own mount points,
/// never part of the image.
const NOT_IN_LAYER: &[&str] = &["proc", "dev", "sys", "workspace", "run/heyvm", "run/heyvm-bin"];

fn blocking_err(e: tokio::task::JoinError) -> CoreError {
    CoreError::Backend(BackendError::Failed(format!("build worker panicked: {e}")))
}

/// A read-only view of some layers: the single layer itself, or an overlay
/// mount of several (unmounted on drop).
struct Tree {
    root: PathBuf,
    mounted: bool,
}

impl Tree {
    fn new(layers: &[PathBuf], scratch: &Path) -> Result<Tree> {
        match layers {
            [] => {
                std::fs::create_dir_all(scratch)?;
                Ok(Tree { root: scratch.to_path_buf(), mounted: false })
            }
            [one] => Ok(Tree { root: one.clone(), mounted: false }),
            many => {
                std::fs::create_dir_all(scratch)?;
                let lower: Vec<String> = many.iter().rev().map(|p| p.display().to_string()).collect();
                let opts = CString::new(format!("lowerdir={}", lower.join(":"))).map_err(|_| CoreError::invalid("NUL in a path"))?;
                let target = CString::new(scratch.as_os_str().as_bytes()).map_err(|_| CoreError::invalid("NUL in a path"))?;
                // SAFETY: valid C strings for the duration of the call.
                let r = unsafe {
                    libc::mount(c"overlay".as_ptr(), target.as_ptr(), c"overlay".as_ptr(), libc::MS_RDONLY, opts.as_ptr().cast())
                };
                if r != 0 {
                    return Err(CoreError::Backend(BackendError::Failed(format!(
                        "mounting a stage for COPY --from: {}",
                        std::io::Error::last_os_error()
                    ))));
                }
                Ok(Tree { root: scratch.to_path_buf(), mounted: true })
            }
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if self.mounted {
            if let Ok(t) = CString::new(self.root.as_os_str().as_bytes()) {
                // SAFETY: valid C string.
                unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
            }
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

/// `user[:group]` by number or by name from the image's passwd/group.
fn chown_ids(spec: &str, layers: &[PathBuf], line: usize) -> Result<(u32, u32)> {
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let text = layers.iter().rev().find_map(|l| std::fs::read_to_string(l.join(file)).ok())?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name) && f.len() > 3).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?))).flatten()
        })
    };
    let (u, g) = spec.split_once(':').map(|(u, g)| (u, Some(g))).unwrap_or((spec, None));
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => lookup("etc/passwd", u).ok_or_else(|| build_err(line, format!("--chown: no user '{u}' in the image")))?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup("etc/group", g)
                .map(|(gid, _)| gid)
                .ok_or_else(|| build_err(line, format!("--chown: no group '{g}' in the image")))?,
        },
    };
    Ok((uid, gid))
}

impl SandboxManager {
    fn builds_dir(&self) -> PathBuf {
        self.data.root().join("builds")
    }

    fn layer_paths(&self, layers: &[Descriptor]) -> Result<Vec<PathBuf>> {
        Ok(layers.iter().map(|l| self.images.ensure_layer(&l.digest, &l.media_type, None)).collect::<std::result::Result<_, _>>()?)
    }

    /// The layers a `COPY --from` reads: an earlier stage or an image.
    async fn from_layers(self: &Arc<Self>, from: &str, line: usize, done: &[StageState]) -> Result<(Vec<Descriptor>, String)> {
        if let Some(s) = done.iter().find(|s| s.name.as_deref() == Some(&from.to_ascii_lowercase())) {
            return Ok((s.layers.clone(), s.key.clone()));
        }
        if let Ok(n) = from.parse::<usize>() {
            if let Some(s) = done.get(n) {
                return Ok((s.layers.clone(), s.key.clone()));
            }
        }
        let img =
            self.resolve_image(from, heyvm_images::no_progress()).await.map_err(|e| build_err(line, format!("COPY --from={from}: {e}")))?;
        Ok((img.manifest.layers.clone(), img.digest))
    }

    /// What a step reads, as a digest for its cache key.
    pub(super) async fn step_input(
        self: &Arc<Self>,
        st: &StageState,
        ins: &Instruction,
        req: &BuildRequest,
        done: &[StageState],
    ) -> Result<String> {
        let (Op::Copy(spec) | Op::Add(spec)) = &ins.op else { return Ok(String::new()) };
        let srcs: Vec<String> = spec.srcs.iter().map(|s| st.expand(ins.line, s)).collect::<Result<_>>()?;
        let dest = st.expand(ins.line, &spec.dest)?;
        let flags = format!("{}|{:?}|{:?}|{}", dest, spec.chown, spec.chmod, st.workdir());
        if let Some(from) = &spec.from {
            let (_, key) = self.from_layers(from, ins.line, done).await?;
            return Ok(format!("{flags}|from:{key}|{}", srcs.join("\0")));
        }
        let (ctx_dir, line) = (req.context.clone(), ins.line);
        let hash = tokio::task::spawn_blocking(move || -> Result<String> {
            let ctx = Context::open(&ctx_dir)?;
            let mut resolved = Vec::new();
            for s in &srcs {
                resolved.extend(ctx.resolve(s, line)?);
            }
            Ok(ctx.hash(&resolved)?)
        })
        .await
        .map_err(blocking_err)??;
        Ok(format!("{flags}|{hash}"))
    }

    pub(super) async fn copy_step(
        self: &Arc<Self>,
        st: &StageState,
        line: usize,
        spec: &CopySpec,
        req: &BuildRequest,
        done: &[StageState],
        is_add: bool,
    ) -> Result<NewLayer> {
        let srcs: Vec<String> = spec.srcs.iter().map(|s| st.expand(line, s)).collect::<Result<_>>()?;
        if srcs.iter().any(|s| s.contains("://")) {
            return Err(build_err(line, "ADD from a URL is not supported; download it in a RUN step"));
        }
        let dest_raw = st.expand(line, &spec.dest)?;
        let dest = st.absolute(&dest_raw);
        let own_layers = self.layer_paths(&st.layers)?;
        let owner = match &spec.chown {
            Some(c) => chown_ids(&st.expand(line, c)?, &own_layers, line)?,
            None => (0, 0),
        };
        let chmod = match &spec.chmod {
            Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| build_err(line, format!("--chmod '{m}' is not an octal mode")))?),
            None => None,
        };
        let from_layers = match &spec.from {
            Some(f) => Some(self.layer_paths(&self.from_layers(f, line, done).await?.0)?),
            None => None,
        };
        let (ctx_dir, store) = (req.context.clone(), self.images.clone());
        let scratch = self.builds_dir().join(format!("mnt-{}", crate::ids::new_sandbox_id()));
        let wild = srcs.iter().any(|s| s.contains(['*', '?']));
        tokio::task::spawn_blocking(move || -> Result<NewLayer> {
            let tree = from_layers.as_ref().map(|l| Tree::new(l, &scratch)).transpose()?;
            let ctx = match &tree {
                Some(t) => Context::tree(&t.root),
                None => Context::open(&ctx_dir)?,
            };
            let mut resolved = Vec::new();
            for s in &srcs {
                resolved.extend(ctx.resolve(s, line)?);
            }
            let single_dir = resolved.len() == 1 && std::fs::symlink_metadata(ctx.root.join(&resolved[0])).is_ok_and(|m| m.is_dir());
            let dest_is_dir = dest_raw.ends_with('/')
                || resolved.len() > 1
                || wild
                || single_dir
                || (is_add && srcs.len() == 1 && dest_raw.ends_with('/'));
            let opts = CopyOptions { dest, dest_is_dir, owner, chmod, extract_archives: is_add };
            Ok(store.write_layer(|b| ctx.append(b, &resolved, &opts))?)
        })
        .await
        .map_err(blocking_err)?
    }

    /// Runs `cmd` in a fresh sandbox on the image built so far and turns
    /// its writable layer into a new layer. The sandbox is always removed.
    pub(super) async fn run_step(self: &Arc<Self>, st: &StageState, line: usize, cmd: &Command, log: &BuildLog) -> Result<NewLayer> {
        if st.layers.is_empty() {
            return Err(build_err(line, "RUN needs a base image with a shell (this stage starts FROM scratch)"));
        }
        let base = self.images.commit(&st.layers, &[], strip_rootfs(st))?;
        let env = st.config.env_map();
        // Build args are visible to RUN, under ENV of the same name.
        let env_vars = st.args.iter().filter(|(k, _)| !env.contains_key(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let req = CreateSandboxRequest {
            name: Some(format!("build-{}", &crate::ids::new_sandbox_id()[3..])),
            image: Some(base),
            working_directory: Some(st.workdir()),
            env_vars: Some(env_vars),
            no_start: Some(true),
            // RUN steps need a backend that runs images and keeps their
            // writable layer as a directory, whatever the daemon's default
            // backend is (a VM's root is a disk, not a layer).
            backend_type: self
                .backends
                .iter()
                .find(|b| b.supports_images() && b.image_writable_layer(&self.data.sandbox("build")).is_some())
                .map(|b| b.name().to_string()),
            ..Default::default()
        };
        let info = self.create(req).await.map_err(|e| build_err(line, format!("RUN: {e}")))?;
        let id = info.id.clone();
        let res = self.run_in_build_sandbox(&id, st, line, cmd, log).await;
        let _ = self.delete(&id).await;
        res
    }

    async fn run_in_build_sandbox(
        self: &Arc<Self>,
        id: &str,
        st: &StageState,
        line: usize,
        cmd: &Command,
        log: &BuildLog,
    ) -> Result<NewLayer> {
        let rec = self.store.resolve(id)?;
        let upper = self
            .backend_for(&rec)?
            .image_writable_layer(&self.data.sandbox(id))
            .ok_or_else(|| build_err(line, format!("RUN: the {} backend cannot build images", rec.backend_type)))?;
        // WORKDIR exists before the command runs in it, as in Docker: made
        // (root's) only when no layer below has it. A copy in the writable
        // layer would hide the lower one's owner and mode from the merged
        // view (`RUN chown app /home/app`, `USER app`, `WORKDIR /home/app`).
        let wd = st.workdir();
        let rel = wd.trim_start_matches('/');
        let in_lower = st.layers.iter().any(|l| self.images.layer_dir(&l.digest).is_ok_and(|d| d.join(rel).is_dir()));
        if !in_lower {
            std::fs::create_dir_all(upper.join(rel))?;
        }
        self.start(id).await.map_err(|e| build_err(line, format!("RUN: {e}")))?;
        // The build sandbox's root owns its layer on the host (see
        // id_ranges); the range exists only once the sandbox has launched
        // (the launch also shifted the WORKDIR made above into it). The
        // layer is exported relative to it, else its files would keep host
        // ids no other sandbox maps.
        let id_base = self.sandbox_root_ids(&self.store.resolve(id)?).map(|(base, _)| base);
        let argv = shell_argv(cmd, st);
        // As the stage's USER so far (Docker's rule); root before any USER.
        let user = st.config.config.user.clone().filter(|u| !u.is_empty());
        let ereq = ExecRequest { command: argv[0].clone(), args: argv[1..].to_vec(), user, ..Default::default() };
        let mut run = self.start_exec(id, &ereq).await.map_err(|e| build_err(line, format!("RUN: {e}")))?;
        let mut pending = String::new();
        let mut tail: Vec<String> = Vec::new();
        let status = loop {
            match run.agent.next().await.map_err(|e| build_err(line, format!("RUN: {e}")))? {
                ExecEvent::Stdout(d) | ExecEvent::Stderr(d) => {
                    pending.push_str(&String::from_utf8_lossy(&d));
                    while let Some(i) = pending.find('\n') {
                        let l: String = pending.drain(..=i).collect();
                        let l = l.trim_end().to_string();
                        tail.push(l.clone());
                        if tail.len() > 10 {
                            tail.remove(0);
                        }
                        log(BuildEvent::Output { line: l });
                    }
                }
                ExecEvent::Started { .. } => {}
                ExecEvent::Exit(s) => break s,
            }
        };
        if !pending.is_empty() {
            tail.push(pending.clone());
            log(BuildEvent::Output { line: pending });
        }
        if status.code != 0 {
            let shown = match cmd {
                Command::Shell(s) => s.clone(),
                Command::Exec(v) => v.join(" "),
            };
            return Err(build_err(line, format!("RUN {shown} failed with exit code {}:\n{}", status.code, tail.join("\n"))));
        }
        drop(run);
        self.stop(id, true).await?;
        let store = self.images.clone();
        let host_resolv = std::fs::read("/etc/resolv.conf").ok();
        tokio::task::spawn_blocking(move || -> Result<NewLayer> {
            let skip = |rel: &Path| {
                NOT_IN_LAYER.iter().any(|p| rel == Path::new(p))
                    || (rel == Path::new("etc/resolv.conf") && std::fs::read(upper.join(rel)).ok() == host_resolv)
            };
            Ok(store.write_layer(|b| export_dir(b, &upper, id_base.unwrap_or(0), &skip))?)
        })
        .await
        .map_err(blocking_err)?
    }
}
