use super::*;

fn write(path: &str, content: &str) -> Change {
    Change::Write {
        path: path.into(),
        content: content.as_bytes().to_vec(),
    }
}

fn req(changes: Vec<Change>) -> CommitRequest {
    CommitRequest {
        subject: "test\n\nForged-Too: yes".into(),
        body: String::new(),
        trailers: vec![("Run-Id".into(), "r1\nForged: yes".into())],
        changes,
    }
}

#[test]
fn an_ssh_state_repo_is_refused_saying_what_to_use() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["ssh://git@github.com/o/r.git", "git@github.com:o/r.git"] {
        let err = StateRepo::remote(url, &dir.path().join("c"), "main", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SSH is not supported") && err.contains("https://"),
            "{err}"
        );
    }
}

#[test]
fn commits_nested_files_and_replays_as_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let repo = StateRepo::local(&dir.path().join("s.git"), "main").unwrap();
    assert_eq!(repo.head().unwrap(), None);
    let r = req(vec![write("a/b/c.yaml", "1"), write("a/d.yaml", "2")]);
    let first = repo.commit(&r).unwrap().unwrap();
    assert_eq!(repo.commit(&r).unwrap(), None);
    let files = repo.files_at(&first).unwrap();
    assert_eq!(files.keys().collect::<Vec<_>>(), ["a/b/c.yaml", "a/d.yaml"]);
    let info = repo.commit_info(&first).unwrap();
    assert_eq!(
        info.trailers,
        vec![("Run-Id".into(), "r1 Forged: yes".into())]
    );
    assert_eq!(
        info.summary, "test  Forged-Too: yes",
        "the subject stays one line"
    );
}

#[test]
fn removal_drops_a_folder_and_diff_reports_old_content() {
    let dir = tempfile::tempdir().unwrap();
    let repo = StateRepo::local(&dir.path().join("s.git"), "main").unwrap();
    let a = repo
        .commit(&req(vec![
            write("x/1.yaml", "one"),
            write("y/2.yaml", "two"),
        ]))
        .unwrap()
        .unwrap();
    let b = repo
        .commit(&req(vec![Change::Remove { path: "x".into() }]))
        .unwrap()
        .unwrap();
    assert_eq!(
        repo.diff(Some(&a), &b).unwrap(),
        vec![FileDelta::Deleted {
            path: "x/1.yaml".into(),
            content: b"one".to_vec()
        }]
    );
    assert_eq!(repo.log().unwrap(), vec![b, a]);
}

#[test]
fn diff_reports_adds_changes_deletes_and_type_changes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = StateRepo::local(&dir.path().join("s.git"), "main").unwrap();
    let a = repo
        .commit(&req(vec![
            write("same/f", "1"),
            write("edit/f", "1"),
            write("gone/f", "1"),
            write("x", "file"),
        ]))
        .unwrap()
        .unwrap();
    let b = repo
        .commit(&req(vec![
            write("edit/f", "2"),
            Change::Remove {
                path: "gone".into(),
            },
            write("new/deep/f", "n"),
            Change::Remove { path: "x".into() },
            write("x/inner", "dir now"),
        ]))
        .unwrap()
        .unwrap();
    let mut d = repo.diff(Some(&a), &b).unwrap();
    d.sort_by(|l, r| l.path().cmp(r.path()));
    let summary: Vec<(String, bool)> = d
        .iter()
        .map(|x| (x.path().to_string(), matches!(x, FileDelta::Deleted { .. })))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("edit/f".into(), false),
            ("gone/f".into(), true),
            ("new/deep/f".into(), false),
            ("x".into(), true),
            ("x/inner".into(), false),
        ]
    );
}

#[test]
fn untouched_subtrees_keep_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let repo = StateRepo::local(&dir.path().join("s.git"), "main").unwrap();
    let a = repo
        .commit(&req(vec![write("keep/f", "k"), write("edit/f", "1")]))
        .unwrap()
        .unwrap();
    let b = repo
        .commit(&req(vec![write("edit/f", "2")]))
        .unwrap()
        .unwrap();
    let git = Repository::open_bare(dir.path().join("s.git")).unwrap();
    let id = |sha: &str| {
        let tree = git
            .find_commit(Oid::from_str(sha).unwrap())
            .unwrap()
            .tree()
            .unwrap();
        let keep = tree.get_name("keep").unwrap().id();
        keep
    };
    assert_eq!(id(&a), id(&b));
}

#[test]
fn bad_paths_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let repo = StateRepo::local(&dir.path().join("s.git"), "main").unwrap();
    for bad in ["../x", "a//b", "/abs", "a/./b"] {
        assert!(matches!(
            repo.commit(&req(vec![write(bad, "x")])),
            Err(StateRepoError::BadPath(_))
        ));
    }
    assert_eq!(repo.head().unwrap(), None);
}

const NS_A: &str = "codertocat-hello-world-1-3fa9c01b2e";
const NS_B: &str = "codertocat-hello-world-2-a0b1c2d3e4";

#[test]
fn an_issue_folder_sits_in_the_bucket_its_namespace_hash_starts() {
    assert_eq!(issue_dir(NS_A), format!("issues/3f/{NS_A}"));
    assert_eq!(run_dir(NS_B, "r1"), format!("issues/a0/{NS_B}/runs/r1"));
    let real = crate::naming::namespace_for_issue("Codertocat/Hello-World", 7);
    assert!(issue_dir(&real).starts_with(&format!("issues/{}/", &real[real.len() - 10..][..2])));
    for path in [
        format!("issues/3f/{NS_A}/role.yaml"),
        format!("issues/3f/{NS_A}/runs/r1/job.yaml"),
        // The first layout is still read (commits before the move).
        format!("issues/{NS_A}/role.yaml"),
    ] {
        assert_eq!(namespace_of(&path), Ok(NS_A), "{path}");
    }
    assert_eq!(
        namespace_of(&format!("issues/a0/{NS_A}/role.yaml")),
        Err(LayoutError::WrongBucket {
            namespace: NS_A.into(),
            expected: "3f".into(),
            found: "a0".into()
        })
    );
    for path in [
        "issues/3f/role.yaml".to_string(),
        "issues/role.yaml".into(),
        format!("issues/3f/{NS_A}"),
        format!("other/3f/{NS_A}/role.yaml"),
        format!("issuesx/{NS_A}/role.yaml"),
    ] {
        assert_eq!(
            namespace_of(&path),
            Err(LayoutError::NotInAnIssueFolder),
            "{path}"
        );
    }
    assert_eq!(
        namespace_of("issues/3f/kube-system/cm.yaml"),
        Err(LayoutError::NotAnIssueNamespace {
            folder: "kube-system".into()
        })
    );
}

#[test]
fn the_layout_move_is_one_commit_that_keeps_every_blob_and_replays_as_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = StateRepo::local(dir.path(), "main").unwrap();
    let legacy = repo
        .commit(&req(vec![
            write(&format!("issues/{NS_A}/role.yaml"), "a"),
            write(&format!("issues/{NS_A}/runs/r1/job.yaml"), "job"),
            write(&format!("issues/{NS_B}/role.yaml"), "b"),
            write("README.md", "kept where it is"),
        ]))
        .unwrap()
        .unwrap();
    let moves = repo.layout_moves().unwrap();
    assert_eq!(moves.len(), 2, "{moves:?}");
    let moved = repo.commit(&req(moves)).unwrap().unwrap();
    let before = repo.blob_index(&legacy, |_| true).unwrap();
    let after = repo.blob_index(&moved, |_| true).unwrap();
    let mut expected: Vec<(String, Oid)> = before
        .into_iter()
        .map(|(path, id)| {
            let path = match path.strip_prefix("issues/") {
                Some(rest) => {
                    let ns = rest.split('/').next().unwrap();
                    format!("{}/{}", issue_dir(ns), &rest[ns.len() + 1..])
                }
                None => path,
            };
            (path, id)
        })
        .collect();
    expected.sort();
    let mut after = after;
    after.sort();
    assert_eq!(after, expected);
    // Nothing left to move; the same moves again change nothing.
    assert!(repo.layout_moves().unwrap().is_empty());
    let again = vec![Change::Move {
        from: format!("issues/{NS_A}"),
        to: issue_dir(NS_A),
    }];
    assert_eq!(repo.commit(&req(again)).unwrap(), None);
}
