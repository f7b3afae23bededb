//! The committed CRDs (and the Helm chart's copies) are what `crdgen` writes.

use kafscale_operator::crd::{KafscaleCluster, KafscaleTopic};
use kube::CustomResourceExt;

#[test]
fn committed_crds_match_the_generated_ones() {
    // The runtime value: a test binary reused from a build in another
    // checkout must still read this checkout's files.
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let root = std::path::Path::new(&manifest_dir).join("..");
    for (file, crd) in [
        ("kafscaleclusters.kafscale.io.yaml", KafscaleCluster::crd()),
        ("kafscaletopics.kafscale.io.yaml", KafscaleTopic::crd()),
    ] {
        let generated = serde_yaml::to_string(&crd).unwrap();
        for dir in ["crds", "charts/kafscale/crds"] {
            let path = root.join(dir).join(file);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed.ends_with(&generated),
                "{} is stale: run `cargo run -p kafscale-operator --bin crdgen`",
                path.display()
            );
        }
    }
}
