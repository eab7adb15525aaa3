//! Image routes (`/images…`).

use heyvm_types::*;

use crate::{encode, Client, Result};

impl Client {
    pub fn list_images(&self) -> Result<Vec<ImageInfo>> {
        self.get("/images")
    }

    pub fn image(&self, reference: &str) -> Result<ImageDetails> {
        self.get(&format!("/images/{}", encode(reference)))
    }

    /// Pulls without progress.
    pub fn pull_image(&self, reference: &str) -> Result<ImageInfo> {
        self.send("POST", "/images/pull", &PullImageRequest { reference: reference.into() })
    }

    /// Pulls with SSE progress: `on_event("progress" | "done" | "error", data)`.
    pub fn pull_image_stream(&self, reference: &str, on_event: impl FnMut(&str, &serde_json::Value) -> bool) -> Result<()> {
        let mut r = self.agent.post(self.url("/images/pull")).header("Accept", "text/event-stream");
        if let Some(t) = &self.token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        let bytes = serde_json::to_vec(&PullImageRequest { reference: reference.into() }).map_err(|e| self.transport(e))?;
        self.sse(r.content_type("application/json").send(&bytes[..]), on_event)
    }

    pub fn remove_image(&self, reference: &str) -> Result<serde_json::Value> {
        self.delete(&format!("/images/{}", encode(reference)))
    }

    pub fn tag_image(&self, source: &str, target: &str) -> Result<ImageInfo> {
        self.send("POST", "/images/tag", &TagImageRequest { source: source.into(), target: target.into() })
    }

    pub fn prune_images(&self) -> Result<PruneImagesResponse> {
        self.send("POST", "/images/prune", &serde_json::json!({}))
    }

    pub fn registry_login(&self, req: &RegistryLoginRequest) -> Result<serde_json::Value> {
        self.send("POST", "/images/login", req)
    }
}

impl Client {
    /// `POST /images/build` with a tar.gz context; SSE events `step`,
    /// `output`, then `done` or `error`. `query` is already encoded.
    pub fn build_image_stream(
        &self,
        context: &std::path::Path,
        query: &str,
        on_event: impl FnMut(&str, &serde_json::Value) -> bool,
    ) -> Result<()> {
        let file = std::fs::File::open(context).map_err(|e| self.transport(format!("{}: {e}", context.display())))?;
        let mut r = self.agent.post(self.url(&format!("/images/build?{query}"))).header("Accept", "text/event-stream");
        if let Some(t) = &self.token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        let mut reader = std::io::BufReader::new(file);
        self.sse(r.content_type("application/gzip").send(ureq::SendBody::from_reader(&mut reader)), on_event)
    }

    /// `POST /images/push` with SSE progress.
    pub fn push_image_stream(&self, reference: &str, on_event: impl FnMut(&str, &serde_json::Value) -> bool) -> Result<()> {
        let mut r = self.agent.post(self.url("/images/push")).header("Accept", "text/event-stream");
        if let Some(t) = &self.token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        let bytes = serde_json::to_vec(&PushImageRequest { reference: reference.into() }).map_err(|e| self.transport(e))?;
        self.sse(r.content_type("application/json").send(&bytes[..]), on_event)
    }
}

impl Client {
    /// `PUT /images/:name` (heyo-sdk's upload): streams `file` (an OCI image
    /// archive or an ext4 root filesystem); `sha256` (hex) is sent as
    /// `x-heyo-sha256` for the server to check.
    pub fn upload_image(&self, name: &str, file: &std::path::Path, sha256: Option<&str>) -> Result<ImageInfo> {
        let f = std::fs::File::open(file).map_err(|e| self.transport(format!("{}: {e}", file.display())))?;
        let mut r = self.agent.put(self.url(&format!("/images/{}", encode(name))));
        if let Some(t) = &self.token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(s) = sha256 {
            r = r.header("x-heyo-sha256", s);
        }
        let mut reader = std::io::BufReader::new(f);
        self.finish(r.content_type("application/octet-stream").send(ureq::SendBody::from_reader(&mut reader)))
    }

    /// `GET /images/:ref/archive` into `out` (an OCI image archive); returns
    /// the byte count.
    pub fn save_image(&self, reference: &str, out: &mut impl std::io::Write) -> Result<u64> {
        self.get_into(&format!("/images/{}/archive", encode(reference)), out)
    }
}
