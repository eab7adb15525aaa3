//! `heyvm images build` end to end on busybox from the loopback registry:
//! every instruction, a multi-stage build, the layer cache, push then pull
//! back by digest, and Dockerfile errors that name their line.

use std::path::Path;

use serde_json::Value;

use crate::registry::Registry;
use crate::support::Daemon;

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A context with a Dockerfile using every instruction.
fn context(base: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir_in("/tmp").unwrap();
    let r = d.path();
    write(r, "app/main.txt", "main\n");
    write(r, "app/extra.txt", "extra\n");
    write(r, "ignored/secret", "nope\n");
    write(r, ".dockerignore", "ignored\n*.log\n");
    write(r, "debug.log", "log\n");
    let tar = std::process::Command::new("tar").args(["-czf", "bundle.tar.gz", "-C", "app", "main.txt"]).current_dir(r).status().unwrap();
    assert!(tar.success());
    write(
        r,
        "Dockerfile",
        &format!(
            "# every instruction\n\
ARG BASE={base}\n\
FROM $BASE AS build\n\
ARG GREET=hello\n\
RUN mkdir -p /out && echo \"$GREET from build\" > /out/built.txt\n\
\n\
FROM ${{BASE}}\n\
LABEL org.example.team=\"img team\" version=1\n\
ENV APP_HOME=/srv/app MODE=test\n\
WORKDIR $APP_HOME\n\
COPY app/ ./\n\
COPY --chown=1000:1000 app/main.txt /owned/main.txt\n\
ADD bundle.tar.gz /unpacked/\n\
COPY --from=build /out/built.txt /srv/app/built.txt\n\
SHELL [\"/bin/sh\", \"-c\"]\n\
RUN echo run-$MODE > run.txt && rm /app/hello.txt && \\\n\
    ls /srv/app > listing.txt\n\
COPY . /ctx/\n\
USER 1000\n\
EXPOSE 8080 9000/udp\n\
STOPSIGNAL SIGINT\n\
ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
CMD [\"echo hi\"]\n"
        ),
    );
    d
}

fn build(d: &Daemon, ctx: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["images", "build"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    d.heyvm_json(&args)
}

#[test]
fn build_every_instruction_cache_push_and_pull_back() {
    let Some(reg) = Registry::shared() else { return };
    let reg = reg.with_busybox();
    let Some(d) = Daemon::start() else { return };
    let base = reg.image("busybox:1");
    let ctx = context(&base);
    let out = build(&d, ctx.path(), &["-t", "app:v1", "--build-arg", "GREET=bonjour"]);
    assert_eq!(out["tags"][0], "docker.io/library/app:v1", "{out}");
    assert_eq!(out["cached_steps"], 0, "{out}");
    let steps = out["layer_steps"].as_u64().unwrap();
    assert_eq!(steps, 7, "RUN, then 4 COPY/ADD, RUN, COPY: {out}");

    let inspect = d.heyvm_json(&["images", "inspect", "app:v1"]);
    let c = &inspect["config"];
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "1000");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["echo hi"]));
    assert_eq!(c["Labels"]["org.example.team"], "img team");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object() && c["ExposedPorts"]["9000/udp"].is_object(), "{c}");
    assert_eq!(c["StopSignal"], "SIGINT");
    assert!(c["Env"].as_array().unwrap().iter().any(|e| e == "MODE=test"), "{c}");

    // A sandbox on the result sees exactly what the Dockerfile made.
    let info = d.heyvm_json(&["create", "--name", "built", "--image", "app:v1"]);
    assert_eq!(info["status"], "running");
    let v = d.sh(
        "built",
        "pwd; cat main.txt extra.txt built.txt run.txt /unpacked/main.txt; \
         test -e /app/hello.txt && echo WHITEOUT-BROKEN; \
         ls -A /ctx | tr '\\n' ' '; echo; cat listing.txt | tr '\\n' ' '",
    );
    assert_eq!(
        v["stdout"],
        "/srv/app\nmain\nextra\nbonjour from build\nrun-test\nmain\n\
         .dockerignore Dockerfile app bundle.tar.gz \nbuilt.txt extra.txt listing.txt main.txt run.txt ",
        "{v}"
    );

    // --chown: the layer keeps 1000:1000 in the store (inside, ids show
    // through the sandbox's user namespace, which maps only root until the
    // per-sandbox uid range exists).
    let owned = std::fs::read_dir(d.data.path().join("images/layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("owned/main.txt"))
        .find(|p| p.exists())
        .expect("the --chown layer");
    let m = std::fs::metadata(owned).unwrap();
    assert_eq!((std::os::unix::fs::MetadataExt::uid(&m), std::os::unix::fs::MetadataExt::gid(&m)), (1000, 1000));

    // Nothing changed: every layer step comes from the cache, same digest.
    let again = build(&d, ctx.path(), &["-t", "app:v1", "--build-arg", "GREET=bonjour"]);
    assert_eq!(again["cached_steps"], again["layer_steps"], "{again}");
    assert_eq!(again["digest"], out["digest"]);
    // A changed input re-runs from that step on.
    write(ctx.path(), "app/extra.txt", "changed\n");
    let changed = build(&d, ctx.path(), &["-t", "app:v2", "--build-arg", "GREET=bonjour"]);
    assert!(changed["cached_steps"].as_u64().unwrap() < steps, "{changed}");
    assert_ne!(changed["digest"], out["digest"]);

    // Push to the registry, then pull it back by digest into a fresh daemon.
    let remote = reg.image("built/app:v1");
    d.heyvm_json(&["images", "tag", "app:v1", &remote]);
    let pushed = d.heyvm_json(&["images", "push", &remote]);
    assert_eq!(pushed["digest"], out["digest"], "the manifest is pushed byte for byte");
    let Some(d2) = Daemon::start() else { return };
    let by_digest = format!("{}@{}", reg.image("built/app"), out["digest"].as_str().unwrap());
    let pulled = d2.heyvm_json(&["images", "pull", &by_digest]);
    assert_eq!(pulled["digest"], out["digest"]);
    d2.heyvm_json(&["create", "--name", "back", "--image", &by_digest]);
    assert_eq!(d2.sh("back", "cat /srv/app/built.txt")["stdout"], "bonjour from build\n");

    // --target stops at a stage; seed 004's spelling works.
    write(ctx.path(), "Other.Dockerfile", &format!("FROM {base}\nRUN echo seed > /seed.txt\n"));
    let f = ctx.path().join("Other.Dockerfile");
    let seed =
        build(&d, ctx.path(), &["--file", f.to_str().unwrap(), "--name", "my-base", "--size-mb", "4096", "--backend-type", "bubblewrap"]);
    assert_eq!(seed["tags"][0], "docker.io/library/my-base:latest");
    let t = build(&d, ctx.path(), &["--target", "build", "-t", "stage:build"]);
    assert_eq!(t["layer_steps"], 1, "{t}");
}

#[test]
fn build_errors_name_the_line_and_leave_nothing() {
    let Some(reg) = Registry::shared() else { return };
    let reg = reg.with_busybox();
    let Some(d) = Daemon::start() else { return };
    let base = reg.image("busybox:1");
    let cases = [
        (format!("FROM {base}\nCOPY ../etc/passwd /x\n"), "line 2", "outside the build context"),
        (format!("FROM {base}\n\nBOGUS thing\n"), "line 3", "unknown"),
        (format!("FROM {base}\nRUN echo oops >&2; exit 3\n"), "line 2", "exit code 3"),
        (format!("FROM {base}\nCOPY nothere /x\n"), "line 2", "not found"),
        ("FROM scratch\nRUN true\n".to_string(), "line 2", "scratch"),
        (format!("FROM {}\n", reg.image("missing:1")), "line 1", "not found"),
    ];
    for (text, line, what) in &cases {
        let ctx = tempfile::tempdir_in("/tmp").unwrap();
        write(ctx.path(), "Dockerfile", text);
        let out = d.heyvm(&["images", "build", "-t", "bad:1", ctx.path().to_str().unwrap(), "--format", "json"]);
        assert!(!out.status.success(), "{text}");
        let err: Value = serde_json::from_slice(&out.stderr).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains(line) && msg.contains(what), "{text:?}: {err}");
    }
    // No build sandbox or half-made image is left.
    assert_eq!(d.heyvm_json(&["list", "--all"]), serde_json::json!([]));
    assert!(d.heyvm_json(&["images", "list"]).as_array().unwrap().iter().all(|i| i["name"] != "bad:1"));
    assert_eq!(std::fs::read_dir(d.data.path().join("images/tmp")).unwrap().count(), 0, "no temp leftovers");
}
