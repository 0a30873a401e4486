//! Compiles the kubelet protocol definitions in proto/ to Rust without protoc:
//! protox parses them into a descriptor set, tonic-prost-build generates servers and clients.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/deviceplugin_v1beta1.proto",
        "proto/pluginregistration_v1.proto",
        "proto/dra_v1.proto",
        "proto/podresources_v1.proto",
        "proto/health_v1.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
