use super::*;

const V1: &str =
    "version = 1\nname = \"one\"\n[[allow]]\nfrom = \"any\"\nto = \"any\"\nfunctions = \"read\"\n";
const V2: &str = "version = 1\nname = \"two\"\n[[allow]]\nfrom = \"any\"\nto = \"any\"\nfunctions = [\"read\", \"write\"]\n";

fn name(reload: Option<Reload>) -> String {
    match reload {
        Some(Reload::Loaded(p, _)) => p.name.clone().unwrap_or_default(),
        Some(Reload::Rejected(e)) => format!("rejected: {e}"),
        None => "none".into(),
    }
}

#[test]
fn unchanged_file_is_not_reloaded_and_a_changed_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, V1).unwrap();
    let mut r = Reloader::new(&path).unwrap();
    assert_eq!(name(r.poll()), "none");
    std::fs::write(&path, V2).unwrap();
    assert_eq!(name(r.poll()), "two");
    assert_eq!(name(r.poll()), "none");
    assert_eq!(r.reloads(), 1);
}

#[test]
fn bad_new_policy_is_rejected_with_its_reason_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, V1).unwrap();
    let mut r = Reloader::new(&path).unwrap();
    std::fs::write(
        &path,
        "version = 1\n[[allow]]\nfrom = \"ghost\"\nto = \"any\"\nfunctions = \"read\"\n",
    )
    .unwrap();
    let outcome = name(r.poll());
    assert!(
        outcome.starts_with("rejected:") && outcome.contains("ghost"),
        "{outcome}"
    );
    assert_eq!((r.reloads(), r.failures()), (0, 1));
    assert_eq!(
        name(r.poll()),
        "none",
        "a rejected file is not retried until it changes"
    );
}

#[test]
fn sighup_reloads_even_an_unchanged_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, V1).unwrap();
    let mut r = Reloader::new(&path).unwrap();
    signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
    assert_eq!(name(r.poll()), "one");
}
