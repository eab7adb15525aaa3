//! `images build` without Docker: a Dockerfile's stages run in order;
//! `RUN` executes in a sandbox of this project on the image built so far
//! (see `build_steps.rs`), `COPY`/`ADD` write layers straight from the
//! context, the rest edits the image config. Every step that makes a layer
//! is cached under a key chained from the parent, the instruction, the
//! build args in scope and the content of its inputs, so a rebuild with
//! nothing changed runs nothing. Errors name the Dockerfile line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use heyvm_images::dockerfile::{self, Command, Instruction, Op};
use heyvm_images::layer::NewLayer;
use heyvm_images::oci::{Descriptor, ImageConfig};
use heyvm_images::{ImageError, ImageRef};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::SandboxManager;
use crate::error::Result;

pub struct BuildRequest {
    /// The unpacked context directory.
    pub context: PathBuf,
    pub dockerfile: String,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
}

/// Progress of a build, for the CLI and SSE.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BuildEvent {
    Step { stage: usize, line: usize, instruction: String, cached: bool },
    Output { line: String },
}

pub type BuildLog = Arc<dyn Fn(BuildEvent) + Send + Sync>;

#[derive(Debug, Clone, Serialize)]
pub struct BuildOutcome {
    pub digest: String,
    pub tags: Vec<String>,
    /// Steps that made a layer, and how many of them came from the cache.
    pub layer_steps: usize,
    pub cached_steps: usize,
    /// The backend the image was also prepared for (`--backend-type kvm`:
    /// its VM base disk is made now rather than at the first boot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared_for: Option<String>,
}

/// One stage's image as it is being built.
#[derive(Clone)]
pub(super) struct StageState {
    pub name: Option<String>,
    pub layers: Vec<Descriptor>,
    pub config: ImageConfig,
    /// Cache chain key so far.
    pub key: String,
    pub args: BTreeMap<String, String>,
}

pub(super) fn build_err(line: usize, msg: impl std::fmt::Display) -> crate::CoreError {
    ImageError::Build(format!("Dockerfile line {line}: {msg}")).into()
}

fn chain(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())
}

impl StageState {
    /// Variables for expansion: ARGs, then ENV (ENV wins, as in Docker).
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut v = self.args.clone();
        v.extend(self.config.env_map());
        v
    }

    pub fn expand(&self, line: usize, s: &str) -> Result<String> {
        dockerfile::expand(s, &self.vars()).map_err(|e| build_err(line, e))
    }

    pub fn workdir(&self) -> String {
        self.config.config.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into())
    }

    /// `path` made absolute against WORKDIR.
    pub fn absolute(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{}", self.workdir().trim_end_matches('/'), path)
        }
    }

    fn set_env(&mut self, k: &str, v: &str) {
        let env = self.config.config.env.get_or_insert_with(Vec::new);
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k));
        env.push(format!("{k}={v}"));
    }

    fn history(&mut self, text: &str, empty_layer: bool) {
        let mut h = serde_json::json!({ "created_by": text, "comment": "heyvm build" });
        if empty_layer {
            h["empty_layer"] = serde_json::Value::Bool(true);
        }
        self.config.history.push(h);
    }
}

impl SandboxManager {
    pub async fn build_image(self: &Arc<Self>, req: BuildRequest, log: BuildLog) -> Result<BuildOutcome> {
        let df = dockerfile::parse(&req.dockerfile)?;
        // Layers made or reused here are spared by a concurrent prune.
        let _op = self.images.begin();
        let tags: Vec<ImageRef> = req.tags.iter().map(|t| ImageRef::parse(t)).collect::<std::result::Result<_, _>>()?;
        let mut globals = BTreeMap::new();
        for (k, v) in &df.global_args {
            if let Some(v) = req.build_args.get(k).cloned().or_else(|| v.clone()) {
                globals.insert(k.clone(), v);
            }
        }
        let last = match &req.target {
            Some(t) => df
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&t.to_ascii_lowercase()))
                .ok_or_else(|| ImageError::Build(format!("no stage named '{t}' (--target)")))?,
            None => df.stages.len() - 1,
        };
        let mut done: Vec<StageState> = Vec::new();
        let (mut layer_steps, mut cached_steps) = (0, 0);
        for (i, stage) in df.stages.iter().enumerate().take(last + 1) {
            let base = dockerfile::expand(&stage.base, &globals).map_err(|e| build_err(stage.line, e))?;
            let mut st = self.stage_base(&base, stage.line, &done).await?;
            st.name = stage.name.clone();
            st.args = BTreeMap::new();
            for ins in &stage.instructions {
                let made_layer = self.build_step(&mut st, ins, i, &req, &globals, &done, &log, &mut cached_steps).await?;
                layer_steps += made_layer as usize;
            }
            done.push(st);
        }
        let st = done.pop().ok_or_else(|| ImageError::Build("nothing to build".into()))?;
        let store = self.images.clone();
        let digest = store.commit(&st.layers, &[], strip_rootfs(&st))?;
        for t in &tags {
            store.set_ref(t, &digest)?;
        }
        Ok(BuildOutcome { digest, tags: tags.iter().map(|t| t.to_string()).collect(), layer_steps, cached_steps, prepared_for: None })
    }

    /// A stage's starting point: scratch, an earlier stage, or an image.
    async fn stage_base(self: &Arc<Self>, base: &str, line: usize, done: &[StageState]) -> Result<StageState> {
        if base.eq_ignore_ascii_case("scratch") {
            let (os, arch) = heyvm_images::oci::host_platform();
            let config = ImageConfig { os: os.into(), architecture: arch.into(), ..Default::default() };
            return Ok(StageState { name: None, layers: vec![], config, key: chain(&["scratch"]), args: BTreeMap::new() });
        }
        if let Some(prev) = done.iter().find(|s| s.name.as_deref() == Some(&base.to_ascii_lowercase())) {
            return Ok(prev.clone());
        }
        let img = self.resolve_image(base, heyvm_images::no_progress()).await.map_err(|e| build_err(line, format!("FROM {base}: {e}")))?;
        Ok(StageState {
            name: None,
            layers: img.manifest.layers.clone(),
            key: chain(&["image", &img.digest]),
            config: img.config,
            args: BTreeMap::new(),
        })
    }

    /// Applies one instruction; returns whether it made a layer.
    #[allow(clippy::too_many_arguments)]
    async fn build_step(
        self: &Arc<Self>,
        st: &mut StageState,
        ins: &Instruction,
        stage: usize,
        req: &BuildRequest,
        globals: &BTreeMap<String, String>,
        done: &[StageState],
        log: &BuildLog,
        cached_steps: &mut usize,
    ) -> Result<bool> {
        let line = ins.line;
        let step = |cached| log(BuildEvent::Step { stage, line, instruction: ins.text.clone(), cached });
        match &ins.op {
            Op::Arg(k, default) => {
                let v = req.build_args.get(k).cloned().or_else(|| default.clone()).or_else(|| globals.get(k).cloned());
                if let Some(v) = v {
                    st.args.insert(k.clone(), v);
                }
            }
            Op::Env(pairs) => {
                for (k, v) in pairs {
                    let v = st.expand(line, v)?;
                    st.set_env(k, &v);
                }
            }
            Op::Workdir(w) => {
                let w = st.expand(line, w)?;
                let abs = st.absolute(&w);
                st.config.config.working_dir = Some(abs);
            }
            Op::User(u) => {
                let u = st.expand(line, u)?;
                st.config.config.user = Some(u);
            }
            Op::Expose(ports) => {
                let mut exposed = st.config.config.exposed_ports.take().unwrap_or_default();
                for p in ports {
                    let p = dockerfile::expand(p, &st.vars()).map_err(|e| build_err(line, e))?;
                    let p = if p.contains('/') { p } else { format!("{p}/tcp") };
                    exposed.insert(p, serde_json::json!({}));
                }
                st.config.config.exposed_ports = Some(exposed);
            }
            Op::Label(pairs) => {
                let mut labels = st.config.config.labels.take().unwrap_or_default();
                for (k, v) in pairs {
                    labels.insert(k.clone(), dockerfile::expand(v, &st.vars()).map_err(|e| build_err(line, e))?);
                }
                st.config.config.labels = Some(labels);
            }
            Op::Cmd(cmd) => st.config.config.cmd = Some(argv(cmd, st)),
            Op::Entrypoint(cmd) => {
                st.config.config.entrypoint = Some(argv(cmd, st));
                // As in Docker, a new ENTRYPOINT drops the inherited CMD.
                st.config.config.cmd = None;
            }
            Op::Shell(sh) => st.config.config.shell = Some(sh.clone()),
            Op::StopSignal(s) => {
                st.config.config.extra.insert("StopSignal".into(), serde_json::Value::String(s.clone()));
            }
            Op::Volume(v) => {
                let vols: serde_json::Map<String, serde_json::Value> = v.iter().map(|p| (p.clone(), serde_json::json!({}))).collect();
                st.config.config.extra.insert("Volumes".into(), serde_json::Value::Object(vols));
            }
            Op::Run(_) | Op::Copy(_) | Op::Add(_) => {
                let input = self.step_input(st, ins, req, done).await?;
                let args_json = serde_json::to_string(&st.args).unwrap_or_default();
                let key = chain(&[&st.key, &ins.text, &args_json, &input]);
                if !req.no_cache {
                    if let Some(img) = self.images.cache_get(&key) {
                        step(true);
                        *cached_steps += 1;
                        st.layers = img.manifest.layers.clone();
                        st.config = img.config;
                        st.key = key;
                        return Ok(true);
                    }
                }
                step(false);
                let layer: NewLayer = match &ins.op {
                    Op::Run(cmd) => self.run_step(st, line, cmd, log).await?,
                    Op::Copy(spec) => self.copy_step(st, line, spec, req, done, false).await?,
                    Op::Add(spec) => self.copy_step(st, line, spec, req, done, true).await?,
                    _ => unreachable!("matched above"),
                };
                st.history(&ins.text, false);
                st.config.rootfs.diff_ids.push(layer.diff_id.clone());
                st.layers.push(layer.descriptor.clone());
                let digest = self.images.commit(&st.layers, &[], strip_rootfs(st))?;
                self.images.cache_put(&key, &digest)?;
                st.key = key;
                return Ok(true);
            }
        }
        st.history(&ins.text, true);
        st.key = chain(&[&st.key, &ins.text, &serde_json::to_string(&st.config.config).unwrap_or_default()]);
        Ok(false)
    }
}

/// `commit` appends the layers' diff ids itself; hand it the config
/// without the ones already counted in `layers`.
pub(super) fn strip_rootfs(st: &StageState) -> ImageConfig {
    let mut c = st.config.clone();
    c.rootfs.diff_ids.truncate(st.layers.len());
    c
}

/// A CMD/ENTRYPOINT in exec form; shell form runs under the stage's SHELL.
fn argv(cmd: &Command, st: &StageState) -> Vec<String> {
    match cmd {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut v = st.config.config.shell.clone().unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            v.push(s.clone());
            v
        }
    }
}

pub(super) fn shell_argv(cmd: &Command, st: &StageState) -> Vec<String> {
    argv(cmd, st)
}

/// A build whose context arrives as a tar.gz (the API's `POST /images/build`).
pub struct ArchiveBuild {
    /// Path of the Dockerfile inside the context.
    pub dockerfile: String,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// Also prepare the result for this backend (`--backend-type`).
    pub backend_type: Option<String>,
}

/// Where the CLI puts a Dockerfile that lives outside the context; it is
/// read and then removed, so `COPY .` never sees it.
pub const SIDE_DOCKERFILE: &str = ".heyvm-build-dockerfile";

impl SandboxManager {
    /// A fresh path for an uploaded build context.
    pub fn build_upload_path(&self) -> Result<PathBuf> {
        let dir = self.data.root().join("builds");
        std::fs::create_dir_all(&dir)?;
        Ok(dir.join(format!("ctx-{}.tar.gz", &crate::ids::new_sandbox_id()[3..])))
    }

    /// Unpacks the context archive (checked like deploy archives), builds,
    /// and removes the unpacked context and the archive whatever happens.
    pub async fn build_from_archive(self: &Arc<Self>, archive: PathBuf, b: ArchiveBuild, log: BuildLog) -> Result<BuildOutcome> {
        let dir = archive.with_extension("").with_extension("d");
        // An unknown or unavailable backend fails before any work.
        let prepare_for = match b.backend_type.as_deref() {
            Some(name) => Some(self.backend_for_request(Some(name))?),
            None => None,
        };
        let res = async {
            let (a, d) = (archive.clone(), dir.clone());
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&d)?;
                crate::archive::extract(&a, &d)
            })
            .await
            .map_err(|e| crate::CoreError::Backend(crate::backend::BackendError::Failed(e.to_string())))??;
            if b.dockerfile.starts_with('/') || b.dockerfile.split('/').any(|c| c == "..") {
                return Err(ImageError::Build(format!("Dockerfile path '{}' leaves the context", b.dockerfile)).into());
            }
            let rel = dir.join(&b.dockerfile);
            if std::fs::symlink_metadata(&rel).is_ok_and(|m| !m.is_file()) {
                return Err(ImageError::Build(format!("{} is not a regular file", b.dockerfile)).into());
            }
            let text = std::fs::read_to_string(&rel).map_err(|e| ImageError::Build(format!("reading {}: {e}", b.dockerfile)))?;
            let _ = std::fs::remove_file(dir.join(SIDE_DOCKERFILE));
            let req = BuildRequest {
                context: dir.clone(),
                dockerfile: text,
                tags: b.tags,
                build_args: b.build_args,
                target: b.target,
                no_cache: b.no_cache,
            };
            let mut out = self.build_image(req, log).await?;
            if let Some(backend) = prepare_for {
                let layers = self.image_layers_of(&out.digest).await?;
                let be = backend.clone();
                tokio::task::spawn_blocking(move || be.prepare_image(&layers))
                    .await
                    .map_err(|e| crate::CoreError::Backend(crate::backend::BackendError::Failed(e.to_string())))??;
                out.prepared_for = Some(backend.name().to_string());
            }
            Ok(out)
        }
        .await;
        let (a, d) = (archive, dir);
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(a);
            heyvm_images::store::remove_tree(&d);
        })
        .await;
        res
    }
}

/// The build runs in spawned tasks; keep its future `Send`.
#[allow(dead_code)]
fn build_is_send(m: Arc<SandboxManager>, r: BuildRequest, l: BuildLog) {
    fn is_send<T: Send>(_: T) {}
    is_send(m.build_image(r, l));
}
