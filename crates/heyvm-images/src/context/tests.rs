use super::*;

fn tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    for (p, c) in [
        ("a.txt", "a"),
        ("b.txt", "b"),
        ("src/main.rs", "fn main(){}"),
        ("src/gen/x.rs", "x"),
        ("target/big", "junk"),
        ("keep/target/k", "k"),
    ] {
        std::fs::create_dir_all(r.join(p).parent().unwrap()).unwrap();
        std::fs::write(r.join(p), c).unwrap();
    }
    std::fs::write(r.join(".dockerignore"), "# build output\n/target\n**/gen\n*.txt\n!b.txt\n").unwrap();
    d
}

#[test]
fn dockerignore_rules() {
    let d = tree();
    let c = Context::open(d.path()).unwrap();
    assert!(c.is_ignored(Path::new("target/big")));
    assert!(!c.is_ignored(Path::new("keep/target/k")), "/target is anchored at the root");
    assert!(c.is_ignored(Path::new("src/gen/x.rs")));
    assert!(c.is_ignored(Path::new("a.txt")));
    assert!(!c.is_ignored(Path::new("b.txt")), "! re-includes");
    let all = c.walk(Path::new(""));
    assert!(all.contains(&PathBuf::from("src/main.rs")) && !all.iter().any(|p| p.starts_with("target")));
}

#[test]
fn sources_are_confined_and_wildcards_expand() {
    let d = tree();
    let c = Context::open(d.path()).unwrap();
    assert_eq!(c.resolve("./src/../b.txt", 3).unwrap(), vec![PathBuf::from("b.txt")]);
    let e = c.resolve("../etc/passwd", 7).unwrap_err().to_string();
    assert!(e.contains("line 7") && e.contains("outside the build context"), "{e}");
    assert!(c.resolve("a.txt", 1).is_err(), "ignored files are not in the context");
    assert!(c.resolve("nothere", 1).is_err());
    assert_eq!(c.resolve("*.txt", 1).unwrap(), vec![PathBuf::from("b.txt")]);
    assert_eq!(c.resolve("src/*.rs", 1).unwrap(), vec![PathBuf::from("src/main.rs")]);
    assert_eq!(c.resolve(".", 1).unwrap(), vec![PathBuf::new()]);
}

#[test]
fn hash_follows_content() {
    let d = tree();
    let c = Context::open(d.path()).unwrap();
    let h1 = c.hash(&[PathBuf::from("src")]).unwrap();
    assert_eq!(h1, c.hash(&[PathBuf::from("src")]).unwrap());
    std::fs::write(d.path().join("src/main.rs"), "fn main(){ changed }").unwrap();
    assert_ne!(h1, c.hash(&[PathBuf::from("src")]).unwrap());
    std::fs::write(d.path().join("src/gen/x.rs"), "ignored change").unwrap();
    let h2 = c.hash(&[PathBuf::from("src")]).unwrap();
    std::fs::write(d.path().join("src/gen/x.rs"), "another").unwrap();
    assert_eq!(h2, c.hash(&[PathBuf::from("src")]).unwrap(), "ignored files do not count");
}

#[test]
fn glob_segments() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(path_match(&s(&["**", "*.rs"]), &s(&["a", "b", "c.rs"])));
    assert!(path_match(&s(&["**", "*.rs"]), &s(&["c.rs"])));
    assert!(!path_match(&s(&["*.rs"]), &s(&["a", "c.rs"])));
    assert!(path_match(&s(&["a?c"]), &s(&["abc"])));
}
