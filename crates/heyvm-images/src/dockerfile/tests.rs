use super::*;

#[test]
fn stages_forms_and_continuations() {
    let df = parse(
        "# comment\nARG BASE=busybox:1\nFROM $BASE AS build\nRUN echo a && \\\n  # inner comment\n  echo b\n\
         COPY --chown=1:2 --from=x a b /dst/\nENV A=1 B=\"two words\"\nENV LEGACY some value\n\
         CMD [\"sh\", \"-c\", \"echo hi\"]\nSHELL [\"/bin/sh\", \"-ec\"]\nFROM scratch\nCOPY --from=build /x /y\n",
    )
    .unwrap();
    assert_eq!(df.global_args, vec![("BASE".to_string(), Some("busybox:1".to_string()))]);
    assert_eq!(df.stages.len(), 2);
    let s = &df.stages[0];
    assert_eq!((s.base.as_str(), s.name.as_deref(), s.line), ("$BASE", Some("build"), 3));
    assert_eq!(s.instructions[0].op, Op::Run(Command::Shell("echo a && echo b".into())));
    assert_eq!(s.instructions[0].line, 4);
    let Op::Copy(c) = &s.instructions[1].op else { panic!() };
    assert_eq!(
        (c.chown.as_deref(), c.from.as_deref(), c.srcs.clone(), c.dest.as_str()),
        (Some("1:2"), Some("x"), vec!["a".into(), "b".into()], "/dst/")
    );
    assert_eq!(s.instructions[2].op, Op::Env(vec![("A".into(), "1".into()), ("B".into(), "two words".into())]));
    assert_eq!(s.instructions[3].op, Op::Env(vec![("LEGACY".into(), "some value".into())]));
    assert_eq!(s.instructions[4].op, Op::Cmd(Command::Exec(vec!["sh".into(), "-c".into(), "echo hi".into()])));
    assert_eq!(s.instructions[4].line, 10);
    assert_eq!(df.stages[1].base, "scratch");
}

#[test]
fn errors_name_the_line() {
    for (text, line) in [
        ("FROM a\nBOGUS x\n", "line 2"),
        ("RUN x\n", "line 1"),
        ("FROM a\nCOPY onlyone\n", "line 2"),
        ("FROM a\n\nENV\n", "line 3"),
        ("FROM a b c d\n", "line 1"),
        ("FROM a\nCOPY --weird=1 a b\n", "line 2"),
        ("FROM a\nENV A=\"unterminated\n", "line 2"),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(line), "{text:?}: {e}");
    }
    assert!(parse("# only a comment\n").is_err());
}

#[test]
fn variable_expansion() {
    let vars = BTreeMap::from([("A".to_string(), "1".to_string()), ("E".to_string(), String::new())]);
    assert_eq!(expand("$A-${A}-${B:-def}-${E:-d2}-${A:+alt}-${B:+x}-\\$A-$", &vars).unwrap(), "1-1-def-d2-alt--$A-$");
    assert!(expand("${A", &vars).is_err());
}
