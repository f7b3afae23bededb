// etcd-client's build script needs protoc. Depending on protoc-bin-vendored here
// puts its binary in the build graph, so cargo unpacks it before any build script
// runs and scripts/protoc (see .cargo/config.toml) can fall back to it.
fn main() {
    let _ = protoc_bin_vendored::protoc_bin_path();
    println!("cargo:rerun-if-changed=build.rs");
}
