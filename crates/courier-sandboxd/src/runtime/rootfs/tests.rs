use std::os::fd::AsFd;

use rustix::fs::{Mode, OFlags};

use super::in_root::{Create, open_in_root, write_in_root};
use super::*;

#[test]
fn overlay_options_list_the_top_layer_first() {
    let opts = overlay_options(
        &[PathBuf::from("/l/base"), PathBuf::from("/l/tpl")],
        Path::new("/s/upper"),
        Path::new("/s/work"),
    );
    assert_eq!(
        opts,
        "lowerdir=/l/tpl:/l/base,upperdir=/s/upper,workdir=/s/work"
    );
}

#[test]
fn mount_paths_reject_overlay_separators_and_dot_dot() {
    assert!(check_mount_path("layers", Path::new("/ok/path")).is_ok());
    for bad in ["rel", "/a:b", "/a,b", "/a/../b"] {
        assert!(check_mount_path("layers", Path::new(bad)).is_err(), "{bad}");
    }
}

#[test]
fn structured_and_plain_layers_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    fs::create_dir(&plain).unwrap();
    assert_eq!(resolve_layer(&plain).unwrap().tree, plain);

    let structured = dir.path().join("base");
    fs::create_dir_all(structured.join(LAYER_ROOTFS)).unwrap();
    let manifest = LayerManifest {
        host_dirs: vec![HostDir {
            source: "/usr".into(),
            target: "/usr".into(),
        }],
    };
    fs::write(
        structured.join(LAYER_MANIFEST),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();
    let resolved = resolve_layer(&structured).unwrap();
    assert_eq!(resolved.tree, structured.join(LAYER_ROOTFS));
    assert_eq!(resolved.host_dirs, manifest.host_dirs);

    assert!(resolve_layer(&dir.path().join("missing")).is_err());
}

/// A template whose `/etc` is a symlink to a host directory (written by a RUN step or
/// an npm postinstall script) must not make the runtime write on the host: every path
/// resolves inside the sandbox's tree.
#[test]
fn writes_in_root_never_follow_symlinks_out_of_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host-etc");
    fs::create_dir(&host).unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink(&host, root.join("etc")).unwrap();
    std::os::unix::fs::symlink("/", root.join("up")).unwrap();
    let root_fd = rustix::fs::open(
        &root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();

    write_in_root(root_fd.as_fd(), Path::new("/etc/hosts"), b"x", None).unwrap();
    assert!(!host.join("hosts").exists(), "wrote through the symlink");
    // The absolute symlink resolved inside the tree: <root>/<host-etc path>/hosts.
    let inside = root.join(host.strip_prefix("/").unwrap()).join("hosts");
    assert_eq!(fs::read(&inside).unwrap(), b"x");

    // `..` and absolute links stay in the tree too.
    let fd = open_in_root(
        root_fd.as_fd(),
        Path::new("/up/../../x/y"),
        Create::Dir,
        None,
    )
    .unwrap();
    drop(fd);
    assert!(root.join("x/y").is_dir());
    assert!(!Path::new("/x/y").exists());

    // A symlink at the file's own name is replaced, not followed.
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep").unwrap();
    fs::create_dir_all(root.join("data")).unwrap();
    std::os::unix::fs::symlink(&victim, root.join("data/file")).unwrap();
    write_in_root(root_fd.as_fd(), Path::new("/data/file"), b"new", None).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    assert_eq!(fs::read(root.join("data/file")).unwrap(), b"new");
}

/// The interception CA is added to the sandbox's own bundle: a template's bundle that is
/// a symlink (to a host path, or to the template's file) is replaced, never written
/// through; a FIFO planted there does not hang the helper; adding it twice (a resumed
/// sandbox) leaves one copy.
#[test]
fn the_interception_ca_joins_the_sandboxs_own_bundle_only() {
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n";
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host-bundle.crt");
    fs::write(&host, "HOST ROOTS\n").unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
    let bundle = root.join("etc/ssl/certs/ca-certificates.crt");
    // An absolute link resolves inside the tree: <root>/<host path> holds the template's
    // roots as the sandbox would read them.
    let inside = root.join(host.strip_prefix("/").unwrap());
    fs::create_dir_all(inside.parent().unwrap()).unwrap();
    fs::write(&inside, "TEMPLATE ROOTS").unwrap();
    std::os::unix::fs::symlink(&host, &bundle).unwrap();
    let root_fd = rustix::fs::open(
        &root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();

    super::assemble::trust_ca(root_fd.as_fd(), PEM, None).unwrap();
    assert_eq!(fs::read_to_string(&host).unwrap(), "HOST ROOTS\n");
    assert_eq!(fs::read_to_string(&inside).unwrap(), "TEMPLATE ROOTS");
    assert!(!fs::symlink_metadata(&bundle).unwrap().is_symlink());
    assert_eq!(
        fs::read_to_string(&bundle).unwrap(),
        format!("TEMPLATE ROOTS\n{PEM}")
    );
    super::assemble::trust_ca(root_fd.as_fd(), PEM, None).unwrap();
    assert_eq!(fs::read_to_string(&bundle).unwrap().matches(PEM).count(), 1);

    fs::remove_file(&bundle).unwrap();
    nix::unistd::mkfifo(&bundle, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    super::assemble::trust_ca(root_fd.as_fd(), PEM, None).unwrap();
    assert_eq!(fs::read_to_string(&bundle).unwrap(), PEM);
}
