//! The registry stand-in as a process, for `cargo xtask e2b-suite`: serves the root file
//! system `--rootfs DIR` as the image `--image REPOSITORY:TAG` (e.g.
//! `library/ubuntu:22.04`) on a loopback port, prints `listening on http://…` and serves
//! until killed.

use std::path::PathBuf;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut rootfs: Option<PathBuf> = None;
    let mut images: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rootfs" => rootfs = args.next().map(PathBuf::from),
            "--image" => images.extend(args.next()),
            other => {
                eprintln!("unknown argument {other:?} (--rootfs DIR --image REPO:TAG...)");
                std::process::exit(2);
            }
        }
    }
    let (Some(rootfs), false) = (rootfs, images.is_empty()) else {
        eprintln!("usage: courier-registry-standin --rootfs DIR --image REPO:TAG [--image ...]");
        std::process::exit(2);
    };
    let image = courier_testkit::registry::OciImage::from_rootfs(
        &rootfs,
        &["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "",
    );
    let served: Vec<(&str, &str, courier_testkit::registry::OciImage)> = images
        .iter()
        .map(|i| {
            let (repo, tag) = i.rsplit_once(':').unwrap_or((i.as_str(), "latest"));
            (repo, tag, image.clone())
        })
        .collect();
    let registry = courier_testkit::registry::Registry::start(served, false).await;
    println!("listening on {}", registry.url());
    std::future::pending::<()>().await;
}
