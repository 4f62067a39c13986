//! Compiles proto/tone.proto with protox (pure Rust): no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/tone.proto");
    let descriptors = protox::compile(["proto/tone.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
